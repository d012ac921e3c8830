namespace BnCluster.Actors;

public enum Directive
{
    Resume,
    Restart,
    Stop,
    Escalate,
}

/// <summary>How a parent handles a child whose handler threw.</summary>
public abstract class SupervisorStrategy
{
    /// <summary>Initialization failures stop the actor; anything else restarts it, at most 10 times per minute, then stops it.</summary>
    public static readonly SupervisorStrategy DefaultStrategy = new OneForOneStrategy(10, TimeSpan.FromMinutes(1), DefaultDecider);

    public static Directive DefaultDecider(Exception error) =>
        error is ActorInitializationException ? Directive.Stop : Directive.Restart;

    public abstract Directive Decide(Exception error);

    /// <summary>Records one restart of a child; false once the retry budget of the window is spent.</summary>
    internal abstract bool RequestRestartPermission(RestartStatistics statistics, long nowMs);
}

internal sealed class RestartStatistics
{
    public int Count;
    public long WindowStartMs;
}

/// <summary>Applies the decider's directive to the failing child only.</summary>
public sealed class OneForOneStrategy : SupervisorStrategy
{
    private readonly Func<Exception, Directive> _decider;

    /// <param name="maxNrOfRetries">Restarts allowed within <paramref name="withinTimeRange"/>; negative = unlimited.</param>
    public OneForOneStrategy(int maxNrOfRetries, TimeSpan withinTimeRange, Func<Exception, Directive> decider)
    {
        ArgumentNullException.ThrowIfNull(decider);
        MaxNrOfRetries = maxNrOfRetries;
        WithinTimeRange = withinTimeRange;
        _decider = decider;
    }

    public OneForOneStrategy(Func<Exception, Directive> decider) : this(-1, Timeout.InfiniteTimeSpan, decider) { }

    public int MaxNrOfRetries { get; }
    public TimeSpan WithinTimeRange { get; }

    public override Directive Decide(Exception error) => _decider(error);

    internal override bool RequestRestartPermission(RestartStatistics statistics, long nowMs)
    {
        if (MaxNrOfRetries < 0) return true;
        if (MaxNrOfRetries == 0) return false;
        var window = WithinTimeRange == Timeout.InfiniteTimeSpan ? long.MaxValue : (long)WithinTimeRange.TotalMilliseconds;
        if (statistics.Count == 0 || nowMs - statistics.WindowStartMs > window)
        {
            statistics.WindowStartMs = nowMs;
            statistics.Count = 1;
            return true;
        }
        statistics.Count++;
        return statistics.Count <= MaxNrOfRetries;
    }
}
