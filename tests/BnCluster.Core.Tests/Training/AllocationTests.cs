using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Core.Tests.Training;

public sealed class AllocationTests
{
    [Theory]
    [InlineData(BatchNormPlacement.Before, OptimizerKind.Adam)]
    [InlineData(BatchNormPlacement.After, OptimizerKind.Momentum)]
    [InlineData(BatchNormPlacement.None, OptimizerKind.RmsProp)]
    public void StepLoopAllocatesNothingAfterWarmUp(BatchNormPlacement placement, OptimizerKind kind)
    {
        var spec = new NetworkSpec(8, [16, 8], 4, Activation.Relu, placement);
        var data = TestNetworks.RandomDataset(64, 8, 4, seed: 2);
        var p = Parameters.Initialize(spec, 1);
        var optimizer = new Optimizer(new OptimizerSettings(kind, 0.01f), p);
        using var matMul = new MatMul();
        var ws = new Workspace(p, 32, matMul);
        var plan = new EpochPlan(data.Count, 32, 1, 0);
        var batches = new[] { plan.Batch(0), plan.Batch(1) };

        void Step(int i)
        {
            var rows = batches[i % 2];
            var loss = TrainingStep.ForwardBackwardAsync(p, ws, data, rows, rows.Length, LocalCollective.Instance).GetAwaiter().GetResult();
            optimizer.Apply(p, ws.Gradients);
            TrainingStep.UpdateRunningStats(p, ws);
            Assert.True(double.IsFinite(loss.SumLoss));
        }

        for (int i = 0; i < 5; i++) Step(i);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 50; i++) Step(i);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
    }
}
