using BnCluster.Core.Kernels;
using Xunit;

namespace BnCluster.Core.Tests.Kernels;

public sealed class GemmThreadPoolTests
{
    private sealed class CountingJob : IParallelJob
    {
        public readonly int[] Runs = new int[4];
        public readonly int[] ThreadIds = new int[4];
        public int FailingPart = -1;

        public void Execute(int part)
        {
            Interlocked.Increment(ref Runs[part]);
            ThreadIds[part] = Environment.CurrentManagedThreadId;
            if (part == FailingPart) throw new InvalidOperationException($"part {part} failed");
        }
    }

    [Fact]
    public void EveryPartRunsOnce_PartZeroOnTheCaller()
    {
        using var pool = new GemmThreadPool(3);
        var job = new CountingJob();
        for (int call = 1; call <= 50; call++)
        {
            pool.Run(job, 4);
            Assert.All(job.Runs, r => Assert.Equal(call, r));
        }
        Assert.Equal(Environment.CurrentManagedThreadId, job.ThreadIds[0]);
        Assert.Equal(4, job.ThreadIds.Distinct().Count());

        pool.Run(job, 2); // fewer parts than workers: the others stay idle
        Assert.Equal(new[] { 51, 51, 50, 50 }, job.Runs);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    public void FailureIsRethrown_AndThePoolKeepsWorking(int failingPart)
    {
        using var pool = new GemmThreadPool(2);
        var job = new CountingJob { FailingPart = failingPart };
        var e = Assert.Throws<InvalidOperationException>(() => pool.Run(job, 3));
        Assert.Equal($"part {failingPart} failed", e.Message);
        job.FailingPart = -1;
        pool.Run(job, 3);
        Assert.Equal(new[] { 2, 2, 2, 0 }, job.Runs);
    }

    /// <summary>
    /// Ping-pong between two threads through two signals, the hand-off of every dispatch: no wake-up may be lost,
    /// whether the waiter is still spinning when it is set (most rounds) or has blocked on the monitor (every 50th
    /// round the setter first waits for the waiter to block). A lost wake-up would stall the loop: the test bounds it.
    /// </summary>
    [Fact]
    public async Task WakeSignalLosesNoWakeUp_SpinningOrBlocked()
    {
        const int rounds = 3000;
        var ping = new WakeSignal();
        var pong = new WakeSignal();
        var echo = new Thread(() =>
        {
            for (int i = 0; i < rounds; i++)
            {
                ping.Wait();
                pong.Set();
            }
        }) { IsBackground = true };
        echo.Start();
        var main = Task.Run(() =>
        {
            for (int i = 0; i < rounds; i++)
            {
                if (i % 50 == 0)
                    Assert.True(SpinWait.SpinUntil(() => ping.WaiterBlocked, TimeSpan.FromSeconds(30)), $"round {i}: the waiter never blocked");
                ping.Set();
                pong.Wait();
            }
        });
        await main.WaitAsync(TimeSpan.FromSeconds(60)); // throws TimeoutException if a wake-up was lost
        Assert.True(echo.Join(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public void RejectsBadPartCounts_AndUseAfterDispose()
    {
        var pool = new GemmThreadPool(1);
        var job = new CountingJob();
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Run(job, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Run(job, 0));
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.Run(job, 1));
    }
}
