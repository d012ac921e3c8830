namespace BnCluster.Actors;

/// <summary>System-wide publish/subscribe by message type (Akka's EventStream).</summary>
public sealed class EventStream
{
    private readonly object _gate = new();
    private (IActorRef Subscriber, Type Channel)[] _subscriptions = [];

    /// <summary>Subscribes to every published event assignable to <paramref name="channel"/>. False if already subscribed.</summary>
    public bool Subscribe(IActorRef subscriber, Type channel)
    {
        ArgumentNullException.ThrowIfNull(subscriber);
        ArgumentNullException.ThrowIfNull(channel);
        lock (_gate)
        {
            if (Array.Exists(_subscriptions, s => s.Subscriber.Equals(subscriber) && s.Channel == channel)) return false;
            _subscriptions = [.. _subscriptions, (subscriber, channel)];
            return true;
        }
    }

    public bool Unsubscribe(IActorRef subscriber, Type channel)
    {
        lock (_gate)
        {
            var before = _subscriptions.Length;
            _subscriptions = Array.FindAll(_subscriptions, s => !(s.Subscriber.Equals(subscriber) && s.Channel == channel));
            return _subscriptions.Length != before;
        }
    }

    public void Unsubscribe(IActorRef subscriber)
    {
        lock (_gate) _subscriptions = Array.FindAll(_subscriptions, s => !s.Subscriber.Equals(subscriber));
    }

    public void Publish(object @event)
    {
        ArgumentNullException.ThrowIfNull(@event);
        var snapshot = Volatile.Read(ref _subscriptions);
        foreach (var (subscriber, channel) in snapshot)
        {
            if (!channel.IsInstanceOfType(@event)) continue;
            // A dead subscriber must not turn a DeadLetter into another DeadLetter forever.
            if (@event is DeadLetter && subscriber is IInternalActorRef { IsTerminated: true }) continue;
            subscriber.Tell(@event, null);
        }
    }
}
