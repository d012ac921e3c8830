using Akka.Actor;
using BnCluster.Coordinator.DataPlane;
using BnCluster.Coordinator.Messages;

namespace BnCluster.Node.Cluster;

/// <summary>
/// How a worker reaches its coordinator: through the data channel once it has one (a worker on another machine, or without
/// shared memory), else as an Akka message. The step's thread and the actor both send; the channel serializes its sends.
/// </summary>
internal sealed class CoordinatorLink(IActorRef coordinator, IActorRef self)
{
    private DataChannel? _channel;

    public IActorRef Coordinator => coordinator;

    /// <summary>The data channel, or null: messages go as Akka messages.</summary>
    public DataChannel? Channel
    {
        get => Volatile.Read(ref _channel);
        set => Volatile.Write(ref _channel, value);
    }

    public void Tell(ITrainingMessage message)
    {
        if (Channel is { } channel)
        {
            if (channel.TrySend(message)) return;
            Interlocked.CompareExchange(ref _channel, null, channel); // broken: this message and the next go through Akka
        }
        coordinator.Tell(message, self);
    }
}
