namespace BnCluster.Actors.Cluster;

/// <summary>Hayashibara et al.'s phi accrual failure detector as Akka implements it: a window of
/// heartbeat inter-arrival times gives a mean and standard deviation; phi = -log10(P(a heartbeat
/// arrives later than now)) under a normal distribution, whose CDF is Akka's logistic approximation.
/// The acceptable heartbeat pause is added to the mean, so a pause of that length is tolerated.</summary>
public sealed class PhiAccrualFailureDetector
{
    private readonly Func<long> _clockMillis;
    private readonly long[] _intervals;
    private int _count;
    private int _next;
    private double _sum;
    private double _sumOfSquares;
    private long? _lastHeartbeat;
    private readonly object _gate = new();

    /// <param name="threshold">phi at or above which the node counts as unavailable (Akka default 8).</param>
    /// <param name="maxSampleSize">number of recent intervals kept (default 1000).</param>
    /// <param name="minStdDeviation">floor of the standard deviation (default 100 ms), so a very regular history does not make phi jump.</param>
    /// <param name="acceptableHeartbeatPause">extra pause tolerated before phi rises (default 3 s).</param>
    /// <param name="firstHeartbeatEstimate">assumed interval before any is observed (the heartbeat interval, default 1 s).</param>
    /// <param name="clockMillis">monotonic milliseconds; default <see cref="Environment.TickCount64"/>. Inject a fake in tests.</param>
    public PhiAccrualFailureDetector(
        double threshold = 8.0,
        int maxSampleSize = 1000,
        TimeSpan? minStdDeviation = null,
        TimeSpan? acceptableHeartbeatPause = null,
        TimeSpan? firstHeartbeatEstimate = null,
        Func<long>? clockMillis = null)
    {
        if (!(threshold > 0)) throw new ArgumentOutOfRangeException(nameof(threshold), threshold, "Phi threshold must be > 0.");
        if (maxSampleSize <= 0) throw new ArgumentOutOfRangeException(nameof(maxSampleSize), maxSampleSize, "Sample size must be > 0.");
        MinStdDeviation = minStdDeviation ?? TimeSpan.FromMilliseconds(100);
        AcceptableHeartbeatPause = acceptableHeartbeatPause ?? TimeSpan.FromSeconds(3);
        FirstHeartbeatEstimate = firstHeartbeatEstimate ?? TimeSpan.FromSeconds(1);
        if (MinStdDeviation <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(minStdDeviation), MinStdDeviation, "Minimum standard deviation must be > 0.");
        if (AcceptableHeartbeatPause < TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(acceptableHeartbeatPause), AcceptableHeartbeatPause, "Acceptable heartbeat pause must be >= 0.");
        if (FirstHeartbeatEstimate <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(firstHeartbeatEstimate), FirstHeartbeatEstimate, "First heartbeat estimate must be > 0.");
        Threshold = threshold;
        _intervals = new long[maxSampleSize];
        _clockMillis = clockMillis ?? (() => Environment.TickCount64);
    }

    public double Threshold { get; }
    public TimeSpan MinStdDeviation { get; }
    public TimeSpan AcceptableHeartbeatPause { get; }
    public TimeSpan FirstHeartbeatEstimate { get; }

    /// <summary>True once a heartbeat has been seen.</summary>
    public bool IsMonitoring
    {
        get { lock (_gate) return _lastHeartbeat.HasValue; }
    }

    public bool IsAvailable => Phi < Threshold;

    /// <summary>Suspicion level now; 0 before the first heartbeat.</summary>
    public double Phi
    {
        get
        {
            lock (_gate) return PhiAt(_clockMillis());
        }
    }

    public void HeartBeat()
    {
        lock (_gate)
        {
            var now = _clockMillis();
            if (_lastHeartbeat is not { } last)
            {
                // Seed the history like Akka: two intervals around the estimate, std dev = estimate / 4.
                var mean = FirstHeartbeatEstimate.TotalMilliseconds;
                var deviation = mean / 4;
                Add((long)(mean - deviation));
                Add((long)(mean + deviation));
            }
            else if (PhiAt(now) < Threshold)
            {
                // An interval that already made the node look dead is not a normal interval.
                Add(now - last);
            }
            _lastHeartbeat = now;
        }
    }

    private void Add(long interval)
    {
        if (_count == _intervals.Length)
        {
            var old = _intervals[_next];
            _sum -= old;
            _sumOfSquares -= (double)old * old;
        }
        else
        {
            _count++;
        }
        _intervals[_next] = interval;
        _next = (_next + 1) % _intervals.Length;
        _sum += interval;
        _sumOfSquares += (double)interval * interval;
    }

    private double PhiAt(long now)
    {
        if (_lastHeartbeat is not { } last) return 0.0;
        var sinceLast = now - last;
        var mean = _sum / _count;
        var variance = Math.Max(0.0, _sumOfSquares / _count - mean * mean);
        var deviation = Math.Max(Math.Sqrt(variance), MinStdDeviation.TotalMilliseconds);
        return PhiOf(sinceLast, mean + AcceptableHeartbeatPause.TotalMilliseconds, deviation);
    }

    /// <summary>phi for a gap of <paramref name="timeDiff"/> ms given the interval distribution;
    /// 1/(1+e^(-y(1.5976+0.070566y²))) approximates the standard normal CDF at y.</summary>
    public static double PhiOf(double timeDiff, double mean, double stdDeviation)
    {
        var y = (timeDiff - mean) / stdDeviation;
        var e = Math.Exp(-y * (1.5976 + 0.070566 * y * y));
        return timeDiff > mean
            ? -Math.Log10(e / (1.0 + e))
            : -Math.Log10(1.0 - 1.0 / (1.0 + e));
    }
}
