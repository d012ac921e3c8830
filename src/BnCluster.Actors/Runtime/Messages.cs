namespace BnCluster.Actors;

/// <summary>Delivered to a watcher when a watched actor has stopped (also if it was already dead when watched).</summary>
public sealed record Terminated(IActorRef ActorRef);

/// <summary>Published on the EventStream for a message sent to a dead or non-existent actor.</summary>
public sealed record DeadLetter(object Message, IActorRef? Sender, IActorRef Recipient);

/// <summary>Published on the EventStream when an actor had no handler for a message.</summary>
public sealed record UnhandledMessage(object Message, IActorRef? Sender, IActorRef Recipient);

/// <summary>Stops the receiving actor after the messages enqueued before it have been processed.</summary>
public sealed class PoisonPill
{
    public static readonly PoisonPill Instance = new();
    private PoisonPill() { }
}

public static class Status
{
    /// <summary>Reply that makes a pending Ask fail with <see cref="Cause"/>.</summary>
    public sealed record Failure(Exception Cause);

    public sealed record Success(object? Value);
}

public class AskTimeoutException : TimeoutException
{
    public AskTimeoutException(string message) : base(message) { }
}

public class InvalidActorNameException : ArgumentException
{
    public InvalidActorNameException(string message) : base(message) { }
}

/// <summary>An actor's constructor or PreStart threw; the default strategy stops such actors.</summary>
public class ActorInitializationException : Exception
{
    public ActorInitializationException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>Runtime-internal messages processed ahead of user messages.</summary>
internal abstract record SystemMessage;
internal sealed record CreateActor : SystemMessage;
internal sealed record TerminateActor : SystemMessage;
internal sealed record WatchActor(IInternalActorRef Watchee, IInternalActorRef Watcher) : SystemMessage;
internal sealed record UnwatchActor(IInternalActorRef Watchee, IInternalActorRef Watcher) : SystemMessage;
internal sealed record DeathWatchNotification(IActorRef Actor) : SystemMessage;
internal sealed record ChildFailed(ActorCell Child, Exception Cause, object? Message) : SystemMessage;
internal sealed record ChildTerminated(ActorCell Child) : SystemMessage;
internal sealed record RecreateActor(Exception Cause, object? Message) : SystemMessage;
internal sealed record ResumeActor : SystemMessage;
