namespace BnCluster.Actors.Remote;

/// <summary>A ref to an actor on another node: Tell serializes through the node's outbound connection;
/// Watch is answered with Terminated when that node is removed from the cluster.</summary>
internal sealed class RemoteActorRef : IInternalActorRef
{
    private readonly RemoteTransport _transport;

    internal RemoteActorRef(RemoteTransport transport, ActorPath path)
    {
        _transport = transport;
        Path = path;
        PathString = path.ToString();
    }

    public ActorPath Path { get; }
    internal string PathString { get; }
    public ActorSystem? System => _transport.System;
    public bool IsTerminated => false;

    public void Tell(object message, IActorRef? sender = null)
    {
        ArgumentNullException.ThrowIfNull(message);
        _transport.Send(this, message, sender ?? ActorCell.CurrentSelf);
    }

    public void SendSystemMessage(SystemMessage message)
    {
        switch (message)
        {
            case WatchActor watch: _transport.Watch(this, watch.Watcher); break;
            case UnwatchActor unwatch: _transport.Unwatch(this, unwatch.Watcher); break;
            default:
                _transport.Log.Debug("System message {MessageType} to remote {Path} is not carried over the wire; ignored", message.GetType().Name, PathString);
                break;
        }
    }

    public override bool Equals(object? obj) => obj is IActorRef other && other.Path.Equals(Path);
    public override int GetHashCode() => Path.GetHashCode();
    public override string ToString() => $"RemoteActor[{PathString}]";
}
