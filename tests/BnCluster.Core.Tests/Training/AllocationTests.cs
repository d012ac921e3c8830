using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Core.Tests.Training;

public sealed class AllocationTests
{
    [Theory]
    [InlineData(BatchNormPlacement.Before, OptimizerKind.Adam, 1)]
    [InlineData(BatchNormPlacement.After, OptimizerKind.Momentum, 1)]
    [InlineData(BatchNormPlacement.None, OptimizerKind.RmsProp, 1)]
    [InlineData(BatchNormPlacement.Before, OptimizerKind.Adam, 2)]
    [InlineData(BatchNormPlacement.After, OptimizerKind.Adam, 2)]
    public void StepLoopAllocatesNothingAfterWarmUp(BatchNormPlacement placement, OptimizerKind kind, int threads)
    {
        var spec = new NetworkSpec(8, [16, 8], 4, Activation.Relu, placement);
        var data = TestNetworks.RandomDataset(64, 8, 4, seed: 2);
        var p = Parameters.Initialize(spec, 1);
        var optimizer = new Optimizer(new OptimizerSettings(kind, 0.01f), p);
        // With threads > 1 every product and every BN / Adam pass is split (thresholds 0): dispatching them to the
        // pool must not allocate on the calling thread either.
        using var matMul = threads == 1 ? new MatMul() : new MatMul(threads, KernelPaths.Best, parallelThreshold: 0, rangeThreshold: 0);
        var ws = new Workspace(p, 32, matMul);
        var plan = new EpochPlan(data.Count, 32, 1, 0);
        var batches = new[] { plan.Batch(0), plan.Batch(1) };

        void Step(int i)
        {
            var rows = batches[i % 2];
            var loss = TrainingStep.TrainLocalAsync(p, ws, optimizer, data, rows).GetAwaiter().GetResult();
            Assert.True(double.IsFinite(loss.SumLoss));
        }

        for (int i = 0; i < 5; i++) Step(i);
        // Quietest of up to 3 windows: a one-off runtime allocation (tiered compilation promoting a method inside the
        // window is suspected, not verified; seen ~1 run in 6 before the threaded passes existed) can land in one; a per-step allocation shows in all.
        long allocated = long.MaxValue;
        for (int attempt = 0; attempt < 3 && allocated != 0; attempt++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 50; i++) Step(i);
            allocated = Math.Min(allocated, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.Equal(0, allocated);
    }
}
