using System.Threading.Channels;
using BnCluster.Actors;

namespace BnCluster.TestKit;

/// <summary>An actor whose received messages a test inspects (Akka's TestProbe). It is an IActorRef itself.</summary>
public sealed class TestProbe : IInternalActorRef
{
    private readonly TestKitBase _kit;
    private readonly Channel<(object Message, IActorRef Sender)> _received =
        Channel.CreateUnbounded<(object, IActorRef)>(new UnboundedChannelOptions { SingleReader = true });
    private object? _lastMessage;

    internal TestProbe(TestKitBase kit, string name)
    {
        _kit = kit;
        var writer = _received.Writer;
        Ref = kit.Sys.SystemActorOf(Props.Create(() => new ProbeActor(writer)), name);
    }

    public IActorRef Ref { get; }
    public ActorPath Path => Ref.Path;

    /// <summary>Sender of the last message taken by an Expect/Receive method.</summary>
    public IActorRef Sender { get; private set; } = ActorRefs.Nobody;

    public bool HasMessages => _received.Reader.TryPeek(out _);

    ActorSystem? IInternalActorRef.System => ((IInternalActorRef)Ref).System;
    bool IInternalActorRef.IsTerminated => ((IInternalActorRef)Ref).IsTerminated;
    void IInternalActorRef.SendSystemMessage(SystemMessage message) => ((IInternalActorRef)Ref).SendSystemMessage(message);

    public void Tell(object message, IActorRef? sender = null) => Ref.Tell(message, sender);

    /// <summary>Takes the next message; fails if it is not a <typeparamref name="T"/> or does not match, or none arrives in time.</summary>
    public T ExpectMsg<T>(Func<T, bool>? predicate = null, TimeSpan? timeout = null)
    {
        var max = _kit.RemainingOrDefault(timeout);
        if (!TryReceive(max, out var message))
            throw new TestKitAssertionException($"Timeout ({max.TotalMilliseconds:0} ms) while {Path.ToStringWithoutAddress()} waited for a {typeof(T).Name}.");
        if (message is not T typed)
            throw new TestKitAssertionException($"{Path.ToStringWithoutAddress()} expected a {typeof(T).Name} but received {message.GetType().Name}: {message}.");
        if (predicate is not null && !predicate(typed))
            throw new TestKitAssertionException($"{Path.ToStringWithoutAddress()} received {typeof(T).Name} {message} which does not match the predicate.");
        return typed;
    }

    /// <summary>Takes the next message and checks it equals <paramref name="expected"/>.</summary>
    public T ExpectMsg<T>(T expected, TimeSpan? timeout = null) where T : notnull
    {
        var message = ExpectMsg<T>(predicate: null, timeout: timeout);
        if (!EqualityComparer<T>.Default.Equals(message, expected))
            throw new TestKitAssertionException($"{Path.ToStringWithoutAddress()} expected {expected} but received {message}.");
        return message;
    }

    /// <summary>Fails if any message arrives within <paramref name="duration"/>.</summary>
    public void ExpectNoMsg(TimeSpan duration)
    {
        if (TryReceive(_kit.RemainingOrDefault(duration), out var message))
            throw new TestKitAssertionException($"{Path.ToStringWithoutAddress()} expected no message for {duration.TotalMilliseconds:0} ms but received {message.GetType().Name}: {message}.");
    }

    /// <summary>Expects <see cref="Terminated"/> for <paramref name="target"/> (call <see cref="Watch"/> first).</summary>
    public Terminated ExpectTerminated(IActorRef target, TimeSpan? timeout = null)
    {
        var terminated = ExpectMsg<Terminated>(predicate: null, timeout: timeout);
        if (!terminated.ActorRef.Path.Equals(target.Path))
            throw new TestKitAssertionException($"{Path.ToStringWithoutAddress()} expected Terminated of {target.Path} but got Terminated of {terminated.ActorRef.Path}.");
        return terminated;
    }

    /// <summary>Skips messages until one of type <typeparamref name="T"/> matches <paramref name="isTarget"/>.</summary>
    public T FishForMessage<T>(Func<T, bool> isTarget, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(isTarget);
        var max = _kit.RemainingOrDefault(timeout);
        var end = DateTime.UtcNow + max;
        while (true)
        {
            var left = end - DateTime.UtcNow;
            if (left < TimeSpan.Zero) left = TimeSpan.Zero;
            if (!TryReceive(left, out var message))
                throw new TestKitAssertionException($"Timeout ({max.TotalMilliseconds:0} ms) while {Path.ToStringWithoutAddress()} fished for a matching {typeof(T).Name}.");
            if (message is T typed && isTarget(typed)) return typed;
        }
    }

    /// <summary>Takes the next <paramref name="count"/> messages, whatever they are.</summary>
    public IReadOnlyList<object> ReceiveN(int count, TimeSpan? timeout = null)
    {
        var max = _kit.RemainingOrDefault(timeout);
        var end = DateTime.UtcNow + max;
        var messages = new List<object>(count);
        while (messages.Count < count)
        {
            var left = end - DateTime.UtcNow;
            if (left < TimeSpan.Zero) left = TimeSpan.Zero;
            if (!TryReceive(left, out var message))
                throw new TestKitAssertionException($"Timeout ({max.TotalMilliseconds:0} ms) while {Path.ToStringWithoutAddress()} waited for message {messages.Count + 1} of {count}.");
            messages.Add(message);
        }
        return messages;
    }

    /// <summary>Makes the probe watch <paramref name="target"/>; its Terminated arrives as a message.</summary>
    public IActorRef Watch(IActorRef target)
    {
        Ref.Tell(new ProbeActor.WatchCommand(target, Watch: true));
        return target;
    }

    public IActorRef Unwatch(IActorRef target)
    {
        Ref.Tell(new ProbeActor.WatchCommand(target, Watch: false));
        return target;
    }

    /// <summary>Replies to the sender of the last message, with the probe as sender.</summary>
    public void Reply(object message) => Sender.Tell(message, Ref);

    /// <summary>Sends the last message on to <paramref name="target"/>, keeping its original sender.</summary>
    public void Forward(IActorRef target)
    {
        var message = _lastMessage ?? throw new InvalidOperationException($"{Path.ToStringWithoutAddress()} has no message to forward yet.");
        target.Tell(message, Sender);
    }

    private bool TryReceive(TimeSpan timeout, out object message)
    {
        var reader = _received.Reader;
        if (!reader.TryRead(out var item))
        {
            if (timeout <= TimeSpan.Zero) { message = null!; return false; }
            using var cts = new CancellationTokenSource(timeout);
            try
            {
                while (!reader.TryRead(out item))
                    if (!reader.WaitToReadAsync(cts.Token).AsTask().GetAwaiter().GetResult()) { message = null!; return false; }
            }
            catch (OperationCanceledException)
            {
                if (!reader.TryRead(out item)) { message = null!; return false; }
            }
        }
        message = item.Message;
        Sender = item.Sender;
        _lastMessage = item.Message;
        return true;
    }

    public override bool Equals(object? obj) => obj is IActorRef other && other.Path.Equals(Path);
    public override int GetHashCode() => Path.GetHashCode();
    public override string ToString() => $"TestProbe[{Path}]";

    private sealed class ProbeActor : ReceiveActor
    {
        public sealed record WatchCommand(IActorRef Target, bool Watch);

        public ProbeActor(ChannelWriter<(object, IActorRef)> received)
        {
            Receive<WatchCommand>(command =>
            {
                if (command.Watch) Context.Watch(command.Target);
                else Context.Unwatch(command.Target);
            });
            ReceiveAny(message => received.TryWrite((message, Sender)));
        }
    }
}
