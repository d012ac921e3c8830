using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Tests.Numerics;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Core.Tests.Training;

public sealed class TrainerObserverTests
{
    private static (Dataset Train, Dataset Test) Data()
    {
        var all = TestNetworks.RandomDataset(300, 6, 3, seed: 17, shift: 5f, scale: 2f);
        Dataset Slice(int start, int count) => NumericAssert.MakeDataset(
            all.Features.AsSpan(start * 6, count * 6).ToArray(), all.Labels.AsSpan(start, count).ToArray(), 6, 3);
        return (Slice(0, 240), Slice(240, 60));
    }

    private static TrainerOptions Options(BatchNormPlacement placement) =>
        new(new NetworkSpec(6, [12, 8], 3, Activation.Relu, placement), new OptimizerSettings(OptimizerKind.Adam, 0.01f),
            BatchSize: 32, Epochs: 2, Seed: 9);

    /// <summary>Records per step the step number, the rows and the first BN layer's mini-batch mean of feature 0.</summary>
    private sealed class Recorder : ITrainingObserver
    {
        public List<(long Step, int Rows, double Mean0, int OutputLength)> Steps { get; } = [];
        public void StepCommitted(long step, Parameters p, Workspace ws) =>
            Steps.Add((step, ws.Rows, ws.GlobalStats[0]?.Mean[0] ?? double.NaN, TrainingStep.HiddenLayerOutput(p, ws, 1).Length));
    }

    [Theory]
    [InlineData(BatchNormPlacement.Before)]
    [InlineData(BatchNormPlacement.None)]
    public async Task Observer_sees_every_committed_step_and_changes_nothing(BatchNormPlacement placement)
    {
        var (train, test) = Data();
        var plain = await new Trainer(Options(placement)).RunAsync(train, test);
        var recorder = new Recorder();
        var observed = await new Trainer(Options(placement)) { Observer = recorder }.RunAsync(train, test);

        Assert.Equal(Enumerable.Range(1, (int)plain.Steps).Select(i => (long)i), recorder.Steps.Select(s => s.Step));
        Assert.Equal(240 % 32, recorder.Steps[7].Rows); // the last, smaller batch of the first epoch
        Assert.All(recorder.Steps, s => Assert.Equal(s.Rows * 8, s.OutputLength));
        if (placement == BatchNormPlacement.Before) Assert.All(recorder.Steps, s => Assert.True(double.IsFinite(s.Mean0)));
        for (int i = 0; i < plain.Parameters.Trainable.Count; i++)
            Assert.Equal(plain.Parameters.Trainable[i].Values, observed.Parameters.Trainable[i].Values);
        Assert.Equal(plain.Epochs.Select(e => e.TestAccuracy), observed.Epochs.Select(e => e.TestAccuracy));
    }

    [Fact]
    public void Whole_set_statistics_are_the_moments_of_each_BN_input_over_all_rows()
    {
        var (train, _) = Data();
        var p = Parameters.Initialize(new NetworkSpec(6, [5, 4], 3, Activation.Relu, BatchNormPlacement.Before), 3);
        using var matMul = new MatMul(1);
        var ws = new Workspace(p, 64, matMul); // fewer rows than the set: the moments are merged over chunks
        WholeSetStatistics.Apply(p, ws, train);

        // Layer 0's BN input is z = x·Wᵀ (W is [out × in]; no bias before BN): its mean and unbiased variance per unit, directly.
        int n = train.Count;
        var x = train.Features;
        for (int j = 0; j < 5; j++)
        {
            var z = Enumerable.Range(0, n).Select(i => Enumerable.Range(0, 6).Sum(k => (double)x[i * 6 + k] * p.W[0][j * 6 + k])).ToArray();
            double mean = z.Average();
            double variance = z.Sum(v => (v - mean) * (v - mean)) / (n - 1);
            Assert.Equal(mean, p.RunningMean[0]![j], 1e-4);
            Assert.Equal(variance, p.RunningVar[0]![j], Math.Max(1e-4, 1e-5 * variance));
        }
        // Layer 1's were computed with layer 0's in place: evaluating again with them gives them back.
        var layer1 = p.RunningMean[1]!.ToArray();
        WholeSetStatistics.Apply(p, ws, train);
        Assert.Equal(layer1, p.RunningMean[1]!);
    }
}
