using System.Runtime.ExceptionServices;

namespace BnCluster.Core.Kernels;

/// <summary>Work split into parts 0..parts-1; part 0 runs on the calling thread.</summary>
internal interface IParallelJob
{
    void Execute(int part);
}

/// <summary>
/// A fixed set of workers (threads − 1 dedicated threads plus the caller) that run one
/// <see cref="IParallelJob"/> at a time. Dispatch allocates nothing: the job is a preallocated
/// object, each worker waits on its own start event and the last one to finish sets <c>done</c>.
/// One <see cref="Run"/> at a time (the owning <see cref="MatMul"/> is not thread-safe).
/// </summary>
internal sealed class GemmThreadPool : IDisposable
{
    // Spin briefly before blocking: products arrive back to back in a training step, but the
    // machine is small and shared, so long spinning would steal the core from real work.
    private const int SpinCount = 200;

    private readonly Thread[] _workers;
    private readonly ManualResetEventSlim[] _start;
    private readonly ManualResetEventSlim _done = new(false, SpinCount);
    private IParallelJob? _job;
    private Exception? _workerFailure;
    private int _remaining;
    private volatile bool _stopping;
    private bool _disposed;

    public GemmThreadPool(int workerCount)
    {
        _workers = new Thread[workerCount];
        _start = new ManualResetEventSlim[workerCount];
        for (int i = 0; i < workerCount; i++)
        {
            _start[i] = new ManualResetEventSlim(false, SpinCount);
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
            _done.Reset();
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
        ManualResetEventSlim start = _start[index];
        while (true)
        {
            start.Wait();
            // Safe: the next Set can only come after this part reports done below.
            start.Reset();
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
        foreach (ManualResetEventSlim e in _start) e.Set();
        foreach (Thread t in _workers) t.Join();
        foreach (ManualResetEventSlim e in _start) e.Dispose();
        _done.Dispose();
    }
}
