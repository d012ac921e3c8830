using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Tests.Numerics;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Core.Tests.Training;

/// <summary>K workers with uneven shards, merged through a test collective, give the single-batch step.</summary>
public sealed class ShardedStepTests
{
    /// <summary>
    /// An in-test all-reduce over K concurrent workers: each call copies its partial, the last arrival merges
    /// all K in rank order and releases everyone with the same global result.
    /// </summary>
    private sealed class Reducer(int workers)
    {
        private readonly Dictionary<(string, int), (object?[] Parts, int Arrived, TaskCompletionSource<object> Done)> _rounds = new();
        private readonly object _gate = new();

        public Task<object> Arrive(string phase, int layer, int rank, object partialCopy, Func<object?[], object> merge)
        {
            lock (_gate)
            {
                var key = (phase, layer);
                if (!_rounds.TryGetValue(key, out var round))
                    round = (new object?[workers], 0, new TaskCompletionSource<object>(TaskCreationOptions.RunContinuationsAsynchronously));
                Assert.Null(round.Parts[rank]);
                round.Parts[rank] = partialCopy;
                round.Arrived++;
                _rounds[key] = round;
                if (round.Arrived == workers)
                {
                    _rounds.Remove(key);
                    round.Done.SetResult(merge(round.Parts));
                }
                return round.Done.Task;
            }
        }
    }

    private sealed class TestCollective(Reducer reducer, int rank) : ICollective
    {
        public async ValueTask<BatchNormStats> AllReduceStatsAsync(int layer, BatchNormStats local, CancellationToken ct = default)
        {
            var copy = new BatchNormStats(local.Features);
            copy.CopyFrom(local);
            var merged = await reducer.Arrive("stats", layer, rank, copy, parts =>
            {
                var global = new BatchNormStats(local.Features);
                foreach (BatchNormStats s in parts.Cast<BatchNormStats>()) global.Merge(s);
                return global;
            }).WaitAsync(TimeSpan.FromSeconds(30), ct);
            return (BatchNormStats)merged;
        }

        public async ValueTask<BatchNormGradSums> AllReduceGradSumsAsync(int layer, BatchNormGradSums local, Action? whileWaiting, CancellationToken ct = default)
        {
            var copy = new BatchNormGradSums(local.Features);
            copy.CopyFrom(local);
            var arrived = reducer.Arrive("grads", layer, rank, copy, parts =>
            {
                var global = new BatchNormGradSums(local.Features);
                foreach (BatchNormGradSums s in parts.Cast<BatchNormGradSums>()) global.Add(s);
                return global;
            });
            whileWaiting?.Invoke();
            var summed = await arrived.WaitAsync(TimeSpan.FromSeconds(30), ct);
            return (BatchNormGradSums)summed;
        }
    }

    /// <summary>Checks, at each backward reduction, that the weight gradients of the dense layer above are computed
    /// exactly while this worker's sums are in flight: not before the call, done when whileWaiting returns.</summary>
    private sealed class OverlapCheckingCollective(Workspace ws, Parameters p) : ICollective
    {
        public List<int> Overlapped { get; } = [];

        public ValueTask<BatchNormStats> AllReduceStatsAsync(int layer, BatchNormStats local, CancellationToken ct = default) => new(local);

        public ValueTask<BatchNormGradSums> AllReduceGradSumsAsync(int layer, BatchNormGradSums local, Action? whileWaiting, CancellationToken ct = default)
        {
            float[] above = layer + 1 == p.HiddenLayers ? ws.Gradients.DWOut : ws.Gradients.DW[layer + 1];
            Assert.All(above, v => Assert.True(float.IsNaN(v), $"layer {layer + 1}'s dW computed before the reduction of layer {layer}"));
            Assert.NotNull(whileWaiting);
            whileWaiting();
            Assert.All(above, v => Assert.True(float.IsFinite(v), $"layer {layer + 1}'s dW not computed while layer {layer}'s sums were in flight"));
            Assert.All(ws.Gradients.DW[layer], v => Assert.True(float.IsNaN(v), $"layer {layer}'s own dW computed before its global sums"));
            Overlapped.Add(layer);
            return new(local);
        }
    }

    [Theory]
    [InlineData(BatchNormPlacement.Before)]
    [InlineData(BatchNormPlacement.After)]
    public async Task WeightGradientsAreComputedWhileTheBackwardReductionIsInFlight(BatchNormPlacement placement)
    {
        var spec = new NetworkSpec(6, [9, 7, 5], 4, Activation.Relu, placement);
        var data = TestNetworks.RandomDataset(40, 6, 4, seed: 5);
        var p = TestNetworks.RandomParameters(spec, seed: 11);
        var rows = new EpochPlan(data.Count, 16, 3, 0).Batch(0);
        using var mm = new MatMul();
        var reference = new Workspace(p, 16, mm);
        await TrainingStep.ForwardBackwardAsync(p, reference, data, rows, 16, LocalCollective.Instance);

        var ws = new Workspace(p, 16, mm);
        foreach (var t in ws.Gradients.Tensors) Array.Fill(t.Values, float.NaN);
        var collective = new OverlapCheckingCollective(ws, p);
        await TrainingStep.ForwardBackwardAsync(p, ws, data, rows, 16, collective);
        Assert.Equal(new[] { 2, 1, 0 }, collective.Overlapped);
        // The same gradients, bit for bit, as the step that overlaps nothing (the local collective runs the work at once).
        for (int i = 0; i < ws.Gradients.Tensors.Count; i++) Assert.Equal(reference.Gradients.Tensors[i].Values, ws.Gradients.Tensors[i].Values);
    }

    public static TheoryData<int, int, BatchNormPlacement, Activation> Cases()
    {
        var data = new TheoryData<int, int, BatchNormPlacement, Activation>();
        foreach (int k in new[] { 1, 2, 3, 7 })
        {
            data.Add(k, 23, BatchNormPlacement.Before, Activation.Relu); // 23 rows: uneven over 2, 3 and 7 workers
            data.Add(k, 23, BatchNormPlacement.After, Activation.Tanh);
        }
        data.Add(3, 23, BatchNormPlacement.None, Activation.Sigmoid);
        data.Add(7, 5, BatchNormPlacement.Before, Activation.Relu);      // two workers get no rows
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task ShardedStepEqualsSingleBatchStep(int workers, int batch, BatchNormPlacement placement, Activation activation)
    {
        var spec = new NetworkSpec(6, [9, 7], 4, activation, placement);
        var data = TestNetworks.RandomDataset(40, 6, 4, seed: 5);
        var initial = TestNetworks.RandomParameters(spec, seed: 11);
        var rows = new EpochPlan(data.Count, batch, 3, 0).Batch(0);
        var settings = new OptimizerSettings(OptimizerKind.Adam, 0.01f);

        // Reference: one worker, the whole batch.
        var single = initial.Clone();
        using var singleMatMul = new MatMul();
        var singleWs = new Workspace(single, batch, singleMatMul);
        var singleLoss = await TrainingStep.ForwardBackwardAsync(single, singleWs, data, rows, batch, LocalCollective.Instance);
        new Optimizer(settings, single).Apply(single, singleWs.Gradients);
        TrainingStep.UpdateRunningStats(single, singleWs);

        // K workers concurrently on their shards, sharing the (read-only) parameters.
        var sharded = initial.Clone();
        var reducer = new Reducer(workers);
        var matMuls = Enumerable.Range(0, workers).Select(_ => new MatMul()).ToArray();
        var workspaces = new Workspace[workers];
        var tasks = new Task<LossPartial>[workers];
        for (int r = 0; r < workers; r++)
        {
            var shard = ShardSplit.Slice(rows, workers, r);
            workspaces[r] = new Workspace(sharded, Math.Max(1, shard.Length), matMuls[r]) { ContributesBatchNormGradients = r == 0 };
            var ws = workspaces[r];
            var collective = new TestCollective(reducer, r);
            tasks[r] = Task.Run(async () => await TrainingStep.ForwardBackwardAsync(sharded, ws, data, shard, batch, collective));
        }
        var partials = await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(60));
        var loss = partials.Aggregate(new LossPartial(0, 0, 0), (a, b) => a.Add(b));
        var sum = new Gradients(sharded);
        sum.CopyFrom(workspaces[0].Gradients);
        for (int r = 1; r < workers; r++) sum.Add(workspaces[r].Gradients);
        new Optimizer(settings, sharded).Apply(sharded, sum);
        TrainingStep.UpdateRunningStats(sharded, workspaces[0]);

        Assert.Equal(batch, loss.Count);
        Assert.Equal(singleLoss.Correct, loss.Correct);
        Assert.InRange(Math.Abs(loss.SumLoss - singleLoss.SumLoss) / singleLoss.SumLoss, 0, 1e-5);
        for (int i = 0; i < sum.Tensors.Count; i++)
            NumericAssert.Close($"K={workers} gradient {sum.Tensors[i].Name}", sum.Tensors[i].Values, singleWs.Gradients.Tensors[i].Values, 1e-5);
        for (int i = 0; i < single.Trainable.Count; i++)
            NumericAssert.Close($"K={workers} {single.Trainable[i].Name}", sharded.Trainable[i].Values, single.Trainable[i].Values, 1e-5);
        for (int l = 0; l < single.HiddenLayers; l++)
        {
            if (single.RunningMean[l] is null) continue;
            NumericAssert.Close($"K={workers} running_mean[{l}]", sharded.RunningMean[l], single.RunningMean[l], 1e-5);
            NumericAssert.Close($"K={workers} running_var[{l}]", sharded.RunningVar[l], single.RunningVar[l], 1e-5);
        }
        foreach (var m in matMuls) m.Dispose();
    }

    [Fact]
    public async Task StepObservesCancellationWhileAwaitingTheCollective()
    {
        var spec = new NetworkSpec(6, [5], 3);
        var data = TestNetworks.RandomDataset(8, 6, 3, seed: 1);
        var p = Parameters.Initialize(spec, 1);
        using var matMul = new MatMul();
        var ws = new Workspace(p, 8, matMul);
        using var cts = new CancellationTokenSource();
        // Two workers expected, only rank 0 runs: the stats all-reduce never completes until cancelled.
        var collective = new TestCollective(new Reducer(2), 0);
        var step = TrainingStep.ForwardBackwardAsync(p, ws, data, Enumerable.Range(0, 8).ToArray(), 16, collective, cts.Token).AsTask();
        Assert.False(step.IsCompleted);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => step.WaitAsync(TimeSpan.FromSeconds(30)));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(7)]
    public void MergeKeepsVarianceOfLargeMeanFeature(int workers)
    {
        // Feature 0 has mean 1e4 and std 1: Σz² − (Σz)²/N would lose every digit in float32 and most in float64.
        var data = TestNetworks.RandomDataset(101, 3, 2, seed: 9, shift: 1e4f, scale: 1f);
        var merged = new BatchNormStats(3);
        for (int r = 0; r < workers; r++)
        {
            var (start, count) = ShardSplit.Shard(data.Count, workers, r);
            merged.Merge(InputNormalizer.SliceStats(data, start, count));
        }
        for (int j = 0; j < 3; j++)
        {
            double mean = 0, m2 = 0;
            for (int i = 0; i < data.Count; i++) mean += data.Features[i * 3 + j];
            mean /= data.Count;
            for (int i = 0; i < data.Count; i++) m2 += Math.Pow(data.Features[i * 3 + j] - mean, 2);
            double variance = m2 / data.Count;
            Assert.Equal(data.Count, merged.Count);
            Assert.InRange(Math.Abs(merged.Variance(j) - variance) / variance, 0, 1e-3);
            Assert.InRange(variance, 0.5, 2); // really std ≈ 1 around 1e4
        }
    }
}
