namespace BnCluster.Node.Cluster;

/// <summary>
/// A worker's step runs on a thread-pool thread and holds it for the whole step (its compute and the shared-memory
/// waits are synchronous). A worker process pinned to one CPU sees one processor, so the pool starts with one thread:
/// the socket sends and receives queued behind the step then wait until the pool injects another, which arrived
/// 0.5-2 ms late on nearly every step (measured on the 2-vCPU machine, 2026-12-02). Each worker's step gets a
/// thread of its own on top of the pool's minimum instead.
/// </summary>
public static class StepThreads
{
    /// <summary>Raises the pool's minimum so that <paramref name="workers"/> running steps leave it one thread per processor.</summary>
    public static void Reserve(int workers)
    {
        ThreadPool.GetMinThreads(out int worker, out int io);
        int wanted = Environment.ProcessorCount + workers;
        if (worker < wanted) ThreadPool.SetMinThreads(wanted, io);
    }
}
