using System.Collections.Concurrent;
using Serilog;

namespace BnCluster.Actors;

public sealed class ActorSystemOptions
{
    /// <summary>Where failures, dead letters and unhandled messages are logged; default Serilog's <see cref="Serilog.Log.Logger"/>.</summary>
    public ILogger? Logger { get; init; }

    /// <summary>Host and port this system is reachable at (remoting); null for a purely local system.</summary>
    public string? Host { get; init; }
    public int? Port { get; init; }

    /// <summary>How long Terminate waits for actors to stop (an actor stuck in a ReceiveAsync
    /// task never does); after that it logs a warning and completes anyway. Default 10 s.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>The root of a hierarchy of actors: <c>/user</c> holds application actors, <c>/system</c> runtime ones.</summary>
public sealed class ActorSystem : IAsyncDisposable, IDisposable
{
    private readonly ActorCell _userGuardian;
    private readonly ActorCell _systemGuardian;
    private readonly ConcurrentDictionary<PromiseActorRef, byte> _pendingAsks = new();
    private readonly TaskCompletionSource _whenTerminated = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly object _terminateGate = new();
    private Task? _terminating;

    private ActorSystem(string name, ActorSystemOptions options)
    {
        Name = name;
        Address = options.Host is null ? Address.Local(name) : new Address(name, options.Host, options.Port ?? 0);
        ShutdownTimeout = options.ShutdownTimeout > TimeSpan.Zero
            ? options.ShutdownTimeout
            : throw new ArgumentOutOfRangeException(nameof(options), options.ShutdownTimeout, "ShutdownTimeout must be positive.");
        Log = (options.Logger ?? Serilog.Log.Logger).ForContext("ActorSystem", name);
        EventStream = new EventStream();
        var root = ActorPath.Root(Address);
        _userGuardian = new ActorCell(this, null, root.Child("user"), Props.Create(() => new GuardianActor()));
        _systemGuardian = new ActorCell(this, null, root.Child("system"), Props.Create(() => new GuardianActor()));
        _userGuardian.Start();
        _systemGuardian.Start();
        DeadLetters = new DeadLetterActorRef(this, root.Child("deadLetters"));
    }

    public static ActorSystem Create(string name, ActorSystemOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(name);
        Address.ValidateSystemName(name, name);
        return new ActorSystem(name, options ?? new ActorSystemOptions());
    }

    public string Name { get; }
    public TimeSpan ShutdownTimeout { get; }
    public Address Address { get; }
    public ILogger Log { get; }
    public EventStream EventStream { get; }

    /// <summary>Telling this publishes a <see cref="DeadLetter"/>.</summary>
    public IActorRef DeadLetters { get; }

    /// <summary>Completes once every actor has stopped and pending Asks have failed.</summary>
    public Task WhenTerminated => _whenTerminated.Task;

    public IActorRef ActorOf(Props props, string? name = null) => _userGuardian.ActorOf(props, name);

    /// <summary>Creates a runtime actor under <c>/system</c> (test probes, remoting endpoints).</summary>
    public IActorRef SystemActorOf(Props props, string? name = null) => _systemGuardian.ActorOf(props, name);

    /// <summary>Stops any actor asynchronously (children first).</summary>
    public void Stop(IActorRef actor)
    {
        ArgumentNullException.ThrowIfNull(actor);
        if (actor is LocalActorRef { Cell.ParentCell: { } parent } local && (parent == _userGuardian || parent == _systemGuardian))
            parent.Stop(local);
        else if (actor is IInternalActorRef target)
            target.SendSystemMessage(new TerminateActor());
    }

    /// <summary>Stops all user actors (children before parents), then system actors, then fails pending Asks.</summary>
    public Task Terminate()
    {
        lock (_terminateGate) return _terminating ??= TerminateAsync();
    }

    private async Task TerminateAsync()
    {
        try
        {
            var deadline = Task.Delay(ShutdownTimeout);
            foreach (var guardian in new[] { _userGuardian, _systemGuardian })
            {
                guardian.SendSystem(new TerminateActor());
                if (await Task.WhenAny(guardian.WhenTerminated, deadline).ConfigureAwait(false) == deadline)
                {
                    Log.Warning("Actor system {System}: actors under {Path} did not stop within {Timeout} ms (a handler task that never completes?); terminating anyway",
                        Name, guardian.Path.ToStringWithoutAddress(), (long)ShutdownTimeout.TotalMilliseconds);
                    break;
                }
            }
            foreach (var promise in _pendingAsks.Keys)
                promise.Fail(new AskTimeoutException($"Ask via {promise.Path} failed: actor system '{Name}' terminated before a reply arrived."));
        }
        finally
        {
            _whenTerminated.TrySetResult();
        }
    }

    public async ValueTask DisposeAsync() => await Terminate().ConfigureAwait(false);

    public void Dispose() => Terminate().GetAwaiter().GetResult();

    internal void RegisterPromise(PromiseActorRef promise)
    {
        _pendingAsks[promise] = 0;
        if (_whenTerminated.Task.IsCompleted)
            promise.Fail(new AskTimeoutException($"Ask via {promise.Path} failed: actor system '{Name}' is terminated."));
    }

    internal void UnregisterPromise(PromiseActorRef promise) => _pendingAsks.TryRemove(promise, out _);

    internal void DeadLetter(Envelope envelope, IActorRef recipient)
    {
        var message = envelope.Message;
        if (message is TimerMessage or Terminated) return; // runtime noise, not a lost user message
        if (envelope.Sender is PromiseActorRef promise)
            promise.Fail(new AskTimeoutException(
                $"Ask to {recipient.Path} with {message.GetType().Name} failed: the recipient had already been terminated."));
        if (message is DeadLetter) return;
        Log.Debug("Dead letter {MessageType} from {Sender} to {Recipient}", message.GetType().Name, envelope.Sender?.Path.ToString() ?? "nobody", recipient.Path.ToString());
        EventStream.Publish(new DeadLetter(message, envelope.Sender, recipient));
    }

    public override string ToString() => $"ActorSystem[{Name}]";

    private sealed class GuardianActor : ReceiveActor
    {
    }

    private sealed class DeadLetterActorRef(ActorSystem system, ActorPath path) : IActorRef
    {
        public ActorPath Path { get; } = path;

        public void Tell(object message, IActorRef? sender = null) =>
            system.DeadLetter(new Envelope(message, sender), this);
    }
}
