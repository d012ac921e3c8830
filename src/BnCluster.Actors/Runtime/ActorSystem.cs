using System.Collections.Concurrent;
using BnCluster.Actors.Remote;
using Serilog;

namespace BnCluster.Actors;

public sealed class ActorSystemOptions
{
    /// <summary>Where failures, dead letters and unhandled messages are logged; default Serilog's <see cref="Serilog.Log.Logger"/>.</summary>
    public ILogger? Logger { get; init; }

    /// <summary>Host and port this system listens on and is reachable at (remoting); null Host for a purely
    /// local system. Port 0 (the default) binds an ephemeral port: read it back from <see cref="ActorSystem.Address"/>.</summary>
    public string? Host { get; init; }
    public int? Port { get; init; }

    /// <summary>Codecs for the messages that cross the wire (besides the built-in string/byte[] one).</summary>
    public IReadOnlyList<IMessageCodec> Codecs { get; init; } = [];

    /// <summary>Job id, roles, handshake policy, limits of remoting; defaults when null.</summary>
    public RemoteSettings? Remote { get; init; }

    /// <summary>How long Terminate waits for actors to stop (an actor stuck in a ReceiveAsync
    /// task never does); after that it logs a warning and completes anyway. Default 10 s.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>The root of a hierarchy of actors: <c>/user</c> holds application actors, <c>/system</c> runtime ones.</summary>
public sealed class ActorSystem : IAsyncDisposable, IDisposable
{
    private readonly ActorCell _userGuardian;
    private readonly ActorCell _systemGuardian;
    private readonly ConcurrentDictionary<string, PromiseActorRef> _pendingAsks = new(StringComparer.Ordinal);
    private readonly List<Func<Task>> _shutdownHooks = [];
    private readonly TaskCompletionSource _whenTerminated = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly object _terminateGate = new();
    private Task? _terminating;

    private ActorSystem(string name, ActorSystemOptions options)
    {
        Name = name;
        Log = (options.Logger ?? Serilog.Log.Logger).ForContext("ActorSystem", name);
        if (options.Host is not null)
            Transport = new RemoteTransport(options.Host, options.Port ?? 0, options.Remote ?? new RemoteSettings(), options.Codecs, Log);
        Address = Transport is null ? Address.Local(name) : new Address(name, options.Host, Transport.BoundPort);
        ShutdownTimeout = options.ShutdownTimeout > TimeSpan.Zero
            ? options.ShutdownTimeout
            : throw new ArgumentOutOfRangeException(nameof(options), options.ShutdownTimeout, "ShutdownTimeout must be positive.");
        EventStream = new EventStream();
        var root = ActorPath.Root(Address);
        _userGuardian = new ActorCell(this, null, root.Child("user"), Props.Create(() => new GuardianActor()));
        _systemGuardian = new ActorCell(this, null, root.Child("system"), Props.Create(() => new GuardianActor()));
        _userGuardian.Start();
        _systemGuardian.Start();
        DeadLetters = new DeadLetterActorRef(this, root.Child("deadLetters"));
        if (Transport is not null)
        {
            Transport.Start(this);
            _shutdownHooks.Add(() => Transport.DisposeAsync().AsTask());
        }
    }

    internal RemoteTransport? Transport { get; }

    /// <summary>Runtime extensions (the cluster) keyed by type; see ClusterNode.Get.</summary>
    internal ConcurrentDictionary<Type, object> Extensions { get; } = new();

    /// <summary>Runs after all actors stopped, before <see cref="WhenTerminated"/> completes (closing sockets).</summary>
    internal void AddShutdownHook(Func<Task> hook)
    {
        lock (_shutdownHooks) _shutdownHooks.Add(hook);
    }

    /// <summary>A ref for <paramref name="path"/>: the local actor if the address is this system's, otherwise
    /// a remote ref whose Tell goes over TCP (needs remoting, i.e. <see cref="ActorSystemOptions.Host"/>).
    /// A local path with no live actor gives <see cref="DeadLetters"/>.</summary>
    public IActorRef ResolveRemote(ActorPath path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (path.Address.Equals(Address) || path.Address.HasLocalScope && path.Address.System == Name)
            return ResolveLocal(path) ?? DeadLetters;
        if (Transport is null)
            throw new InvalidOperationException($"Cannot reach {path}: actor system '{Name}' has no remoting (set ActorSystemOptions.Host).");
        if (path.Address.HasLocalScope)
            throw new ArgumentException($"Path {path} has no host:port, and is not of this system.", nameof(path));
        return Transport.ResolveRemoteRef(path);
    }

    /// <summary>Akka-style selection by path text <c>bncluster://system@host:port/user/name</c>; same as <see cref="ResolveRemote"/>.</summary>
    public IActorRef ActorSelection(string path) => ResolveRemote(ActorPath.Parse(path));

    /// <summary>The live local actor at <paramref name="path"/> (user, system or a pending Ask's temp ref), else null.</summary>
    internal IActorRef? ResolveLocal(ActorPath path)
    {
        var elements = path.Elements;
        if (elements.Count == 0) return null;
        if (elements[0] == "temp")
            return elements.Count == 2 && _pendingAsks.TryGetValue(elements[1], out var promise) ? promise : null;
        if (elements[0] == "deadLetters") return DeadLetters;
        var cell = elements[0] switch { "user" => _userGuardian, "system" => _systemGuardian, _ => null };
        for (var i = 1; cell is not null && i < elements.Count; i++) cell = cell.TryGetChild(elements[i]);
        return cell is { IsTerminated: false } ? cell.Self : null;
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
            foreach (var promise in _pendingAsks.Values)
                promise.Fail(new AskTimeoutException($"Ask via {promise.Path} failed: actor system '{Name}' terminated before a reply arrived."));
        }
        finally
        {
            Func<Task>[] hooks;
            lock (_shutdownHooks) hooks = [.. _shutdownHooks];
            foreach (var hook in hooks.Reverse())
            {
                try { await hook().ConfigureAwait(false); }
                catch (Exception e) { Log.Warning(e, "Actor system {System}: a shutdown step failed", Name); }
            }
            _whenTerminated.TrySetResult();
        }
    }

    public async ValueTask DisposeAsync() => await Terminate().ConfigureAwait(false);

    public void Dispose() => Terminate().GetAwaiter().GetResult();

    internal void RegisterPromise(PromiseActorRef promise)
    {
        _pendingAsks[promise.Path.Name] = promise;
        if (_whenTerminated.Task.IsCompleted)
            promise.Fail(new AskTimeoutException($"Ask via {promise.Path} failed: actor system '{Name}' is terminated."));
    }

    internal void UnregisterPromise(PromiseActorRef promise) => _pendingAsks.TryRemove(promise.Path.Name, out _);

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
