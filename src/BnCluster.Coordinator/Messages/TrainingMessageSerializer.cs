using System.Collections.Frozen;
using System.Runtime.Serialization;
using Akka.Actor;
using Akka.Serialization;
using BnCluster.Collectives;
using MessagePack;
using MessagePack.Resolvers;

namespace BnCluster.Coordinator.Messages;

/// <summary>
/// The Akka serializer of the training protocol (bound to <see cref="ITrainingMessage"/> in cluster.hocon): MessagePack-CSharp
/// with the messages' [Key]s, arrays of numbers as bins (<see cref="NumberBinFormatter{T}"/>), the manifest the message's
/// type name. Input from a peer is untrusted: MessagePack's UntrustedData limits apply, and a frame that does not decode
/// is refused with MessagePack's exception (Akka.Remote logs it and drops the frame; the connection and the node stay up).
/// </summary>
public sealed class TrainingMessageSerializer(ExtendedActorSystem system) : SerializerWithStringManifest(system)
{
    /// <summary>Akka's serializer id of this protocol (ids below 100 are Akka's own).</summary>
    public const int Id = 4140;

    public static readonly MessagePackSerializerOptions Options = MessagePackSerializerOptions.Standard
        .WithResolver(CompositeResolver.Create(
            [Float32BinFormatter.Instance, Float64BinFormatter.Instance, Int32BinFormatter.Instance, TensorSetFormatter.Instance],
            [StandardResolver.Instance]))
        .WithSecurity(MessagePackSecurity.UntrustedData);

    private static readonly FrozenDictionary<string, Type> TypesByManifest = typeof(ITrainingMessage).Assembly.GetTypes()
        .Where(t => t.IsClass && !t.IsAbstract && typeof(ITrainingMessage).IsAssignableFrom(t))
        .ToFrozenDictionary(t => t.Name, StringComparer.Ordinal);

    public override int Identifier => Id;

    public override string Manifest(object o) => o.GetType().Name;

    public override byte[] ToBinary(object obj)
    {
        byte[] bytes = Serialize(obj);
        ReleaseSent(obj);
        return bytes;
    }

    public override object FromBinary(byte[] bytes, string manifest) =>
        Deserialize(bytes, TypesByManifest.TryGetValue(manifest, out var type)
            ? type : throw new SerializationException($"unknown training message type '{manifest}'"));

    /// <summary>The message's MessagePack bytes (what travels between nodes).</summary>
    public static byte[] Serialize(object message) => MessagePackSerializer.Serialize(message.GetType(), message, Options);

    public static object Deserialize(ReadOnlyMemory<byte> bytes, Type type) =>
        MessagePackSerializer.Deserialize(type, bytes, Options) ?? throw new SerializationException($"a nil {type.Name}");

    /// <summary>
    /// Once a message is encoded for sending, the pooled arrays it carried go back to <see cref="TensorPool"/> (the sender
    /// never touches a sent message again; the receiver gets arrays of its own).
    /// </summary>
    public static void ReleaseSent(object message)
    {
        switch (message)
        {
            case StartStep { Parameters: { } p }: TensorPool.Release(p); break;
            case Evaluate { Parameters: { } p }: TensorPool.Release(p); break;
            case StepGradients m: TensorPool.Release(m.Tensors); break;
            // A worker's partial statistics; the global replies are the coordinator's reused buffers, never returned.
            case BnStats m: TensorPool.Return(m.Mean); TensorPool.Return(m.M2); break;
            case BnGradStats m: TensorPool.Return(m.SumDy); TensorPool.Return(m.SumDyXhat); break;
        }
    }
}
