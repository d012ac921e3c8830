using BnCluster.Core.Kernels;
using BnCluster.Core.Layers;
using BnCluster.Core.Model;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Core.Tests.Numerics;

/// <summary>
/// The fused, vectorized batch-norm and activation kernels against plain scalar loops of the documented formulas.
/// They use the same operations in the same order per element, so the results must be bit-identical — for a
/// feature count that is not a multiple of the vector width (the scalar tail) and one that is.
/// </summary>
public sealed class FusedBatchNormTests
{
    private const int Rows = 7;

    public static TheoryData<Activation, int> Cases()
    {
        var data = new TheoryData<Activation, int>();
        foreach (var kind in new[] { Activation.Relu, Activation.Tanh, Activation.Sigmoid })
            foreach (int c in new[] { 13, 32, 40 }) // (AVX-512 sums 16 features at a time: 40 is blocks and a tail)
                data.Add(kind, c);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void NormalizeActivateEqualsNormalizeThenActivation(Activation kind, int c)
    {
        var rng = new Random(11 + c);
        var bn = new BatchNormLayer(c);
        float[] z = Rand(rng, Rows * c, 3f, 0.5f), mean = Rand(rng, c, 1f, 0.5f), invStd = Rand(rng, c, 1f, 1.5f),
            gamma = Rand(rng, c, 1f, 1f), beta = Rand(rng, c, 0.5f, 0f);
        var fused = new float[Rows * c];
        bn.NormalizeActivate(kind, z, mean, invStd, gamma, beta, fused, Rows);

        var y = new float[Rows * c];
        for (int i = 0; i < Rows; i++)
            for (int j = 0; j < c; j++)
                y[i * c + j] = (z[i * c + j] - mean[j]) * invStd[j] * gamma[j] + beta[j];
        var normalized = new float[Rows * c];
        bn.Normalize(z, mean, invStd, gamma, beta, normalized, Rows);
        Assert.Equal(y, normalized);
        var expected = new float[Rows * c];
        ActivationLayer.Forward(kind, y, expected);
        Assert.Equal(expected, fused);
        if (kind == Activation.Relu) Assert.Contains(fused, v => v == 0f); // the data does reach the clamp
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ActivationBackwardGradSumsEqualsScalarLoops(Activation kind, int c)
    {
        var rng = new Random(23 + c);
        var bn = new BatchNormLayer(c);
        float[] z = Rand(rng, Rows * c, 3f, 0.5f), pre = Rand(rng, Rows * c, 2f, 0f), da = Rand(rng, Rows * c, 1f, 0f);
        var a = new float[Rows * c];
        ActivationLayer.Forward(kind, pre, a);
        double[] mean = new double[c], invStd = new double[c];
        for (int j = 0; j < c; j++) { mean[j] = rng.NextDouble() - 0.5; invStd[j] = 0.5 + rng.NextDouble(); }

        var dy = new float[Rows * c];
        var sums = new BatchNormGradSums(c);
        sums.SumDy[0] = 99; // stale values must be cleared
        bn.ActivationBackwardGradSums(kind, a, da, z, mean, invStd, dy, Rows, sums);

        var expectedDy = new float[Rows * c];
        double[] sumDy = new double[c], sumDyXhat = new double[c];
        for (int i = 0; i < Rows; i++)
            for (int j = 0; j < c; j++)
            {
                int e = i * c + j;
                expectedDy[e] = kind switch
                {
                    Activation.Relu => a[e] > 0f ? da[e] : 0f,
                    Activation.Tanh => da[e] * (1f - a[e] * a[e]),
                    _ => da[e] * a[e] * (1f - a[e]),
                };
                sumDy[j] += expectedDy[e];
                sumDyXhat[j] += expectedDy[e] * ((z[e] - mean[j]) * invStd[j]);
            }
        Assert.Equal(expectedDy, dy);
        Assert.Equal(sumDy, sums.SumDy);
        Assert.Equal(sumDyXhat, sums.SumDyXhat);

        var unfused = new BatchNormGradSums(c);
        bn.LocalGradSums(dy, z, mean, invStd, Rows, unfused);
        Assert.Equal(sumDy, unfused.SumDy);
        Assert.Equal(sumDyXhat, unfused.SumDyXhat);
    }

    /// <summary>Below <see cref="BatchNormLayer.Float32InputGradientMinBatch"/> the float64 formula, from it on the float32 one
    /// (the per-feature constants rounded once), each bit for bit.</summary>
    [Theory]
    [InlineData(13, 20)]
    [InlineData(32, 20)]
    [InlineData(13, 256)]
    [InlineData(32, 64)]
    public void InputGradientEqualsScalarFormula(int c, long n)
    {
        var rng = new Random(5 + c);
        var bn = new BatchNormLayer(c);
        float[] z = Rand(rng, Rows * c, 3f, 0.5f), dy = Rand(rng, Rows * c, 1f, 0f), gamma = Rand(rng, c, 1f, 1f);
        double[] mean = new double[c], invStd = new double[c], sumDy = new double[c], sumDyXhat = new double[c];
        for (int j = 0; j < c; j++)
        {
            mean[j] = rng.NextDouble() - 0.5; invStd[j] = 0.5 + rng.NextDouble();
            sumDy[j] = rng.NextDouble() - 0.5; sumDyXhat[j] = rng.NextDouble() - 0.5;
        }
        var dz = new float[Rows * c];
        bn.InputGradient(dy, z, mean, invStd, new BatchNormGradSums(sumDy, sumDyXhat), n, gamma, dz, Rows, new double[3 * c]);

        var expected = new float[Rows * c];
        for (int i = 0; i < Rows; i++)
            for (int j = 0; j < c; j++)
            {
                int e = i * c + j;
                if (n < BatchNormLayer.Float32InputGradientMinBatch)
                {
                    double zn = (z[e] - mean[j]) * invStd[j];
                    expected[e] = (float)(gamma[j] * invStd[j] * (dy[e] - sumDy[j] / n - zn * (sumDyXhat[j] / n)));
                }
                else
                {
                    float zn = (z[e] - (float)mean[j]) * (float)invStd[j];
                    expected[e] = (float)(gamma[j] * invStd[j]) * (dy[e] - (float)(sumDy[j] / n) - zn * (float)(sumDyXhat[j] / n));
                }
            }
        Assert.Equal(expected, dz);
        // Either way within float32 rounding of the exact value (relative to the terms' size).
        for (int e = 0; e < dz.Length; e++)
        {
            int j = e % c;
            double zn = (z[e] - mean[j]) * invStd[j], scale = Math.Abs(gamma[j] * invStd[j]);
            double exact = gamma[j] * invStd[j] * (dy[e] - sumDy[j] / n - zn * (sumDyXhat[j] / n));
            Assert.True(Math.Abs(dz[e] - exact) <= 1e-6 * scale * (Math.Abs(dy[e]) + Math.Abs(sumDy[j] / n) + Math.Abs(zn * sumDyXhat[j] / n)) + 1e-30,
                $"dz[{e}] = {dz[e]}, exact {exact}");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void InputGradientThroughActivationEqualsInputGradientThenActivation(Activation kind, int c)
    {
        InputGradientThroughActivationCase(kind, c, 20);
        InputGradientThroughActivationCase(kind, c, 256); // the float32 form
    }

    private static void InputGradientThroughActivationCase(Activation kind, int c, long n)
    {
        var rng = new Random(41 + c);
        var bn = new BatchNormLayer(c);
        float[] pre = Rand(rng, Rows * c, 2f, 0f), dy = Rand(rng, Rows * c, 1f, 0f), gamma = Rand(rng, c, 1f, 1f);
        var a = new float[Rows * c];
        ActivationLayer.Forward(kind, pre, a);
        double[] mean = new double[c], invStd = new double[c], sumDy = new double[c], sumDyXhat = new double[c];
        for (int j = 0; j < c; j++)
        {
            mean[j] = rng.NextDouble() - 0.5; invStd[j] = 0.5 + rng.NextDouble();
            sumDy[j] = rng.NextDouble() - 0.5; sumDyXhat[j] = rng.NextDouble() - 0.5;
        }
        var sums = new BatchNormGradSums(sumDy, sumDyXhat);
        var fused = new float[Rows * c];
        bn.InputGradientThroughActivation(kind, dy, a, mean, invStd, sums, n, gamma, fused, Rows, new double[3 * c]);

        var dBnIn = new float[Rows * c];
        bn.InputGradient(dy, a, mean, invStd, sums, n, gamma, dBnIn, Rows, new double[3 * c]);
        var expected = new float[Rows * c];
        ActivationLayer.Backward(kind, a, dBnIn, expected);
        Assert.Equal(expected, fused);
        Assert.NotEqual(dBnIn, fused); // g' did change something
    }

    [Theory]
    [InlineData(13)]
    [InlineData(32)]
    public void LocalMomentsEqualScalarTwoPass(int c)
    {
        var rng = new Random(31 + c);
        var z = Rand(rng, Rows * c, 0.01f, 1000f); // |μ| ≫ σ: where a one-pass Σz² form would cancel
        var stats = new BatchNormStats(c);
        stats.M2[0] = 99; // stale values must be cleared
        stats.ComputeFrom(z, Rows);

        var (mean, m2) = ScalarTwoPass(z, Rows, c);
        Assert.Equal(Rows, stats.Count);
        Assert.Equal(mean, stats.Mean);
        Assert.Equal(m2, stats.M2);
        Assert.All(stats.M2, v => Assert.True(v > 0));
    }

    /// <summary>The layer's moments and backward sums split by feature columns over 1 and 2 threads (shares of 16
    /// features, blocks of 16 summed in registers on AVX-512, tails row by row): the scalar loops' bits.</summary>
    [Theory]
    [InlineData(1, 13)]
    [InlineData(1, 40)]
    [InlineData(2, 200)]
    [InlineData(2, 512)]
    public void ColumnSplitSumsEqualScalarLoops(int threads, int c)
    {
        const int rows = 37;
        var rng = new Random(41 + c);
        var bn = new BatchNormLayer(c);
        using var mm = new MatMul(threads, KernelPaths.Best, parallelThreshold: 0, rangeThreshold: 0);
        float[] z = Rand(rng, rows * c, 0.01f, 1000f), dy = Rand(rng, rows * c, 1f, 0f);
        var stats = new BatchNormStats(c);
        stats.Mean[0] = stats.M2[1] = 99; // stale values must be overwritten
        bn.LocalStats(z, rows, stats, mm);
        var (mean, m2) = ScalarTwoPass(z, rows, c);
        Assert.Equal(rows, stats.Count);
        Assert.Equal(mean, stats.Mean);
        Assert.Equal(m2, stats.M2);

        var invStd = new double[c];
        for (int j = 0; j < c; j++) invStd[j] = 1 / Math.Sqrt(m2[j] / rows + 1e-5);
        var sums = new BatchNormGradSums(c);
        sums.SumDyXhat[c - 1] = 99;
        bn.LocalGradSums(dy, z, mean, invStd, rows, sums, mm);
        double[] sumDy = new double[c], sumDyXhat = new double[c];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < c; j++)
            {
                sumDy[j] += dy[i * c + j];
                sumDyXhat[j] += dy[i * c + j] * ((z[i * c + j] - mean[j]) * invStd[j]);
            }
        Assert.Equal(sumDy, sums.SumDy);
        Assert.Equal(sumDyXhat, sums.SumDyXhat);
    }

    /// <summary>db = Σ_rows dZ (float32, rows in order; 64 columns at a time in registers on AVX-512): the scalar
    /// loop's bits, for widths of whole blocks, blocks and a tail, and a tail only.</summary>
    [Theory]
    [InlineData(1, 10)]
    [InlineData(1, 100)]
    [InlineData(2, 256)]
    [InlineData(2, 300)]
    public void BiasGradientEqualsScalarSums(int threads, int outputs)
    {
        const int rows = 37, inputs = 5;
        var rng = new Random(7 + outputs);
        var layer = new DenseLayer(inputs, outputs, hasBias: true);
        using var mm = new MatMul(threads, KernelPaths.Best, parallelThreshold: 0, rangeThreshold: 0);
        float[] dz = Rand(rng, rows * outputs, 1f, 0f), a = Rand(rng, rows * inputs, 1f, 0f);
        float[] dw = new float[outputs * inputs], db = new float[outputs];
        db[0] = 99;
        layer.BackwardWeights(mm, dz, a, dw, db, rows, inputIsData: false);
        var expected = new float[outputs];
        for (int i = 0; i < rows; i++) for (int o = 0; o < outputs; o++) expected[o] += dz[i * outputs + o];
        Assert.Equal(expected, db);
    }

    [Fact]
    public void ShortBuffersAreRejectedBeforeAnyUncheckedRead()
    {
        var bn = new BatchNormLayer(8);
        var ex = Assert.Throws<ArgumentException>(() =>
            bn.NormalizeActivate(Activation.Relu, new float[15], new float[8], new float[8], new float[8], new float[8], new float[16], 2));
        Assert.Contains("2 rows of 8 features", ex.Message);
        Assert.Throws<ArgumentException>(() =>
            bn.LocalGradSums(new float[16], new float[16], new double[7], new double[8], 2, new BatchNormGradSums(8)));
        Assert.Throws<ArgumentException>(() => ActivationLayer.Backward(Activation.Relu, new float[9], new float[8], new float[9]));
    }

    // Per feature Σz/n, then Σ(z − μ)², in float64 and row order: the documented two-pass moments.
    private static (double[] Mean, double[] M2) ScalarTwoPass(float[] z, int rows, int c)
    {
        double[] mean = new double[c], m2 = new double[c];
        for (int i = 0; i < rows; i++) for (int j = 0; j < c; j++) mean[j] += z[i * c + j];
        for (int j = 0; j < c; j++) mean[j] /= rows;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < c; j++)
            {
                double d = z[i * c + j] - mean[j];
                m2[j] += d * d;
            }
        return (mean, m2);
    }

    private static float[] Rand(Random rng, int length, float spread, float offset)
    {
        var x = new float[length];
        for (int i = 0; i < length; i++) x[i] = (float)((rng.NextDouble() - 0.5) * 2 * spread + offset);
        return x;
    }
}
