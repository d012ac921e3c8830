using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Layers;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Core.Tests.Numerics;

/// <summary>
/// The first layer's input offset (the data centred on the values of a stored 0, so its zeros stay zeros the GEMMs
/// skip): the layer and the whole step must compute what they compute on the uncentred input.
/// </summary>
public sealed class InputOffsetTests
{
    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 1)]
    [InlineData(false, 3)]
    [InlineData(true, 3)]
    public void DenseLayerWithOffsetMatchesTheUncentredInput(bool hasBias, int threads)
    {
        const int rows = 37, inputs = 53, outputs = 29;
        var rng = new Random(4);
        float[] a = MatMulTestsRandom(rng, rows * inputs), c = MatMulTestsRandom(rng, inputs);
        float[] w = MatMulTestsRandom(rng, outputs * inputs), b = MatMulTestsRandom(rng, outputs), dz = MatMulTestsRandom(rng, rows * outputs);
        for (int i = 0; i < a.Length; i += 3) a[i] = c[i % inputs]; // a "stored 0": exactly zero once centred
        var centred = new float[a.Length];
        for (int i = 0; i < a.Length; i++) centred[i] = a[i] - c[i % inputs];
        Assert.Contains(0f, centred);

        var layer = new DenseLayer(inputs, outputs, hasBias);
        using var mm = new MatMul(threads, KernelPaths.Best, parallelThreshold: 0, rangeThreshold: 0);
        float[] z = new float[rows * outputs], zOffset = new float[rows * outputs], terms = new float[outputs];
        layer.Forward(mm, a, w, b, z, rows);
        layer.Forward(mm, centred, w, b, zOffset, rows, c, terms);
        NumericAssert.Close("Z", zOffset, z, 1e-5);

        float[] dw = new float[w.Length], dwOffset = new float[w.Length], db = new float[outputs], dbOffset = new float[outputs];
        layer.Backward(mm, dz, a, w, dw, db, Span<float>.Empty, rows);
        layer.Backward(mm, dz, centred, w, dwOffset, dbOffset, Span<float>.Empty, rows, c, terms);
        NumericAssert.Close("dW", dwOffset, dw, 1e-5);
        if (hasBias) Assert.Equal(db, dbOffset);

        // Against float64 sums too, so the pair cannot agree on a common mistake.
        var exactDw = new double[w.Length];
        for (int o = 0; o < outputs; o++)
            for (int j = 0; j < inputs; j++)
                for (int r = 0; r < rows; r++) exactDw[o * inputs + j] += (double)dz[r * outputs + o] * a[r * inputs + j];
        NumericAssert.Close("dW vs float64", dwOffset, exactDw, 1e-5);

        var e = Assert.Throws<ArgumentException>(() => layer.Backward(mm, dz, centred, w, dwOffset, dbOffset, new float[rows * inputs], rows, c, terms));
        Assert.Contains("first layer", e.Message);
        Assert.Throws<ArgumentException>(() => layer.Forward(mm, centred, w, b, zOffset, rows, c, new float[outputs - 1]));
    }

    private static float[] MatMulTestsRandom(Random rng, int length) => Tests.Kernels.MatMulTests.RandomArray(rng, length);

    /// <summary>Image-like bytes: 60% zeros, in runs along each row as image backgrounds are.</summary>
    private static Dataset SparseBytes(int rows, int features, int classes, int seed)
    {
        var rng = new Random(seed);
        var codes = new byte[rows * features];
        for (int i = 0; i < rows; i++)
        {
            int start = rng.Next(features / 2), length = rng.Next(features / 4, features / 2);
            for (int j = start; j < start + length; j++) codes[i * features + j] = (byte)rng.Next(1, 256);
        }
        var labels = Enumerable.Range(0, rows).Select(_ => rng.Next(classes)).ToArray();
        return new Dataset("sparse", codes, 255f, labels, features, Enumerable.Range(0, classes).Select(k => k.ToString()).ToArray());
    }

    [Theory]
    [InlineData(BatchNormPlacement.Before, 1)]
    [InlineData(BatchNormPlacement.Before, 2)]
    [InlineData(BatchNormPlacement.After, 2)]
    [InlineData(BatchNormPlacement.None, 2)]
    public void StepsOnASparseNormalizedDatasetMatchTheMaterializedValues(BatchNormPlacement placement, int threads)
    {
        // The normalized view has ZeroOffsets, so its steps centre the input; a float copy of the very same values
        // has none, so its steps do not. Three Adam steps must give the same parameters and running statistics.
        var spec = new NetworkSpec(100, [96, 64], 10, Activation.Relu, placement);
        var raw = SparseBytes(192, spec.Inputs, spec.Classes, seed: 8);
        var view = InputNormalizer.Fit(raw).Apply(raw);
        Assert.NotNull(view.ZeroOffsets);
        var values = new float[raw.Count * raw.FeatureCount];
        view.CopyRows(0, raw.Count, values);
        var copy = new Dataset("copy", values, raw.Labels, raw.FeatureCount, raw.ClassNames);
        Assert.Null(copy.ZeroOffsets);

        var centred = Run(spec, view, threads);
        var plain = Run(spec, copy, threads);
        Assert.Equal(plain.Correct, centred.Correct);
        for (int s = 0; s < plain.Loss.Count; s++) Assert.Equal(plain.Loss[s], centred.Loss[s], 1e-4 * Math.Abs(plain.Loss[s]));
        for (int t = 0; t < plain.Tensors.Count; t++) NumericAssert.Close($"tensor {t}", centred.Tensors[t], plain.Tensors[t], 1e-4);

        // Evaluation reads the rows as they are (no offset), after a training step left X centred.
        Assert.Equal(plain.Eval, centred.Eval, 1e-4 * plain.Eval);
    }

    private static (List<double> Loss, List<int> Correct, List<float[]> Tensors, double Eval) Run(NetworkSpec spec, Dataset data, int threads)
    {
        using var mm = new MatMul(threads);
        var p = Parameters.Initialize(spec, 3);
        var optimizer = new Optimizer(new OptimizerSettings(OptimizerKind.Adam, 1e-2f), p);
        var ws = new Workspace(p, 64, mm);
        var plan = new EpochPlan(data.Count, 64, 1, 0);
        List<double> loss = [];
        List<int> correct = [];
        for (int s = 0; s < 3; s++)
        {
            var step = TrainingStep.TrainLocalAsync(p, ws, optimizer, data, plan.Batch(s)).GetAwaiter().GetResult();
            loss.Add(step.SumLoss);
            correct.Add(step.Correct);
        }
        var tensors = p.Trainable.Select(t => t.Values).ToList();
        for (int l = 0; l < p.HiddenLayers; l++)
        {
            if (p.RunningMean[l] is { } mean) tensors.Add(mean);
            if (p.RunningVar[l] is { } variance) tensors.Add(variance);
        }
        double eval = TrainingStep.Evaluate(p, ws, data, 0, data.Count).SumLoss;
        return (loss, correct, tensors, eval);
    }

    [Fact]
    public void ZeroPatternRanksOrderTheRowsByLabelThenStoredZeros()
    {
        var raw = SparseBytes(300, 100, 4, seed: 5);
        var view = InputNormalizer.Fit(raw).Apply(raw);
        var ranks = Assert.IsType<int[]>(view.ZeroPatternRanks);
        Assert.Null(raw.ZeroPatternRanks); // (no normalization: no offsets)
        Assert.Equal(Enumerable.Range(0, raw.Count), ranks.Order());
        var codes = new float[raw.FeatureCount];
        (int Label, int Zeros, int Row) Key(int r)
        {
            raw.CopyRows(r, 1, codes);
            return (raw.Labels[r], codes.Count(v => v == 0f), r);
        }
        var byRank = Enumerable.Range(0, raw.Count).OrderBy(r => ranks[r]).Select(Key).ToArray();
        Assert.Equal(byRank.OrderBy(k => k.Label).ThenBy(k => k.Zeros).ThenBy(k => k.Row), byRank);
        Assert.True(byRank.Select(k => k.Zeros).Distinct().Count() > 10); // the test data has various zero counts

        // Float storage with the same zeros ranks its rows the same.
        var floats = new float[raw.Count * raw.FeatureCount];
        raw.CopyRows(0, raw.Count, floats);
        var floatRaw = new Dataset("floats", floats, raw.Labels, raw.FeatureCount, raw.ClassNames);
        Assert.Equal(ranks, InputNormalizer.Fit(floatRaw).Apply(floatRaw).ZeroPatternRanks);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void AStepGathersItsRowsInZeroPatternOrderWhateverTheOrderGiven(int threads)
    {
        var spec = new NetworkSpec(100, [96, 64], 10, Activation.Relu, BatchNormPlacement.Before);
        var raw = SparseBytes(192, spec.Inputs, spec.Classes, seed: 8);
        var view = InputNormalizer.Fit(raw).Apply(raw);
        var ranks = view.ZeroPatternRanks!;
        int[] rows = Enumerable.Range(0, 64).Select(i => (i * 37) % raw.Count).ToArray();
        int[] reversed = rows.Reverse().ToArray();
        using var mm = new MatMul(threads);

        (float[][] Gradients, int[] Labels, double Loss) Step(int[] given, bool ordered)
        {
            var p = Parameters.Initialize(spec, 3);
            var ws = new Workspace(p, 64, mm) { OrderRowsByZeroPattern = ordered };
            var loss = TrainingStep.ForwardBackwardAsync(p, ws, view, given, given.Length, LocalCollective.Instance).GetAwaiter().GetResult();
            return (ws.Gradients.Tensors.Select(t => t.Values.ToArray()).ToArray(), ws.Labels.AsSpan(0, given.Length).ToArray(), loss.SumLoss);
        }

        var a = Step(rows, ordered: true);
        var b = Step(reversed, ordered: true);
        Assert.Equal(rows.OrderBy(r => ranks[r]).Select(r => raw.Labels[r]), a.Labels);
        Assert.Equal(a.Labels, b.Labels);
        Assert.Equal(a.Loss, b.Loss); // bit for bit: the order given does not matter
        for (int t = 0; t < a.Gradients.Length; t++) Assert.Equal(a.Gradients[t], b.Gradients[t]);

        var given = Step(rows, ordered: false);
        Assert.Equal(rows.Select(r => raw.Labels[r]), given.Labels);
        Assert.NotEqual(given.Labels, a.Labels); // (else the test would not reorder anything)
        Assert.Equal(given.Loss, a.Loss, 1e-5 * Math.Abs(given.Loss));
        for (int t = 0; t < a.Gradients.Length; t++) NumericAssert.Close($"gradient {t}", a.Gradients[t], given.Gradients[t], 1e-4);

        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Step([0, raw.Count], ordered: true));
        Assert.Contains($"row {raw.Count}", e.Message);
    }
}
