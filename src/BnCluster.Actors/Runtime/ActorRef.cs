namespace BnCluster.Actors;

/// <summary>A handle to an actor, local or (later) remote. Akka.NET's IActorRef shape.</summary>
public interface IActorRef
{
    ActorPath Path { get; }

    /// <summary>Fire-and-forget send. <paramref name="sender"/> null means "no sender" (replies go to dead letters).</summary>
    void Tell(object message, IActorRef? sender = null);
}

/// <summary>Refs the runtime can also send system messages to (watch, stop, supervision).
/// A future RemoteActorRef implements this to carry DeathWatch over the wire.</summary>
internal interface IInternalActorRef : IActorRef
{
    ActorSystem? System { get; }
    bool IsTerminated { get; }
    void SendSystemMessage(SystemMessage message);
}

public static class ActorRefs
{
    /// <summary>A ref that silently drops everything; the Sender of messages sent without one.</summary>
    public static readonly IActorRef Nobody = new NobodyActorRef();

    /// <summary>Explicit "no sender" for Tell.</summary>
    public static readonly IActorRef? NoSender = null;

    private sealed class NobodyActorRef : IActorRef
    {
        public ActorPath Path { get; } = ActorPath.Root(Address.Local("nobody")).Child("nobody");
        public void Tell(object message, IActorRef? sender = null) { }
        public override string ToString() => "Nobody";
    }
}

/// <summary>The ref of an actor living in this process: Tell enqueues into its mailbox.</summary>
internal sealed class LocalActorRef : IInternalActorRef
{
    internal LocalActorRef(ActorCell cell) { Cell = cell; }

    internal ActorCell Cell { get; }
    public ActorPath Path => Cell.Path;
    public ActorSystem? System => Cell.System;
    public bool IsTerminated => Cell.IsTerminated;

    public void Tell(object message, IActorRef? sender = null)
    {
        ArgumentNullException.ThrowIfNull(message);
        Cell.Post(new Envelope(message, sender ?? ActorCell.CurrentSelf));
    }

    public void SendSystemMessage(SystemMessage message) => Cell.SendSystem(message);

    public override bool Equals(object? obj) => obj switch
    {
        LocalActorRef other => ReferenceEquals(other.Cell, Cell),
        IActorRef other => other.Path.Equals(Path),
        _ => false,
    };

    public override int GetHashCode() => Path.GetHashCode();
    public override string ToString() => $"Actor[{Path}]";
}

internal readonly record struct Envelope(object Message, IActorRef? Sender);

public static class ActorRefExtensions
{
    /// <summary>Sends <paramref name="message"/> and awaits one reply of type <typeparamref name="T"/>.
    /// A <see cref="Status.Failure"/> reply faults the task with its exception. Throws
    /// <see cref="AskTimeoutException"/> on timeout, when the target is (or becomes) dead, or when the system terminates.</summary>
    public static Task<T> Ask<T>(this IActorRef target, object message, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(message);
        if (timeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "Ask timeout must be positive.");
        var system = (target as IInternalActorRef)?.System;
        var promise = new PromiseActorRef(system, target, message, timeout, cancellationToken);
        if (target is IInternalActorRef { IsTerminated: true })
            promise.Fail(new AskTimeoutException(
                $"Ask to {target.Path} with {message.GetType().Name} failed: the recipient had already been terminated."));
        else if (ReferenceEquals(target, ActorRefs.Nobody))
            promise.Fail(new AskTimeoutException($"Ask to Nobody with {message.GetType().Name} can never be answered."));
        else
            target.Tell(message, promise);
        return promise.ResultAs<T>();
    }

    /// <summary>Akka's Forward: tells with the current message's sender preserved.</summary>
    public static void Forward(this IActorRef target, object message, IActorContext context) =>
        target.Tell(message, context.Sender);
}

/// <summary>Temporary ref that completes an Ask when something is told to it.</summary>
internal sealed class PromiseActorRef : IInternalActorRef
{
    private static long _counter;
    private readonly TaskCompletionSource<object> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly IActorRef _target;
    private readonly Type _messageType;
    private readonly TimeSpan _timeout;
    private readonly CancellationTokenSource _timer;
    private readonly CancellationTokenRegistration _userCancel;

    public PromiseActorRef(ActorSystem? system, IActorRef target, object message, TimeSpan timeout, CancellationToken cancellationToken)
    {
        System = system;
        _target = target;
        _messageType = message.GetType();
        _timeout = timeout;
        Path = ActorPath.Root(system?.Address ?? Address.Local("temp")).Child("temp").Child("$ask" + Interlocked.Increment(ref _counter));
        _timer = new CancellationTokenSource(timeout);
        _timer.Token.Register(static s => ((PromiseActorRef)s!).OnTimeout(), this);
        system?.RegisterPromise(this); // after the timer exists: it may fail (and clean up) at once
        if (cancellationToken.CanBeCanceled)
            _userCancel = cancellationToken.Register(static s =>
            {
                var self = (PromiseActorRef)s!;
                if (self._completion.TrySetCanceled()) self.Cleanup();
            }, this);
    }

    public ActorPath Path { get; }
    public ActorSystem? System { get; }
    public bool IsTerminated => _completion.Task.IsCompleted;

    public void Tell(object message, IActorRef? sender = null)
    {
        var done = message is Status.Failure failure
            ? _completion.TrySetException(failure.Cause)
            : _completion.TrySetResult(message);
        if (done) Cleanup();
    }

    public void SendSystemMessage(SystemMessage message) { }

    public void Fail(Exception error)
    {
        if (_completion.TrySetException(error)) Cleanup();
    }

    private void OnTimeout() => Fail(new AskTimeoutException(
        $"Ask to {_target.Path} with {_messageType.Name} timed out after {_timeout.TotalMilliseconds:0} ms."));

    private void Cleanup()
    {
        _timer.Dispose();
        _userCancel.Dispose();
        System?.UnregisterPromise(this);
    }

    public async Task<T> ResultAs<T>()
    {
        var reply = await _completion.Task.ConfigureAwait(false);
        if (reply is T typed) return typed;
        throw new InvalidCastException(
            $"Ask to {_target.Path} with {_messageType.Name} expected a {typeof(T).Name} reply but received {reply.GetType().Name}.");
    }

    public override string ToString() => $"Promise[{Path}]";
}
