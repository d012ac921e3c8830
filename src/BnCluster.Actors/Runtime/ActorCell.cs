using System.Collections.Concurrent;
using System.Threading.Channels;

namespace BnCluster.Actors;

/// <summary>The runtime side of one actor: mailbox, lifecycle, children, DeathWatch, supervision.
/// One message at a time: a cell is "scheduled" (a thread-pool work item runs its loop) or idle
/// (no thread held); Post/SendSystem schedule it with a compare-and-swap.</summary>
internal sealed class ActorCell : IActorContext
{
    private const int ThroughputPerTurn = 64;
    private static readonly AsyncLocal<ActorCell?> Running = new();
    [ThreadStatic] private static ActorCell? _constructing;
    private static readonly Action<ActorCell> RunCallback = static cell => _ = cell.RunAsync();
    private static long _nameCounter;

    private readonly Channel<Envelope> _mailbox = Channel.CreateUnbounded<Envelope>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = false, AllowSynchronousContinuations = false });
    private readonly ConcurrentQueue<SystemMessage> _systemQueue = new();
    private readonly object _systemGate = new();
    private readonly object _childrenGate = new();
    private readonly Dictionary<string, ActorCell> _children = new(StringComparer.Ordinal);
    private readonly HashSet<ActorCell> _orphans = [];       // stopped during a restart: name freed, termination still awaited
    private readonly HashSet<ActorCell> _stopping = [];
    private readonly Dictionary<ActorCell, RestartStatistics> _restartStats = [];
    private readonly HashSet<IActorRef> _watching = [];
    private readonly HashSet<IInternalActorRef> _watchedBy = [];
    private readonly TaskCompletionSource _terminated = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Props _props;
    private TimerScheduler? _timers;
    private ActorBase? _actor;
    private bool _started;
    private bool _suspended;
    private volatile bool _terminating;
    private volatile bool _dead;
    private int _scheduled;
    private Envelope _current;
    private object? _currentMessage;

    public ActorCell(ActorSystem system, ActorCell? parent, ActorPath path, Props props)
    {
        System = system;
        ParentCell = parent;
        Path = path;
        _props = props;
        Self = new LocalActorRef(this);
    }

    internal static ActorCell? Constructing => _constructing;

    /// <summary>Self of the actor whose handler is running on this logical flow (implicit sender of Tell).</summary>
    internal static IActorRef? CurrentSelf => Running.Value?.Self;

    public ActorSystem System { get; }
    public ActorCell? ParentCell { get; }
    public ActorPath Path { get; }
    public LocalActorRef SelfRef => (LocalActorRef)Self;
    public IActorRef Self { get; }
    public IActorRef Sender => _current.Sender ?? ActorRefs.Nobody;
    public IActorRef Parent => ParentCell?.Self ?? ActorRefs.Nobody;
    public bool IsTerminated => _dead;
    public Task WhenTerminated => _terminated.Task;
    public ITimerScheduler Timers => _timers ??= new TimerScheduler(Self);

    public IReadOnlyCollection<IActorRef> Children
    {
        get
        {
            lock (_childrenGate) return _children.Values.Select(c => c.Self).ToArray();
        }
    }

    internal void Start() => SendSystem(new CreateActor());

    /// <summary>The live child named <paramref name="name"/>, for resolving remote paths.</summary>
    internal ActorCell? TryGetChild(string name)
    {
        lock (_childrenGate) return _children.TryGetValue(name, out var child) ? child : null;
    }

    // ---- sending -------------------------------------------------------------------------

    public void Post(Envelope envelope)
    {
        if (!_mailbox.Writer.TryWrite(envelope))
        {
            System.DeadLetter(envelope, Self);
            return;
        }
        Schedule();
    }

    public void SendSystem(SystemMessage message)
    {
        lock (_systemGate)
        {
            if (!_dead)
            {
                _systemQueue.Enqueue(message);
                goto schedule;
            }
        }
        HandleSystemWhenDead(message);
        return;
    schedule:
        Schedule();
    }

    private void HandleSystemWhenDead(SystemMessage message)
    {
        // Watching a dead actor still yields Terminated, exactly once.
        if (message is WatchActor watch) watch.Watcher.SendSystemMessage(new DeathWatchNotification(Self));
    }

    private void Schedule()
    {
        if (Interlocked.CompareExchange(ref _scheduled, 1, 0) == 0)
            ThreadPool.UnsafeQueueUserWorkItem(RunCallback, this, preferLocal: false);
    }

    // ---- the processing loop ---------------------------------------------------------------

    private bool HasWork() =>
        !_systemQueue.IsEmpty || (!_suspended && !_terminating && _actor is not null && _mailbox.Reader.TryPeek(out _));

    private async Task RunAsync()
    {
        Running.Value = this;
        var budget = ThroughputPerTurn;
        while (true)
        {
            while (_systemQueue.TryDequeue(out var system))
            {
                try
                {
                    ProcessSystem(system);
                }
                catch (Exception ex)
                {
                    System.Log.Error(ex, "Actor {Path} failed processing system message {MessageType}", Path.ToStringWithoutAddress(), system.GetType().Name);
                }
            }
            if (_dead) return; // stays "scheduled" forever: nothing can run here any more

            Envelope envelope = default;
            var canRead = !_suspended && !_terminating && _actor is not null && budget > 0;
            if (!canRead || !_mailbox.Reader.TryRead(out envelope))
            {
                if (budget <= 0 && HasWork())
                {
                    // Fairness: give the thread back, keep our "scheduled" flag.
                    ThreadPool.UnsafeQueueUserWorkItem(RunCallback, this, preferLocal: false);
                    return;
                }
                Volatile.Write(ref _scheduled, 0);
                if (HasWork() && Interlocked.CompareExchange(ref _scheduled, 1, 0) == 0)
                {
                    budget = ThroughputPerTurn;
                    continue;
                }
                return;
            }

            budget--;
            var pending = Invoke(envelope);
            if (pending is not null)
            {
                try
                {
                    await pending.ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    HandleFailure(ex, _currentMessage);
                }
            }
            _current = default;
            _currentMessage = null;
        }
    }

    private Task? Invoke(Envelope envelope)
    {
        _current = envelope;
        var message = envelope.Message;
        _currentMessage = message;
        try
        {
            if (message is TimerMessage timerMessage)
            {
                if (_timers is null || !_timers.Accept(timerMessage)) return null;
                message = timerMessage.Message;
                _currentMessage = message;
            }
            switch (message)
            {
                case PoisonPill:
                    SendSystem(new TerminateActor());
                    return null;
                case Terminated terminated when !_watching.Remove(terminated.ActorRef):
                    return null; // unwatched meanwhile
            }
            var task = _actor!.Dispatch(message);
            if (task is null || task.IsCompletedSuccessfully) return null;
            return task;
        }
        catch (Exception ex)
        {
            HandleFailure(ex, message);
            return null;
        }
    }

    private void HandleFailure(Exception error, object? message)
    {
        System.Log.Error(error, "Actor {Path} failed processing {MessageType}: {Error}",
            Path.ToStringWithoutAddress(), message?.GetType().Name ?? "(initialization)", error.Message);
        if (ParentCell is null) return; // guardians never fail on their own; nothing above them
        _suspended = true;
        ParentCell.SendSystem(new ChildFailed(this, error, message));
    }

    private void ProcessSystem(SystemMessage message)
    {
        switch (message)
        {
            case CreateActor:
                CreateInstance(null);
                break;
            case TerminateActor:
                BeginTerminate();
                break;
            case WatchActor watch:
                _watchedBy.Add(watch.Watcher);
                break;
            case UnwatchActor unwatch:
                _watchedBy.Remove(unwatch.Watcher);
                break;
            case DeathWatchNotification notification:
                if (_watching.Contains(notification.Actor))
                    Post(new Envelope(new Terminated(notification.Actor), notification.Actor));
                break;
            case ChildFailed failed:
                Supervise(failed);
                break;
            case ChildTerminated childTerminated:
                OnChildTerminated(childTerminated.Child);
                break;
            case RecreateActor recreate:
                Restart(recreate.Cause, recreate.Message);
                break;
            case ResumeActor:
                _suspended = false;
                break;
        }
    }

    private void CreateInstance(Exception? restartCause)
    {
        try
        {
            _constructing = this;
            try
            {
                _actor = _props.Factory();
            }
            finally
            {
                _constructing = null;
            }
            if (restartCause is null) _actor.PreStart();
            else _actor.PostRestart(restartCause);
            _started = true;
        }
        catch (Exception ex)
        {
            var what = restartCause is null ? "start" : "restart";
            HandleFailure(new ActorInitializationException(
                $"Actor {Path.ToStringWithoutAddress()} ({_props.ActorType.Name}) failed to {what}: {ex.Message}", ex), null);
        }
    }

    private void Restart(Exception cause, object? message)
    {
        if (_terminating) return;
        if (_actor is not null && _started)
        {
            try
            {
                _actor.PreRestart(cause, message);
            }
            catch (Exception ex)
            {
                System.Log.Error(ex, "Actor {Path} failed in PreRestart", Path.ToStringWithoutAddress());
            }
        }
        _timers?.CancelAll();
        lock (_childrenGate)
        {
            // Children stopped by PreRestart free their names now so the new instance can re-create them.
            foreach (var child in _stopping)
            {
                if (_children.TryGetValue(child.Path.Name, out var registered) && registered == child)
                    _children.Remove(child.Path.Name);
                _orphans.Add(child);
            }
            _stopping.Clear();
        }
        _started = false;
        _actor = null;
        _suspended = false;
        CreateInstance(cause);
    }

    private void Supervise(ChildFailed failed)
    {
        var child = failed.Child;
        lock (_childrenGate)
        {
            if (!_children.TryGetValue(child.Path.Name, out var registered) || registered != child) return;
        }
        var strategy = _actor?.SupervisorStrategy() ?? SupervisorStrategy.DefaultStrategy;
        Directive directive;
        try
        {
            directive = strategy.Decide(failed.Cause);
        }
        catch (Exception ex)
        {
            System.Log.Error(ex, "Supervisor strategy of {Path} threw; stopping child {Child}", Path.ToStringWithoutAddress(), child.Path.ToStringWithoutAddress());
            directive = Directive.Stop;
        }
        if (directive == Directive.Escalate && ParentCell is null) directive = Directive.Stop;
        switch (directive)
        {
            case Directive.Resume:
                child.SendSystem(new ResumeActor());
                break;
            case Directive.Restart:
                if (!_restartStats.TryGetValue(child, out var stats)) _restartStats[child] = stats = new RestartStatistics();
                if (strategy.RequestRestartPermission(stats, Environment.TickCount64))
                {
                    child.SendSystem(new RecreateActor(failed.Cause, failed.Message));
                }
                else
                {
                    System.Log.Warning("Actor {Path} exceeded its restart budget ({Count} restarts); stopping it",
                        child.Path.ToStringWithoutAddress(), stats.Count - 1);
                    StopChild(child);
                }
                break;
            case Directive.Stop:
                StopChild(child);
                break;
            case Directive.Escalate:
                HandleFailure(failed.Cause, failed.Message);
                break;
        }
    }

    private void StopChild(ActorCell child)
    {
        lock (_childrenGate) _stopping.Add(child);
        child.SendSystem(new TerminateActor());
    }

    private void OnChildTerminated(ActorCell child)
    {
        lock (_childrenGate)
        {
            if (_children.TryGetValue(child.Path.Name, out var registered) && registered == child)
                _children.Remove(child.Path.Name);
            _orphans.Remove(child);
            _stopping.Remove(child);
        }
        _restartStats.Remove(child);
        if (_terminating && ChildCount() == 0) FinishTerminate();
    }

    private int ChildCount()
    {
        lock (_childrenGate) return _children.Count + _orphans.Count;
    }

    private void BeginTerminate()
    {
        if (_terminating || _dead) return;
        _terminating = true;
        _timers?.CancelAll();
        ActorCell[] children;
        lock (_childrenGate) children = [.. _children.Values, .. _orphans];
        if (children.Length == 0)
        {
            FinishTerminate();
            return;
        }
        foreach (var child in children) child.SendSystem(new TerminateActor());
    }

    private void FinishTerminate()
    {
        if (_actor is not null && _started)
        {
            try
            {
                _actor.PostStop();
            }
            catch (Exception ex)
            {
                System.Log.Error(ex, "Actor {Path} failed in PostStop", Path.ToStringWithoutAddress());
            }
        }
        _started = false;
        _timers?.CancelAll();
        lock (_systemGate) _dead = true;
        _mailbox.Writer.TryComplete();
        while (_mailbox.Reader.TryRead(out var envelope)) System.DeadLetter(envelope, Self);
        while (_systemQueue.TryDequeue(out var system)) HandleSystemWhenDead(system);
        foreach (var watcher in _watchedBy) watcher.SendSystemMessage(new DeathWatchNotification(Self));
        _watchedBy.Clear();
        System.EventStream.Unsubscribe(Self);
        ParentCell?.SendSystem(new ChildTerminated(this));
        _terminated.TrySetResult();
    }

    // ---- IActorContext -----------------------------------------------------------------------

    public IActorRef ActorOf(Props props, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(props);
        if (name is null)
        {
            name = "$" + Interlocked.Increment(ref _nameCounter).ToString(global::System.Globalization.CultureInfo.InvariantCulture);
        }
        else
        {
            var problem = ActorNames.Problem(name, allowSystemPrefix: false);
            if (problem is not null)
                throw new InvalidActorNameException($"Invalid actor name '{ActorNames.Describe(name)}' under {Path.ToStringWithoutAddress()}: {problem}.");
        }
        ActorCell child;
        lock (_childrenGate)
        {
            if (_terminating || _dead)
                throw new InvalidOperationException($"Cannot create child '{name}': actor {Path.ToStringWithoutAddress()} is stopping.");
            if (_children.ContainsKey(name))
                throw new InvalidActorNameException($"Actor name '{name}' is not unique under {Path.ToStringWithoutAddress()}.");
            child = new ActorCell(System, this, Path.Child(name), props);
            _children[name] = child;
        }
        child.Start();
        return child.Self;
    }

    public void Stop(IActorRef actor)
    {
        ArgumentNullException.ThrowIfNull(actor);
        if (actor is LocalActorRef local && local.Cell.ParentCell == this)
        {
            StopChild(local.Cell);
            return;
        }
        if (Unwrap(actor) is { } target) target.SendSystemMessage(new TerminateActor());
    }

    public IActorRef Watch(IActorRef actor)
    {
        var target = Unwrap(actor) ?? throw new ArgumentException($"Cannot watch {actor}: it is not an actor of a runtime.", nameof(actor));
        if (target.Equals(Self)) return actor;
        if (_watching.Add(target)) target.SendSystemMessage(new WatchActor(target, SelfRef));
        return actor;
    }

    public IActorRef Unwatch(IActorRef actor)
    {
        var target = Unwrap(actor);
        if (target is not null && _watching.Remove(target)) target.SendSystemMessage(new UnwatchActor(target, SelfRef));
        return actor;
    }

    private static IInternalActorRef? Unwrap(IActorRef actor) => actor as IInternalActorRef;

    internal void PublishUnhandled(object message)
    {
        System.Log.Debug("Unhandled message {MessageType} in {Path}", message.GetType().Name, Path.ToStringWithoutAddress());
        System.EventStream.Publish(new UnhandledMessage(message, _current.Sender, Self));
    }

    public override string ToString() => $"ActorCell[{Path}]";
}
