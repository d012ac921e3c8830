using BnCluster.Core.Tests.Numerics;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Core.Tests.Training;

public sealed class PlanTests
{
    [Fact]
    public void EpochPlanIsASeededPermutationCutIntoBatches()
    {
        var plan = new EpochPlan(103, 10, seed: 7, epoch: 2);
        Assert.Equal(11, plan.BatchCount);
        Assert.Equal(Enumerable.Range(0, 103), plan.Order.ToArray().Order());
        Assert.NotEqual(Enumerable.Range(0, 103), plan.Order.ToArray());
        var sizes = Enumerable.Range(0, plan.BatchCount).Select(b => plan.Batch(b).Length).ToArray();
        Assert.All(sizes[..^1], s => Assert.Equal(10, s));
        Assert.Equal(3, sizes[^1]);
        Assert.Equal(plan.Order.ToArray(), Enumerable.Range(0, plan.BatchCount).SelectMany(b => plan.Batch(b).ToArray()));

        Assert.Equal(plan.Order.ToArray(), new EpochPlan(103, 10, 7, 2).Order.ToArray());
        Assert.NotEqual(plan.Order.ToArray(), new EpochPlan(103, 10, 7, 3).Order.ToArray());
        Assert.NotEqual(plan.Order.ToArray(), new EpochPlan(103, 10, 8, 2).Order.ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => plan.Batch(11));
        Assert.Throws<ArgumentOutOfRangeException>(() => new EpochPlan(10, 0, 1, 0));
    }

    [Theory]
    [InlineData(23, 1)]
    [InlineData(23, 2)]
    [InlineData(23, 3)]
    [InlineData(23, 7)]
    [InlineData(5, 7)]
    [InlineData(0, 3)]
    public void ShardsCoverTheRowsInRankOrderAndDifferByAtMostOne(int rows, int workers)
    {
        int next = 0;
        var counts = new List<int>();
        for (int r = 0; r < workers; r++)
        {
            var (start, count) = ShardSplit.Shard(rows, workers, r);
            Assert.Equal(next, start);
            next += count;
            counts.Add(count);
        }
        Assert.Equal(rows, next);
        Assert.InRange(counts.Max() - counts.Min(), 0, 1);
        Assert.True(counts.SequenceEqual(counts.OrderDescending()), "larger shards come first");
        Assert.Throws<ArgumentOutOfRangeException>(() => ShardSplit.Shard(rows, workers, workers));
    }

    [Fact]
    public void RngIsDeterministicAndGaussianHasUnitMoments()
    {
        var a = new Rng(42);
        var b = new Rng(42);
        for (int i = 0; i < 100; i++) Assert.Equal(a.NextUInt64(), b.NextUInt64());
        Assert.NotEqual(new Rng(1).NextUInt64(), new Rng(2).NextUInt64());
        var rng = new Rng(3);
        double sum = 0, sumSq = 0;
        const int n = 200_000;
        for (int i = 0; i < n; i++)
        {
            double g = rng.NextGaussian();
            sum += g;
            sumSq += g * g;
        }
        Assert.InRange(sum / n, -0.01, 0.01);
        Assert.InRange(sumSq / n, 0.98, 1.02);
        for (int i = 0; i < 1000; i++) Assert.InRange(rng.NextInt(7), 0, 6);
    }

    [Fact]
    public void InputNormalizerMergesSlicesAndCentresConstantFeatures()
    {
        var data = TestNetworks.RandomDataset(50, 4, 3, seed: 4, shift: 3f, scale: 2f);
        for (int i = 0; i < data.Count; i++) data.Features[i * 4 + 2] = 5f; // zero variance
        var whole = InputNormalizer.Fit(data);
        var merged = new BatchNormStats(4);
        for (int r = 0; r < 3; r++)
        {
            var (start, count) = ShardSplit.Shard(data.Count, 3, r);
            merged.Merge(InputNormalizer.SliceStats(data, start, count));
        }
        var fromSlices = InputNormalizer.FromStats(merged);
        NumericAssert.Close("mean", fromSlices.Mean, whole.Mean, 1e-6);
        NumericAssert.Close("variance", fromSlices.Variance, whole.Variance, 1e-6);

        var normalized = whole.Apply(data);
        Assert.True(normalized.IsNormalized);
        Assert.Equal(5f, data.Features[2]); // the source is not changed
        var stats = InputNormalizer.SliceStats(normalized, 0, normalized.Count);
        for (int j = 0; j < 4; j++)
        {
            Assert.InRange(stats.Mean[j], -1e-5, 1e-5);
            if (j == 2) Assert.Equal(0, stats.Variance(j));
            else Assert.InRange(stats.Variance(j), 1 - 1e-4, 1 + 1e-4);
        }
        Assert.Equal(0f, normalized.RowToArray(0)[2]); // centred constant, not divided by sqrt(ε)
        // The record holds variance 1 for it, so (x − μ)/sqrt(var + ε) taken literally from the file also centres it.
        var record = whole.ToRecord();
        Assert.Equal(1f, record.Var[2]);
        Assert.Equal(1f, (float)(1.0 / Math.Sqrt(record.Var[2] + (double)record.Eps)));
        Assert.Throws<ArgumentException>(() => whole.Apply(TestNetworks.RandomDataset(3, 5, 2, 1)));
    }
}
