using BnCluster.Actors.Remote;
using BnCluster.Core.Protocol;
using BnCluster.Core.Serialization;

namespace BnCluster.Coordinator;

/// <summary>The training protocol (<see cref="TrainingCodec"/>, type ids 40–55) as a remoting codec.</summary>
public sealed class TrainingMessageCodec : IMessageCodec
{
    public static TrainingMessageCodec Instance { get; } = new();

    public bool TryWrite(object message, MessagePackWriter writer) => TrainingCodec.TryWrite(message, writer);

    public void Sent(object message) => TrainingCodec.Sent(message);

    public bool MayBeLarge(object message) => TrainingCodec.CarriesTensors(message);

    public bool Handles(int typeId) => TrainingCodec.Handles(typeId);

    public object Read(ref MessagePackReader reader) => TrainingCodec.Read(ref reader);
}
