using System.Diagnostics;
using BnCluster.Actors;

namespace BnCluster.TestKit;

/// <summary>Thrown when an expectation of the TestKit fails (no test-framework dependency).</summary>
public sealed class TestKitAssertionException : Exception
{
    public TestKitAssertionException(string message) : base(message) { }
}

/// <summary>Akka.TestKit's shape: owns an <see cref="ActorSystem"/>, hands out probes, and offers
/// time-boxed expectations. Waiting is always on a channel or event with a timeout.</summary>
public abstract class TestKitBase : IDisposable
{
    private readonly Lazy<TestProbe> _testActor;
    private long _deadlineTimestamp; // Stopwatch timestamp of the innermost Within's end, 0 if none
    private int _probeCounter;
    private bool _disposed;

    static TestKitBase()
    {
        // Test methods block a pool thread while they wait for actors that also need pool threads;
        // a few spare threads up front avoid the pool's slow thread injection on a 2-core machine.
        ThreadPool.GetMinThreads(out var worker, out var io);
        if (worker < 16) ThreadPool.SetMinThreads(16, io);
    }

    protected TestKitBase(string? systemName = null, ActorSystemOptions? options = null)
    {
        Sys = ActorSystem.Create(systemName ?? "test", options);
        _testActor = new Lazy<TestProbe>(() => CreateTestProbe("testActor"));
    }

    public ActorSystem Sys { get; }

    /// <summary>Timeout of ExpectMsg and friends when none is given.</summary>
    public TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>A default probe, like Akka's TestActor.</summary>
    public TestProbe TestActor => _testActor.Value;

    public TestProbe CreateTestProbe(string? name = null)
    {
        var id = Interlocked.Increment(ref _probeCounter);
        return new TestProbe(this, name ?? $"testProbe-{id}");
    }

    public T ExpectMsg<T>(Func<T, bool>? predicate = null, TimeSpan? timeout = null) => TestActor.ExpectMsg(predicate, timeout);
    public void ExpectNoMsg(TimeSpan duration) => TestActor.ExpectNoMsg(duration);

    /// <summary>Runs <paramref name="action"/> and fails if it takes longer than <paramref name="max"/>;
    /// expectations inside wait at most until the end of the block.</summary>
    public void Within(TimeSpan max, Action action)
    {
        ArgumentNullException.ThrowIfNull(action);
        var started = Stopwatch.GetTimestamp();
        var previous = _deadlineTimestamp;
        _deadlineTimestamp = Tighter(previous, started + Ticks(max));
        try
        {
            action();
        }
        finally
        {
            _deadlineTimestamp = previous;
        }
        CheckWithin(started, max);
    }

    public async Task Within(TimeSpan max, Func<Task> action)
    {
        ArgumentNullException.ThrowIfNull(action);
        var started = Stopwatch.GetTimestamp();
        var previous = _deadlineTimestamp;
        _deadlineTimestamp = Tighter(previous, started + Ticks(max));
        try
        {
            await action().ConfigureAwait(false);
        }
        finally
        {
            _deadlineTimestamp = previous;
        }
        CheckWithin(started, max);
    }

    /// <summary>Re-evaluates <paramref name="condition"/> until true, failing after the timeout.</summary>
    public void AwaitCondition(Func<bool> condition, TimeSpan? timeout = null, string? message = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var max = RemainingOrDefault(timeout);
        if (!SpinWait.SpinUntil(condition, max))
            throw new TestKitAssertionException($"Condition not met within {max.TotalMilliseconds:0} ms{(message is null ? "" : ": " + message)}.");
    }

    /// <summary>The given timeout (or the default), cut down to what is left of an enclosing Within.</summary>
    public TimeSpan RemainingOrDefault(TimeSpan? timeout)
    {
        var wanted = timeout ?? DefaultTimeout;
        var deadline = _deadlineTimestamp;
        if (deadline == 0) return wanted;
        var left = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), deadline);
        if (left < TimeSpan.Zero) left = TimeSpan.Zero;
        return left < wanted ? left : wanted;
    }

    private static long Ticks(TimeSpan span) => (long)(span.TotalSeconds * Stopwatch.Frequency);

    private static long Tighter(long previous, long candidate) => previous == 0 || candidate < previous ? candidate : previous;

    private static void CheckWithin(long started, TimeSpan max)
    {
        var took = Stopwatch.GetElapsedTime(started);
        if (took > max)
            throw new TestKitAssertionException($"Block took {took.TotalMilliseconds:0} ms, more than the allowed {max.TotalMilliseconds:0} ms.");
    }

    protected virtual void Dispose(bool disposing)
    {
        if (_disposed) return;
        _disposed = true;
        if (disposing && !Sys.Terminate().Wait(TimeSpan.FromSeconds(10)))
            throw new TestKitAssertionException($"Actor system '{Sys.Name}' did not terminate within 10 s.");
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }
}

/// <summary>A concrete TestKit to own or derive test classes from.</summary>
public class ActorTestKit : TestKitBase
{
    public ActorTestKit(string? systemName = null, ActorSystemOptions? options = null) : base(systemName, options) { }
}
