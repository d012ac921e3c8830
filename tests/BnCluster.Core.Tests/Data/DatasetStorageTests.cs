using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Core.Tests.Data;

/// <summary>
/// Byte storage and normalized views must yield, element for element, the float32 values of the old path: a float
/// copy of b / 255f normalized in place by <see cref="InputNormalizer.ApplyInPlace"/>.
/// </summary>
public sealed class DatasetStorageTests
{
    private static readonly string[] Classes = ["a", "b", "c"];

    // 41 rows of 797 features: 24 full 32-byte vectors per row and a 29-value scalar tail, rows not vector-aligned.
    private const int Rows = 41, Features = 797;

    private static (byte[] Codes, int[] Labels) RandomBytes(int seed)
    {
        var rng = new Random(seed);
        var codes = new byte[Rows * Features];
        rng.NextBytes(codes);
        for (int i = 0; i < codes.Length; i += 5) codes[i] = 0; // images are mostly zeros
        for (int j = 0; j < Features; j += 97)
            for (int i = 0; i < Rows; i++) codes[i * Features + j] = 200; // constant features: centred only
        var labels = new int[Rows];
        for (int i = 0; i < Rows; i++) labels[i] = rng.Next(Classes.Length);
        return (codes, labels);
    }

    private static float[] OldFloatValues(byte[] codes)
    {
        var table = new float[256];
        for (int b = 0; b < 256; b++) table[b] = b / 255f;
        return codes.Select(b => table[b]).ToArray();
    }

    private static void AssertBitsEqual(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"value {i} (row {i / Features}, feature {i % Features} for a dataset matrix): expected {expected[i]:R}, got {actual[i]:R}");
    }

    [Fact]
    public void ZeroOffsetsAreTheBitsOfAStoredZero()
    {
        // Every 5th byte is 0, so both views qualify; a stored 0 must read back as exactly ZeroOffsets[j].
        var (codes, labels) = RandomBytes(3);
        var bytes = new Dataset("codes", codes, 255f, labels, Features, Classes);
        var floats = new Dataset("floats", OldFloatValues(codes), labels, Features, Classes);
        Assert.Null(bytes.ZeroOffsets); // not normalized: a stored 0 reads as 0
        foreach (var raw in new[] { bytes, floats })
        {
            var view = InputNormalizer.Fit(raw).Apply(raw);
            var zeros = view.ZeroOffsets ?? throw new Xunit.Sdk.XunitException($"{raw.Name}: no ZeroOffsets");
            int checkedZeros = 0;
            for (int r = 0; r < Rows; r++)
            {
                var row = view.RowToArray(r);
                for (int j = 0; j < Features; j++)
                {
                    if (codes[r * Features + j] != 0) continue;
                    Assert.Equal(BitConverter.SingleToInt32Bits(zeros[j]), BitConverter.SingleToInt32Bits(row[j]));
                    checkedZeros++;
                }
            }
            Assert.True(checkedZeros > Rows * Features / 6, $"{checkedZeros} zeros checked");
            // The constant features store no 0: no offset there (it would only add rounding).
            for (int j = 0; j < Features; j += 97) Assert.Equal(0f, zeros[j]);
        }

        // Dense data (no zero at all) gets none: centring would cost without saving anything.
        var dense = codes.Select(b => b == 0 ? (byte)1 : b).ToArray();
        var denseRaw = new Dataset("dense", dense, 255f, labels, Features, Classes);
        Assert.Null(InputNormalizer.Fit(denseRaw).Apply(denseRaw).ZeroOffsets);
    }

    [Fact]
    public void EveryByteDecodesToTheExactQuotient()
    {
        // 256 codes in a row of 300 (vector part and tail), each must equal the scalar b / 255f.
        var codes = new byte[300];
        for (int i = 0; i < codes.Length; i++) codes[i] = (byte)(i * 7 % 256);
        var data = new Dataset("codes", codes, 255f, [0], codes.Length, Classes);
        AssertBitsEqual(OldFloatValues(codes), data.RowToArray(0));
    }

    [Fact]
    public void NormalizedByteViewMatchesTheNormalizedFloatCopyBitForBit()
    {
        var (codes, labels) = RandomBytes(seed: 5);
        var bytes = new Dataset("bytes", codes, 255f, labels, Features, Classes);
        var floats = new Dataset("floats", OldFloatValues(codes), labels, Features, Classes);

        // Statistics from byte rows are the same bits as from the float matrix (same operations, same order).
        var statsBytes = InputNormalizer.SliceStats(bytes, 3, 30);
        var statsFloats = new BatchNormStats(Features);
        statsFloats.ComputeFrom(floats.Features.AsSpan(3 * Features, 30 * Features), 30);
        Assert.Equal(statsFloats.Count, statsBytes.Count);
        Assert.Equal(statsFloats.Mean, statsBytes.Mean);
        Assert.Equal(statsFloats.M2, statsBytes.M2);

        var normalizer = InputNormalizer.Fit(bytes);
        var expected = (float[])floats.Features.Clone();
        normalizer.ApplyInPlace(expected);

        var view = normalizer.Apply(bytes);
        Assert.True(view.IsNormalized);
        Assert.True(view.StoresBytes);
        var all = new float[Rows * Features];
        view.CopyRows(0, Rows, all);
        AssertBitsEqual(expected, all);

        // The gather of a step: rows in plan order, repeated rows allowed.
        int[] order = [40, 0, 17, 17, 3, 39];
        var gathered = new float[order.Length * Features + 5];
        view.GatherRows(order, gathered);
        for (int i = 0; i < order.Length; i++)
            AssertBitsEqual(expected.AsSpan(order[i] * Features, Features), gathered.AsSpan(i * Features, Features));

        // A normalized float view gives the same values as well.
        var floatView = normalizer.Apply(floats);
        Array.Clear(all);
        floatView.CopyRows(0, Rows, all);
        AssertBitsEqual(expected, all);
        AssertBitsEqual(OldFloatValues(codes), floats.Features); // the float source is not changed
    }

    [Fact]
    public void GatherMinusOffsetsIsTheSameBitsAsSubtractingAfter()
    {
        // Every storage (bytes, floats; raw, normalized), more rows than the gather fetches ahead, repeated and far apart.
        var (codes, labels) = RandomBytes(5);
        var bytes = new Dataset("codes", codes, 255f, labels, Features, Classes);
        var floats = new Dataset("floats", OldFloatValues(codes), labels, Features, Classes);
        int[] order = [40, 0, 17, 17, 3, 39, 1, 38, 2, 20, 0];
        var minus = new float[Features];
        for (int j = 0; j < Features; j++) minus[j] = (j % 3 - 1) * 0.37f;
        foreach (var data in new[] { bytes, floats, InputNormalizer.Fit(bytes).Apply(bytes), InputNormalizer.Fit(floats).Apply(floats) })
        {
            var expected = new float[order.Length * Features];
            for (int i = 0; i < order.Length; i++)
            {
                var row = expected.AsSpan(i * Features, Features);
                data.CopyRow(order[i], row);
                System.Numerics.Tensors.TensorPrimitives.Subtract(row, minus, row);
            }
            var gathered = new float[order.Length * Features];
            data.GatherRows(order, gathered, minus);
            AssertBitsEqual(expected, gathered);
        }
        var wrong = Assert.Throws<ArgumentException>(() => bytes.GatherRows(order, new float[order.Length * Features], new float[Features - 1]));
        Assert.Contains($"{Features - 1} values to subtract from rows of {Features} features", wrong.Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TrainingStepsOnAByteViewMatchTheNormalizedCopyAndAllocateNothing(bool sparse)
    {
        // Sparse: the view has ZeroOffsets, so its steps centre the first layer's input (the copy's do not) and the
        // two agree to rounding; dense (no stored 0): the same operations, bit for bit.
        var (codes, labels) = RandomBytes(seed: 7);
        if (!sparse) codes = codes.Select(b => b == 0 ? (byte)1 : b).ToArray();
        var bytes = new Dataset("bytes", codes, 255f, labels, Features, Classes);
        var normalizer = InputNormalizer.Fit(bytes);
        var copy = OldFloatValues(codes);
        normalizer.ApplyInPlace(copy);
        var oldPath = new Dataset("copy", copy, labels, Features, Classes);
        var view = normalizer.Apply(bytes);
        Assert.Equal(sparse, view.ZeroOffsets is not null);

        var spec = new NetworkSpec(Features, [16, 8], Classes.Length, Activation.Relu, BatchNormPlacement.Before);
        using var matMul = new MatMul();
        (Parameters P, Workspace Ws, Optimizer Opt) Model()
        {
            var p = Parameters.Initialize(spec, 3);
            return (p, new Workspace(p, 16, matMul), new Optimizer(new OptimizerSettings(OptimizerKind.Adam, 0.01f), p));
        }
        var a = Model();
        var b = Model();
        var plan = new EpochPlan(Rows, 16, 1, 1);
        void Step((Parameters P, Workspace Ws, Optimizer Opt) m, Dataset data, int batch)
        {
            var rows = plan.Batch(batch % plan.BatchCount);
            TrainingStep.ForwardBackwardAsync(m.P, m.Ws, data, rows, rows.Length, LocalCollective.Instance).GetAwaiter().GetResult();
            m.Opt.Apply(m.P, m.Ws.Gradients);
            TrainingStep.UpdateRunningStats(m.P, m.Ws);
        }

        for (int i = 0; i < 4; i++)
        {
            Step(a, oldPath, i);
            Step(b, view, i);
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 4; i < 10; i++) Step(b, view, i);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        for (int i = 4; i < 10; i++) Step(a, oldPath, i);

        Assert.NotEqual(Parameters.Initialize(spec, 3).WOut, b.P.WOut); // the steps did train
        void Same(string what, float[] expected, float[] actual)
        {
            if (sparse) Numerics.NumericAssert.Close(what, actual, expected, 1e-4);
            else AssertBitsEqual(expected, actual);
        }
        for (int t = 0; t < a.P.Trainable.Count; t++) Same($"trainable {t}", a.P.Trainable[t].Values, b.P.Trainable[t].Values);
        for (int l = 0; l < spec.Hidden.Count; l++)
        {
            Same($"running mean {l}", a.P.RunningMean[l]!, b.P.RunningMean[l]!);
            Same($"running variance {l}", a.P.RunningVar[l]!, b.P.RunningVar[l]!);
        }
    }

    [Fact]
    public void MisuseIsRefusedWithTheDatasetNamed()
    {
        var (codes, labels) = RandomBytes(seed: 6);
        var bytes = new Dataset("pixels", codes, 255f, labels, Features, Classes);
        var noArray = Assert.Throws<InvalidOperationException>(() => bytes.Features);
        Assert.Contains("'pixels' stores bytes", noArray.Message);

        var view = InputNormalizer.Fit(bytes).Apply(bytes);
        Assert.Contains("'pixels' is a normalized view", Assert.Throws<InvalidOperationException>(() => view.Features).Message);
        Assert.Contains("already a normalized view", Assert.Throws<InvalidOperationException>(() => view.WithNormalization(new float[Features], new float[Features])).Message);
        Assert.Throws<ArgumentException>(() => bytes.WithNormalization(new float[3], new float[3]));

        var destination = new float[2 * Features];
        var outside = Assert.Throws<ArgumentOutOfRangeException>(() => view.GatherRows([1, Rows], destination));
        Assert.Contains($"row {Rows} is outside dataset 'pixels' of {Rows} rows", outside.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => view.GatherRows([-1], destination));
        Assert.Contains("destination holds", Assert.Throws<ArgumentException>(() => view.GatherRows([1, 2, 3], destination)).Message);
        Assert.Contains($"rows [{Rows - 1}, {Rows + 1})", Assert.Throws<ArgumentOutOfRangeException>(() => view.CopyRows(Rows - 1, 2, destination)).Message);
        Assert.Throws<ArgumentException>(() => new Dataset("short", codes.AsMemory(1), 255f, labels, Features, Classes));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Dataset("zero", codes, 0f, labels, Features, Classes));
    }
}
