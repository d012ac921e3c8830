using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace BnCluster.Core.Kernels;

/// <summary>Work split into parts 0..parts-1; part 0 runs on the calling thread.</summary>
internal interface IParallelJob
{
    void Execute(int part);
}

/// <summary>
/// Auto-reset wake-up for one waiter: Set wakes it, its Wait consumes the signal. Spins briefly, then
/// blocks on a preallocated monitor. (ManualResetEventSlim would do, but it allocates its lock
/// object lazily the first time a wait actually blocks, which can be any call, not just the first.)
/// </summary>
internal sealed class WakeSignal
{
    // A training step dispatches its products and its BN / Adam passes back to back, with gaps of tens of
    // microseconds (a pass the caller runs alone, the collective's bookkeeping). Waking a blocked thread costs about
    // as much as a split pass saves, so a worker spins up to SpinMicroseconds for the next part before it blocks.
    // The machine is small and shared, so the spin stays short: it only bridges the gaps inside one step.
    private static readonly long SpinTicks = Stopwatch.Frequency * SpinMicroseconds / 1_000_000;
    internal const int SpinMicroseconds = 50;

    private readonly object _gate = new();
    private int _set;      // 1 when signalled and not yet consumed
    private int _sleeping; // 1 while the waiter is (about to be) blocked on the monitor

    // Dekker-style hand-off: each side writes its own flag, fences, then reads the other's. So either the waiter sees
    // the signal before it blocks, or the setter sees the waiter blocking and pulses it (under the lock the waiter
    // holds until Monitor.Wait releases it). A waiter that is still spinning, the usual case inside a step, costs the
    // setter no lock and no pulse.
    public void Set()
    {
        Volatile.Write(ref _set, 1);
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _sleeping) == 0) return;
        lock (_gate) Monitor.Pulse(_gate);
    }

    /// <summary>The waiter has stopped spinning and blocks (or is about to) on the monitor: a probe for tests.</summary>
    internal bool WaiterBlocked => Volatile.Read(ref _sleeping) == 1;

    public void Wait()
    {
        if (Volatile.Read(ref _set) == 0)
        {
            long start = Stopwatch.GetTimestamp();
            while (Volatile.Read(ref _set) == 0 && Stopwatch.GetTimestamp() - start < SpinTicks) Thread.SpinWait(4);
        }
        if (Volatile.Read(ref _set) == 0)
        {
            lock (_gate)
            {
                Volatile.Write(ref _sleeping, 1);
                Interlocked.MemoryBarrier();
                while (Volatile.Read(ref _set) == 0) Monitor.Wait(_gate);
                Volatile.Write(ref _sleeping, 0);
            }
        }
        Volatile.Write(ref _set, 0); // consumed
    }
}

/// <summary>
/// A fixed set of workers (threads − 1 dedicated threads plus the caller) that run one
/// <see cref="IParallelJob"/> at a time. Dispatch allocates nothing: the job is a preallocated
/// object, each worker waits on its own start signal and the last one to finish sets <c>done</c>.
/// One <see cref="Run"/> at a time (the owning <see cref="MatMul"/> is not thread-safe).
/// </summary>
internal sealed class GemmThreadPool : IDisposable
{
    private readonly Thread[] _workers;
    private readonly WakeSignal[] _start;
    private readonly WakeSignal _done = new();
    private IParallelJob? _job;
    private Exception? _workerFailure;
    private int _remaining;
    private volatile bool _stopping;
    private bool _disposed;

    public GemmThreadPool(int workerCount)
    {
        _workers = new Thread[workerCount];
        _start = new WakeSignal[workerCount];
        for (int i = 0; i < workerCount; i++)
        {
            _start[i] = new WakeSignal();
            int index = i;
            _workers[i] = new Thread(() => WorkerLoop(index))
            {
                IsBackground = true,
                Name = $"MatMul worker {i + 1}",
            };
            _workers[i].Start();
        }
    }

    /// <summary>Parts the pool can run at once (workers + caller).</summary>
    public int MaxParts => _workers.Length + 1;

    /// <summary>Runs parts 0..parts-1 of <paramref name="job"/> and returns when all are done;
    /// rethrows the first failure.</summary>
    public void Run(IParallelJob job, int parts)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (parts < 1 || parts > MaxParts) throw new ArgumentOutOfRangeException(nameof(parts));
        int helpers = parts - 1;
        _job = job;
        _workerFailure = null;
        if (helpers > 0)
        {
            _remaining = helpers;
            for (int i = 0; i < helpers; i++) _start[i].Set();
        }
        Exception? callerFailure = null;
        try { job.Execute(0); }
        catch (Exception e) { callerFailure = e; }
        // Never return (or unpin the operands) while a worker may still touch them.
        if (helpers > 0) _done.Wait();
        _job = null;
        if (callerFailure is not null) ExceptionDispatchInfo.Throw(callerFailure);
        if (_workerFailure is not null) ExceptionDispatchInfo.Throw(_workerFailure);
    }

    private void WorkerLoop(int index)
    {
        WakeSignal start = _start[index];
        while (true)
        {
            start.Wait();
            if (_stopping) return;
            try { _job!.Execute(index + 1); }
            catch (Exception e) { Interlocked.CompareExchange(ref _workerFailure, e, null); }
            if (Interlocked.Decrement(ref _remaining) == 0) _done.Set();
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _stopping = true;
        foreach (WakeSignal s in _start) s.Set();
        foreach (Thread t in _workers) t.Join();
    }
}
