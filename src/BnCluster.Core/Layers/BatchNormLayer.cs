using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using BnCluster.Core.Model;
using BnCluster.Core.Training;

namespace BnCluster.Core.Layers;

/// <summary>
/// Batch norm over a global batch split across workers, in its phases (DESIGN §1):
/// local moments → (collective merge) → normalize with the global μ, σ²;
/// local backward sums → (collective sum) → input gradient from the global sums and global N;
/// running averages (coordinator, once per committed step); eval-mode normalize.
/// All matrices are [rows × Features] row-major.
/// </summary>
public sealed class BatchNormLayer(int features, float epsilon = 1e-5f, float momentum = 0.1f)
{
    public int Features { get; } = features;
    public float Epsilon { get; } = epsilon;
    public float Momentum { get; } = momentum;

    /// <summary>Two-pass (n, mean, M2) of this shard's rows of z (float64).</summary>
    public void LocalStats(ReadOnlySpan<float> z, int rows, BatchNormStats local) => local.ComputeFrom(z, rows);

    /// <summary>
    /// From the merged global moments (σ² biased = M2/N), per feature: μ and invStd = 1/sqrt(σ² + ε) in float64
    /// (for the backward, which cancels badly in float32 on tiny batches) and rounded to float32 (for the forward).
    /// </summary>
    public void PrepareNormalize(BatchNormStats global, Span<double> mean, Span<double> invStd, Span<float> meanF, Span<float> invStdF)
    {
        if (global.Count <= 0) throw new InvalidOperationException("batch norm over an empty global batch");
        for (int j = 0; j < Features; j++)
        {
            mean[j] = global.Mean[j];
            invStd[j] = 1.0 / Math.Sqrt(global.Variance(j) + Epsilon);
            meanF[j] = (float)mean[j];
            invStdF[j] = (float)invStd[j];
        }
    }

    /// <summary>y[n×C] = γ ⊙ z_norm + β with z_norm = (z − μ)·invStd (float32; the backward recomputes z_norm in float64).</summary>
    public void Normalize(ReadOnlySpan<float> z, ReadOnlySpan<float> mean, ReadOnlySpan<float> invStd,
        ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> y, int rows)
    {
        int c = Features;
        CheckRows(z.Length, y.Length, rows);
        CheckFeatures(mean.Length, invStd.Length, gamma.Length, beta.Length);
        for (int i = 0; i < rows; i++) NormalizeRow(z.Slice(i * c, c), mean, invStd, gamma, beta, y.Slice(i * c, c));
    }

    /// <summary>
    /// BN before the activation, fused: a[n×C] = g(γ ⊙ (z − μ)·invStd + β), one pass over z. The BN output itself is
    /// not stored (the backward needs only z and a); each row's activation runs while the row is still in L1.
    /// </summary>
    public void NormalizeActivate(Activation kind, ReadOnlySpan<float> z, ReadOnlySpan<float> mean, ReadOnlySpan<float> invStd,
        ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> a, int rows)
    {
        int c = Features;
        CheckRows(z.Length, a.Length, rows);
        CheckFeatures(mean.Length, invStd.Length, gamma.Length, beta.Length);
        for (int i = 0; i < rows; i++)
        {
            var aRow = a.Slice(i * c, c);
            NormalizeRow(z.Slice(i * c, c), mean, invStd, gamma, beta, aRow);
            ActivationLayer.Forward(kind, aRow, aRow);
        }
    }

    // y = ((z − μ)·invStd)·γ + β for one row, vectorized across features; the same float32 operations in the same
    // order as the scalar form (no fused multiply-add), so the result does not depend on the vector width.
    private static void NormalizeRow(ReadOnlySpan<float> z, ReadOnlySpan<float> mean, ReadOnlySpan<float> invStd,
        ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> y)
    {
        int c = z.Length, j = 0;
        ref float zr = ref MemoryMarshal.GetReference(z);
        ref float mr = ref MemoryMarshal.GetReference(mean);
        ref float sr = ref MemoryMarshal.GetReference(invStd);
        ref float gr = ref MemoryMarshal.GetReference(gamma);
        ref float br = ref MemoryMarshal.GetReference(beta);
        ref float yr = ref MemoryMarshal.GetReference(y);
        if (Vector256.IsHardwareAccelerated)
        {
            for (; j <= c - Vector256<float>.Count; j += Vector256<float>.Count)
            {
                nuint o = (nuint)j;
                var v = (Vector256.LoadUnsafe(ref zr, o) - Vector256.LoadUnsafe(ref mr, o)) * Vector256.LoadUnsafe(ref sr, o);
                (v * Vector256.LoadUnsafe(ref gr, o) + Vector256.LoadUnsafe(ref br, o)).StoreUnsafe(ref yr, o);
            }
        }
        for (; j < c; j++) y[j] = (z[j] - mean[j]) * invStd[j] * gamma[j] + beta[j];
    }

    /// <summary>
    /// This shard's Σdy and Σdy·z_norm per feature; summed over workers they are dβ and dγ. z is the BN input
    /// [n×C]; z_norm = (z − μ)·invStd is recomputed in float64 because dz below is a difference of nearly equal
    /// terms when N is small (N = 2 leaves only the ε part), and float32 z_norm would dominate its error.
    /// </summary>
    public void LocalGradSums(ReadOnlySpan<float> dy, ReadOnlySpan<float> z, ReadOnlySpan<double> mean, ReadOnlySpan<double> invStd,
        int rows, BatchNormGradSums local)
    {
        int c = Features;
        CheckRows(dy.Length, z.Length, rows);
        CheckFeatures(mean.Length, invStd.Length, local.Features, c);
        Array.Clear(local.SumDy);
        Array.Clear(local.SumDyXhat);
        for (int i = 0; i < rows; i++) AccumulateGradSumsRow(dy.Slice(i * c, c), z.Slice(i * c, c), mean, invStd, local.SumDy, local.SumDyXhat);
    }

    /// <summary>
    /// BN before the activation, backward pass 1 fused: dy[n×C] = da ⊙ g'(a) (kept for pass 2,
    /// <see cref="InputGradient"/>) and this shard's Σdy, Σdy·z_norm as in <see cref="LocalGradSums"/>,
    /// each row accumulated while it is still in L1.
    /// </summary>
    public void ActivationBackwardGradSums(Activation kind, ReadOnlySpan<float> a, ReadOnlySpan<float> da, ReadOnlySpan<float> z,
        ReadOnlySpan<double> mean, ReadOnlySpan<double> invStd, Span<float> dy, int rows, BatchNormGradSums local)
    {
        int c = Features;
        CheckRows(a.Length, da.Length, rows);
        CheckRows(z.Length, dy.Length, rows);
        CheckFeatures(mean.Length, invStd.Length, local.Features, c);
        Array.Clear(local.SumDy);
        Array.Clear(local.SumDyXhat);
        for (int i = 0; i < rows; i++)
        {
            var dyRow = dy.Slice(i * c, c);
            ActivationLayer.Backward(kind, a.Slice(i * c, c), da.Slice(i * c, c), dyRow);
            AccumulateGradSumsRow(dyRow, z.Slice(i * c, c), mean, invStd, local.SumDy, local.SumDyXhat);
        }
    }

    // sumDy += dy; sumDyXhat += dy·((z − μ)·invStd) for one row, in float64, vectorized across features (four
    // doubles per vector). Per feature the operations and the row order are those of the scalar loop, so the sums
    // are bit-identical to it.
    private static void AccumulateGradSumsRow(ReadOnlySpan<float> dy, ReadOnlySpan<float> z, ReadOnlySpan<double> mean,
        ReadOnlySpan<double> invStd, Span<double> sumDy, Span<double> sumDyXhat)
    {
        int c = dy.Length, j = 0;
        ref float dyr = ref MemoryMarshal.GetReference(dy);
        ref float zr = ref MemoryMarshal.GetReference(z);
        ref double mr = ref MemoryMarshal.GetReference(mean);
        ref double sr = ref MemoryMarshal.GetReference(invStd);
        ref double s1 = ref MemoryMarshal.GetReference(sumDy);
        ref double s2 = ref MemoryMarshal.GetReference(sumDyXhat);
        if (Vector256.IsHardwareAccelerated)
        {
            for (; j <= c - Vector256<float>.Count; j += Vector256<float>.Count)
            {
                nuint o = (nuint)j, o4 = o + 4;
                var (dyLo, dyHi) = Vector256.Widen(Vector256.LoadUnsafe(ref dyr, o));
                var (zLo, zHi) = Vector256.Widen(Vector256.LoadUnsafe(ref zr, o));
                var znLo = (zLo - Vector256.LoadUnsafe(ref mr, o)) * Vector256.LoadUnsafe(ref sr, o);
                var znHi = (zHi - Vector256.LoadUnsafe(ref mr, o4)) * Vector256.LoadUnsafe(ref sr, o4);
                (Vector256.LoadUnsafe(ref s1, o) + dyLo).StoreUnsafe(ref s1, o);
                (Vector256.LoadUnsafe(ref s1, o4) + dyHi).StoreUnsafe(ref s1, o4);
                (Vector256.LoadUnsafe(ref s2, o) + dyLo * znLo).StoreUnsafe(ref s2, o);
                (Vector256.LoadUnsafe(ref s2, o4) + dyHi * znHi).StoreUnsafe(ref s2, o4);
            }
        }
        for (; j < c; j++)
        {
            sumDy[j] += dy[j];
            sumDyXhat[j] += dy[j] * ((z[j] - mean[j]) * invStd[j]);
        }
    }

    /// <summary>
    /// dz[n×C] = γ·invStd · (dy − Σdy/N − z_norm · Σ(dy·z_norm)/N), with the sums over the global batch of N rows;
    /// evaluated in float64 per element (see <see cref="LocalGradSums"/>), stored as float32; vectorized across
    /// features with the scalar form's operations and order. <paramref name="scratch"/> holds 3×C doubles.
    /// </summary>
    public void InputGradient(ReadOnlySpan<float> dy, ReadOnlySpan<float> z, ReadOnlySpan<double> mean, ReadOnlySpan<double> invStd,
        BatchNormGradSums global, long globalCount, ReadOnlySpan<float> gamma, Span<float> dz, int rows, Span<double> scratch) =>
        InputGradient(null, dy, z, mean, invStd, global, globalCount, gamma, dz, rows, scratch);

    /// <summary>
    /// BN after the activation, backward pass 2 fused with the activation: BN's input is the activation output a,
    /// so dz_pre[n×C] = g'(a) ⊙ <see cref="InputGradient"/>(dy, a), each row taken through g' while it is in L1.
    /// </summary>
    public void InputGradientThroughActivation(Activation kind, ReadOnlySpan<float> dy, ReadOnlySpan<float> a, ReadOnlySpan<double> mean,
        ReadOnlySpan<double> invStd, BatchNormGradSums global, long globalCount, ReadOnlySpan<float> gamma, Span<float> dzPre, int rows,
        Span<double> scratch) =>
        InputGradient(kind, dy, a, mean, invStd, global, globalCount, gamma, dzPre, rows, scratch);

    private void InputGradient(Activation? activation, ReadOnlySpan<float> dy, ReadOnlySpan<float> z, ReadOnlySpan<double> mean,
        ReadOnlySpan<double> invStd, BatchNormGradSums global, long globalCount, ReadOnlySpan<float> gamma, Span<float> dz, int rows,
        Span<double> scratch)
    {
        int c = Features;
        CheckRows(dy.Length, z.Length, rows);
        CheckRows(dz.Length, dz.Length, rows);
        CheckFeatures(mean.Length, invStd.Length, gamma.Length, global.Features);
        if (scratch.Length < 3 * c) throw new ArgumentException($"scratch holds {scratch.Length} of {3 * c} doubles", nameof(scratch));
        var scale = scratch.Slice(0, c);          // γ·invStd
        var meanDy = scratch.Slice(c, c);         // Σdy/N
        var meanDyXhat = scratch.Slice(2 * c, c); // Σ(dy·z_norm)/N
        for (int j = 0; j < c; j++)
        {
            scale[j] = gamma[j] * invStd[j];
            meanDy[j] = global.SumDy[j] / globalCount;
            meanDyXhat[j] = global.SumDyXhat[j] / globalCount;
        }
        ref double mr = ref MemoryMarshal.GetReference(mean);
        ref double sr = ref MemoryMarshal.GetReference(invStd);
        ref double kr = ref MemoryMarshal.GetReference(scale);
        ref double ar = ref MemoryMarshal.GetReference(meanDy);
        ref double br = ref MemoryMarshal.GetReference(meanDyXhat);
        for (int i = 0; i < rows; i++)
        {
            var dyRow = dy.Slice(i * c, c);
            var zRow = z.Slice(i * c, c);
            var dzRow = dz.Slice(i * c, c);
            ref float dyr = ref MemoryMarshal.GetReference(dyRow);
            ref float zr = ref MemoryMarshal.GetReference(zRow);
            ref float dzr = ref MemoryMarshal.GetReference(dzRow);
            int j = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                for (; j <= c - Vector256<float>.Count; j += Vector256<float>.Count)
                {
                    nuint o = (nuint)j, o4 = o + 4;
                    var (dyLo, dyHi) = Vector256.Widen(Vector256.LoadUnsafe(ref dyr, o));
                    var (zLo, zHi) = Vector256.Widen(Vector256.LoadUnsafe(ref zr, o));
                    var znLo = (zLo - Vector256.LoadUnsafe(ref mr, o)) * Vector256.LoadUnsafe(ref sr, o);
                    var znHi = (zHi - Vector256.LoadUnsafe(ref mr, o4)) * Vector256.LoadUnsafe(ref sr, o4);
                    var dzLo = Vector256.LoadUnsafe(ref kr, o) * (dyLo - Vector256.LoadUnsafe(ref ar, o) - znLo * Vector256.LoadUnsafe(ref br, o));
                    var dzHi = Vector256.LoadUnsafe(ref kr, o4) * (dyHi - Vector256.LoadUnsafe(ref ar, o4) - znHi * Vector256.LoadUnsafe(ref br, o4));
                    Vector256.Narrow(dzLo, dzHi).StoreUnsafe(ref dzr, o);
                }
            }
            for (; j < c; j++)
            {
                double zn = (zRow[j] - mean[j]) * invStd[j];
                dzRow[j] = (float)(scale[j] * (dyRow[j] - meanDy[j] - zn * meanDyXhat[j]));
            }
            if (activation is { } kind) ActivationLayer.Backward(kind, zRow, dzRow, dzRow);
        }
    }

    // The vector loops read through unchecked references: check every length once per call.
    private void CheckRows(int lengthA, int lengthB, int rows)
    {
        long need = (long)rows * Features;
        if (rows < 0 || lengthA < need || lengthB < need)
            throw new ArgumentException($"batch norm over {rows} rows of {Features} features needs {need} values, got {lengthA} and {lengthB}");
    }

    private void CheckFeatures(int a, int b, int c, int d)
    {
        if (a < Features || b < Features || c < Features || d < Features)
            throw new ArgumentException($"batch norm per-feature vectors hold {a}, {b}, {c}, {d} values, need {Features}");
    }

    /// <summary>dγ = Σ(dy·z_norm), dβ = Σdy over the global batch, rounded to float32.</summary>
    public static void ParameterGradients(BatchNormGradSums global, Span<float> dGamma, Span<float> dBeta)
    {
        for (int j = 0; j < global.Features; j++)
        {
            dGamma[j] = (float)global.SumDyXhat[j];
            dBeta[j] = (float)global.SumDy[j];
        }
    }

    /// <summary>
    /// r_μ ← (1−m) r_μ + m μ;  r_σ² ← (1−m) r_σ² + m σ² N/(N−1) (unbiased, like BatchNorm1d).
    /// Once per committed step, with the global moments of that step. N = 1 uses the biased σ² (0).
    /// </summary>
    public void UpdateRunning(Span<float> runningMean, Span<float> runningVar, BatchNormStats global)
    {
        double m = Momentum;
        long n = global.Count;
        double unbias = n > 1 ? (double)n / (n - 1) : 1.0;
        for (int j = 0; j < Features; j++)
        {
            runningMean[j] = (float)((1 - m) * runningMean[j] + m * global.Mean[j]);
            runningVar[j] = (float)((1 - m) * runningVar[j] + m * global.Variance(j) * unbias);
        }
    }

    /// <summary>Eval mode: y[n×C] = γ ⊙ (z − r_μ)/sqrt(r_σ² + ε) + β. <paramref name="scratch"/> holds C floats.</summary>
    public void EvalForward(ReadOnlySpan<float> z, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta,
        ReadOnlySpan<float> runningMean, ReadOnlySpan<float> runningVar, Span<float> y, int rows, Span<float> scratch)
    {
        int c = Features;
        var scale = scratch.Slice(0, c);
        for (int j = 0; j < c; j++) scale[j] = (float)(gamma[j] / Math.Sqrt(runningVar[j] + (double)Epsilon));
        for (int i = 0; i < rows; i++)
        {
            var yRow = y.Slice(i * c, c);
            TensorPrimitives.Subtract(z.Slice(i * c, c), runningMean, yRow);
            TensorPrimitives.MultiplyAdd(yRow, scale, beta, yRow);
        }
    }
}
