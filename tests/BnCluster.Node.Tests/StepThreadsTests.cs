using BnCluster.Node.Cluster;
using Xunit;

namespace BnCluster.Node.Tests;

public sealed class StepThreadsTests
{
    /// <summary>Each worker's step gets a pool thread on top of one per processor; a higher minimum is left as it is.</summary>
    [Fact]
    public void Reserving_raises_the_pools_minimum_by_the_workers_and_never_lowers_it()
    {
        ThreadPool.GetMinThreads(out int before, out int io);
        StepThreads.Reserve(workers: 3);
        ThreadPool.GetMinThreads(out int after, out int ioAfter);
        Assert.Equal(Math.Max(before, Environment.ProcessorCount + 3), after);
        Assert.Equal(io, ioAfter);
        StepThreads.Reserve(workers: 1);
        ThreadPool.GetMinThreads(out int again, out _);
        Assert.Equal(after, again);
    }
}
