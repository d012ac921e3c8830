using BnCluster.Core.Kernels;
using Xunit;

namespace BnCluster.Core.Tests.Kernels;

public sealed unsafe class ParallelForTests
{
    private struct Marks
    {
        public int* Hits;
        public int* Parts;
    }

    private static void Mark(ref Marks m, int start, int end)
    {
        Interlocked.Increment(ref *m.Parts);
        for (int i = start; i < end; i++) Interlocked.Increment(ref m.Hits[i]);
    }

    private sealed class Context
    {
        public int[] Hits = [];
        public int Parts;
    }

    private static void MarkContext(Context c, int start, int end)
    {
        Interlocked.Increment(ref c.Parts);
        for (int i = start; i < end; i++) Interlocked.Increment(ref c.Hits[i]);
    }

    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(2, 1000, 16, 64)]
    [InlineData(2, 200, 16, 64)]
    [InlineData(3, 200, 16, 64)]
    [InlineData(3, 37, 1, 1)]
    [InlineData(4, 5, 8, 1)]
    [InlineData(2, 100, 16, 80)] // too narrow to split: one part
    public void EveryIndexRunsExactlyOnce(int threads, int count, int align, int minPerPart)
    {
        using var mm = new MatMul(threads, KernelPaths.Best, rangeThreshold: 0);
        var hits = new int[count];
        int parts = 0;
        fixed (int* h = hits)
        {
            var marks = new Marks { Hits = h, Parts = &parts };
            mm.ParallelFor(count, count, ref marks, &Mark, align, minPerPart);
        }
        Assert.All(hits, h => Assert.Equal(1, h));
        // The body runs once per chunk that is not empty: RangeJob.ChunksPerPart per part, one part when not split.
        int expectedParts = Math.Min(threads, Math.Max(1, count / minPerPart));
        int chunks = expectedParts == 1 ? 1 : RangeJob.ChunksPerPart * expectedParts;
        Assert.InRange(parts, 1, chunks);
        if (count >= chunks * align) Assert.Equal(chunks, parts);

        var context = new Context { Hits = new int[count] };
        mm.ParallelFor(count, count, context, &MarkContext, align, minPerPart);
        Assert.All(context.Hits, h => Assert.Equal(1, h));
    }

    private struct Stall
    {
        public int* Done, SeenWhileStalled;
        public int Others;
    }

    // The first chunk (the caller's) waits, 10 s at most, until every other chunk is done; the others just count.
    private static void StallFirstChunk(ref Stall s, int start, int end)
    {
        if (start == 0)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var spin = new SpinWait();
            while (Volatile.Read(ref *s.Done) < s.Others && clock.Elapsed < TimeSpan.FromSeconds(10)) spin.SpinOnce(sleep1Threshold: -1);
            *s.SeenWhileStalled = Volatile.Read(ref *s.Done);
            return;
        }
        Interlocked.Increment(ref *s.Done);
    }

    /// <summary>
    /// A part held up in its first chunk (as on a vCPU the host takes away) leaves the rest of its share to the others:
    /// with 2 threads the worker runs its own chunks, then the caller's other 3, while the caller's first is still running.
    /// </summary>
    [Fact]
    public void ChunksOfAStalledPartAreTakenByTheOthers()
    {
        using var mm = new MatMul(2, KernelPaths.Best, rangeThreshold: 0);
        int done = 0, seen = 0;
        var stall = new Stall { Done = &done, SeenWhileStalled = &seen, Others = 2 * RangeJob.ChunksPerPart - 1 };
        mm.ParallelFor(1024, 1024, ref stall, &StallFirstChunk, align: 16);
        Assert.Equal(2 * RangeJob.ChunksPerPart - 1, seen);
        Assert.Equal(2 * RangeJob.ChunksPerPart - 1, done);
    }

    [Fact]
    public void BelowTheThresholdTheCallerRunsEverything()
    {
        using var mm = new MatMul(2, KernelPaths.Best, rangeThreshold: 1000);
        var hits = new int[999];
        int parts = 0;
        fixed (int* h = hits)
        {
            var marks = new Marks { Hits = h, Parts = &parts };
            mm.ParallelFor(hits.Length, hits.Length, ref marks, &Mark);
        }
        Assert.Equal(1, parts);
        Assert.All(hits, h => Assert.Equal(1, h));
    }

    [Fact]
    public void SharesAreAlignedAndContiguous()
    {
        for (int parts = 1; parts <= 4; parts++)
        foreach (int count in new[] { 1, 15, 16, 17, 200, 512, 784 })
        {
            foreach (int phase in new[] { 0, 5, 15 })
            {
                int next = 0;
                for (int p = 0; p < parts; p++)
                {
                    RangeJob.ShareOf(p, parts, count, 16, phase, out int start, out int end);
                    Assert.Equal(next, start);
                    Assert.True(end >= start);
                    if (p < parts - 1 && end < count) Assert.Equal(phase, end % 16);
                    next = end;
                }
                Assert.Equal(count, next);
            }
        }
    }
}
