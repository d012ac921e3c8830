namespace BnCluster.Actors;

/// <summary>Per-actor keyed timers (Akka's ITimerScheduler). Starting a key again replaces its timer;
/// all timers are cancelled when the actor stops or restarts, and a message from a cancelled
/// timer that is already in the mailbox is dropped.</summary>
public interface ITimerScheduler
{
    void StartSingleTimer(object key, object message, TimeSpan delay);
    void StartPeriodicTimer(object key, object message, TimeSpan interval);
    void StartPeriodicTimer(object key, object message, TimeSpan initialDelay, TimeSpan interval);
    bool IsTimerActive(object key);
    void Cancel(object key);
    void CancelAll();
}

internal sealed record TimerMessage(object Key, long Generation, object Message, bool Periodic);

internal sealed class TimerScheduler : ITimerScheduler
{
    private readonly IActorRef _self;
    private readonly Dictionary<object, (Timer Timer, long Generation)> _timers = [];
    private readonly object _gate = new();
    private long _generation;

    public TimerScheduler(IActorRef self) { _self = self; }

    public void StartSingleTimer(object key, object message, TimeSpan delay) =>
        Start(key, message, delay, Timeout.InfiniteTimeSpan, periodic: false);

    public void StartPeriodicTimer(object key, object message, TimeSpan interval) =>
        Start(key, message, interval, interval, periodic: true);

    public void StartPeriodicTimer(object key, object message, TimeSpan initialDelay, TimeSpan interval) =>
        Start(key, message, initialDelay, interval, periodic: true);

    private void Start(object key, object message, TimeSpan delay, TimeSpan interval, bool periodic)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(message);
        if (delay < TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(delay), delay, "Timer delay must not be negative.");
        if (periodic && interval <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(interval), interval, "Timer interval must be positive.");
        lock (_gate)
        {
            CancelLocked(key);
            var generation = ++_generation;
            var envelope = new TimerMessage(key, generation, message, periodic);
            var timer = new Timer(static s =>
            {
                var (self, msg) = ((IActorRef, TimerMessage))s!;
                self.Tell(msg, self);
            }, (_self, envelope), Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            _timers[key] = (timer, generation);
            timer.Change(delay, interval);
        }
    }

    public bool IsTimerActive(object key)
    {
        lock (_gate) return _timers.ContainsKey(key);
    }

    public void Cancel(object key)
    {
        lock (_gate) CancelLocked(key);
    }

    public void CancelAll()
    {
        lock (_gate)
        {
            foreach (var (timer, _) in _timers.Values) timer.Dispose();
            _timers.Clear();
        }
    }

    private void CancelLocked(object key)
    {
        if (_timers.Remove(key, out var entry)) entry.Timer.Dispose();
    }

    /// <summary>Returns the payload if the timer message is still current (single timers are then forgotten).</summary>
    internal bool Accept(TimerMessage message)
    {
        lock (_gate)
        {
            if (!_timers.TryGetValue(message.Key, out var entry) || entry.Generation != message.Generation) return false;
            if (!message.Periodic)
            {
                entry.Timer.Dispose();
                _timers.Remove(message.Key);
            }
            return true;
        }
    }
}
