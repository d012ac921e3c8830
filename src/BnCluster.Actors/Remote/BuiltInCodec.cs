using BnCluster.Core.Serialization;

namespace BnCluster.Actors.Remote;

/// <summary>Always registered: carries <c>string</c> (type id -1) and <c>byte[]</c> (type id -2)
/// messages, handy for tests, echo and benchmarks. Negative type ids are reserved for the runtime.</summary>
public sealed class BuiltInCodec : IMessageCodec
{
    public const int StringType = -1;
    public const int BytesType = -2;

    public static readonly BuiltInCodec Instance = new();

    public bool Handles(int typeId) => typeId is StringType or BytesType;

    public bool TryWrite(object message, MessagePackWriter writer)
    {
        switch (message)
        {
            case string text:
                writer.WriteArrayHeader(2);
                writer.WriteInt32(StringType);
                writer.WriteString(text);
                return true;
            case byte[] bytes:
                writer.WriteArrayHeader(2);
                writer.WriteInt32(BytesType);
                writer.WriteBinary(bytes);
                return true;
            default:
                return false;
        }
    }

    /// <summary>Arrays and texts over 64 KiB (the remoting benchmark's 1 MiB messages): written by the writer loop.</summary>
    public bool MayBeLarge(object message) => message switch
    {
        byte[] bytes => bytes.Length > 64 * 1024,
        string text => text.Length > 16 * 1024,
        _ => false,
    };

    public object Read(ref MessagePackReader reader)
    {
        var count = reader.ReadArrayHeader();
        if (count != 2) throw new MessagePackException($"Built-in message has {count} elements; expected 2.");
        var type = reader.ReadInt32();
        return type switch
        {
            StringType => reader.ReadString(),
            BytesType => reader.ReadBinary().ToArray(),
            _ => throw new MessagePackException($"Type id {type} is not a built-in message."),
        };
    }
}
