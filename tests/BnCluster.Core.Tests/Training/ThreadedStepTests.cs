using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Core.Tests.Training;

/// <summary>
/// The step's non-GEMM passes (BN by feature columns, Adam by element ranges) run split over the MatMul's threads;
/// the split must not change a single bit: parameters, optimizer moments, running statistics and loss after several
/// Adam steps with 2 and 3 threads (every split forced, thresholds 0) equal those of 1 thread.
/// </summary>
public sealed class ThreadedStepTests
{
    [Theory]
    [InlineData(BatchNormPlacement.Before, Activation.Relu)]
    [InlineData(BatchNormPlacement.Before, Activation.Tanh)]
    [InlineData(BatchNormPlacement.After, Activation.Sigmoid)]
    [InlineData(BatchNormPlacement.After, Activation.Relu)]
    [InlineData(BatchNormPlacement.None, Activation.Tanh)]
    public void ThreadedStepsAreBitIdenticalToOneThread(BatchNormPlacement placement, Activation activation)
    {
        // Widths that are not multiples of the 16-float shares, and one narrow layer that is never split.
        var spec = new NetworkSpec(40, [200, 136, 40], 10, activation, placement);
        // Batches on both sides of BatchNormLayer.Float32InputGradientMinBatch (float64 and float32 input gradients).
        foreach (int batch in new[] { 48, 96 })
        {
            var reference = Run(spec, new MatMul(1), batch);
            foreach (int threads in new[] { 2, 3 })
            {
                var threaded = Run(spec, new MatMul(threads, KernelPaths.Best, parallelThreshold: 0, rangeThreshold: 0), batch);
                Assert.Equal(reference.Loss, threaded.Loss);
                Assert.Equal(reference.Bits.Count, threaded.Bits.Count);
                for (int i = 0; i < reference.Bits.Count; i++) Assert.Equal(reference.Bits[i], threaded.Bits[i]);
            }
        }
    }

    [Fact]
    public void FashionMnistShapeWithDefaultThresholdsIsBitIdenticalToOneThread()
    {
        var spec = new NetworkSpec(784, [512, 256], 10, Activation.Relu, BatchNormPlacement.Before);
        var reference = Run(spec, new MatMul(1), batch: 128, steps: 3);
        var threaded = Run(spec, new MatMul(2), batch: 128, steps: 3);
        Assert.Equal(reference.Loss, threaded.Loss);
        for (int i = 0; i < reference.Bits.Count; i++) Assert.Equal(reference.Bits[i], threaded.Bits[i]);
    }

    [Fact]
    public void ByteDatasetStepsAreBitIdenticalToOneThread()
    {
        // The row gather decodes and normalizes byte rows on both threads.
        var spec = new NetworkSpec(100, [96, 64], 10, Activation.Relu, BatchNormPlacement.Before);
        var rng = new Random(9);
        var codes = new byte[192 * spec.Inputs];
        rng.NextBytes(codes);
        var labels = Enumerable.Range(0, 192).Select(i => rng.Next(spec.Classes)).ToArray();
        var raw = new Dataset("bytes", codes, 255f, labels, spec.Inputs, Enumerable.Range(0, spec.Classes).Select(c => c.ToString()).ToArray());
        var data = InputNormalizer.Fit(raw).Apply(raw);
        var reference = Run(spec, new MatMul(1), data: data);
        var threaded = Run(spec, new MatMul(2, KernelPaths.Best, parallelThreshold: 0, rangeThreshold: 0), data: data);
        Assert.Equal(reference.Loss, threaded.Loss);
        for (int i = 0; i < reference.Bits.Count; i++) Assert.Equal(reference.Bits[i], threaded.Bits[i]);
    }

    private static (List<long> Loss, List<int[]> Bits) Run(NetworkSpec spec, MatMul matMul, int batch = 48, int steps = 4, Dataset? data = null)
    {
        using var mm = matMul;
        data ??= TestNetworks.RandomDataset(4 * batch, spec.Inputs, spec.Classes, seed: 5, shift: 0.5f, scale: 2f);
        var p = Parameters.Initialize(spec, 3);
        var optimizer = new Optimizer(new OptimizerSettings(OptimizerKind.Adam, 1e-2f), p);
        var ws = new Workspace(p, batch, mm);
        var plan = new EpochPlan(data.Count, batch, 1, 0);
        var losses = new List<long>();
        for (int s = 0; s < steps; s++)
        {
            var rows = plan.Batch(s % plan.BatchCount);
            var loss = TrainingStep.TrainLocalAsync(p, ws, optimizer, data, rows).GetAwaiter().GetResult();
            losses.Add(BitConverter.DoubleToInt64Bits(loss.SumLoss));
            losses.Add(loss.Correct);
        }
        var bits = new List<int[]>();
        foreach (var t in p.Trainable) bits.Add(Bits(t.Values));
        foreach (var v in optimizer.FirstMoments) bits.Add(Bits(v));
        foreach (var v in optimizer.SecondMoments) bits.Add(Bits(v));
        for (int l = 0; l < p.HiddenLayers; l++)
        {
            if (p.RunningMean[l] is { } mean) bits.Add(Bits(mean));
            if (p.RunningVar[l] is { } variance) bits.Add(Bits(variance));
        }
        return (losses, bits);
    }

    private static int[] Bits(float[] values) => Array.ConvertAll(values, BitConverter.SingleToInt32Bits);
}
