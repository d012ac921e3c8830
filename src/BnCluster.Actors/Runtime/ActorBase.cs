namespace BnCluster.Actors;

/// <summary>What an actor sees of the runtime while it runs (Akka's IActorContext).</summary>
public interface IActorContext
{
    IActorRef Self { get; }
    /// <summary>Sender of the message being processed, <see cref="ActorRefs.Nobody"/> if none.</summary>
    IActorRef Sender { get; }
    IActorRef Parent { get; }
    ActorSystem System { get; }
    IReadOnlyCollection<IActorRef> Children { get; }
    IActorRef ActorOf(Props props, string? name = null);
    /// <summary>Stops a child or Self: children first, then PostStop, then watchers get <see cref="Terminated"/>.</summary>
    void Stop(IActorRef actor);
    IActorRef Watch(IActorRef actor);
    IActorRef Unwatch(IActorRef actor);
    ITimerScheduler Timers { get; }
}

/// <summary>Base of every actor. Lifecycle hooks follow Akka.NET.</summary>
public abstract class ActorBase
{
    private readonly ActorCell _cell;

    protected ActorBase()
    {
        _cell = ActorCell.Constructing ?? throw new InvalidOperationException(
            $"{GetType().Name} must be created by the runtime (ActorOf with Props), not with 'new' directly.");
    }

    protected IActorContext Context => _cell;
    protected IActorRef Self => _cell.Self;
    protected IActorRef Sender => _cell.Sender;
    protected ITimerScheduler Timers => _cell.Timers;

    protected internal virtual void PreStart() { }
    protected internal virtual void PostStop() { }

    /// <summary>Called on the failed instance. Default: stop all children, then PostStop.</summary>
    protected internal virtual void PreRestart(Exception reason, object? message)
    {
        foreach (var child in Context.Children) Context.Stop(child);
        PostStop();
    }

    /// <summary>Called on the fresh instance. Default: PreStart.</summary>
    protected internal virtual void PostRestart(Exception reason) => PreStart();

    /// <summary>The strategy this actor applies to its failing children.</summary>
    protected internal virtual SupervisorStrategy SupervisorStrategy() => Actors.SupervisorStrategy.DefaultStrategy;

    /// <summary>Default: publish <see cref="UnhandledMessage"/> on the EventStream.</summary>
    protected virtual void Unhandled(object message) => _cell.PublishUnhandled(message);

    /// <summary>Processes one message; a non-null, incomplete task blocks the mailbox until it completes.</summary>
    internal abstract Task? Dispatch(object message);

    internal void CallUnhandled(object message) => Unhandled(message);
}

/// <summary>An actor defined by typed handlers registered in its constructor (Akka's ReceiveActor).</summary>
public abstract class ReceiveActor : ActorBase
{
    private List<Handler> _handlers = [];

    private sealed record Handler(Type Type, Func<object, bool>? Predicate, Func<object, Task?> Run);

    protected void Receive<T>(Action<T> handler) => Receive(null, handler);

    protected void Receive<T>(Func<T, bool>? predicate, Action<T> handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        _handlers.Add(new Handler(typeof(T), predicate is null ? null : m => predicate((T)m), m =>
        {
            handler((T)m);
            return null;
        }));
    }

    /// <summary>The actor processes nothing else until the returned task completes.</summary>
    protected void ReceiveAsync<T>(Func<T, Task> handler, Func<T, bool>? predicate = null)
    {
        ArgumentNullException.ThrowIfNull(handler);
        _handlers.Add(new Handler(typeof(T), predicate is null ? null : m => predicate((T)m), m => handler((T)m)));
    }

    protected void ReceiveAny(Action<object> handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        _handlers.Add(new Handler(typeof(object), null, m =>
        {
            handler(m);
            return null;
        }));
    }

    /// <summary>Replaces all handlers with those registered by <paramref name="configure"/>.</summary>
    protected void Become(Action configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        var previous = _handlers;
        _handlers = [];
        try
        {
            configure();
        }
        catch
        {
            _handlers = previous;
            throw;
        }
    }

    internal sealed override Task? Dispatch(object message)
    {
        foreach (var handler in _handlers)
        {
            if (!handler.Type.IsInstanceOfType(message)) continue;
            if (handler.Predicate is not null && !handler.Predicate(message)) continue;
            return handler.Run(message);
        }
        CallUnhandled(message);
        return null;
    }
}

/// <summary>Akka's UntypedActor: one OnReceive for every message.</summary>
public abstract class UntypedActor : ActorBase
{
    protected abstract void OnReceive(object message);

    internal sealed override Task? Dispatch(object message)
    {
        OnReceive(message);
        return null;
    }
}
