using System.Numerics.Tensors;
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
        for (int i = 0; i < rows; i++)
        {
            var yRow = y.Slice(i * c, c);
            TensorPrimitives.Subtract(z.Slice(i * c, c), mean, yRow);
            TensorPrimitives.Multiply(yRow, invStd, yRow);
            TensorPrimitives.MultiplyAdd(yRow, gamma, beta, yRow);
        }
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
        var sumDy = local.SumDy;
        var sumDyXhat = local.SumDyXhat;
        Array.Clear(sumDy);
        Array.Clear(sumDyXhat);
        for (int i = 0; i < rows; i++)
        {
            var dyRow = dy.Slice(i * c, c);
            var zRow = z.Slice(i * c, c);
            for (int j = 0; j < c; j++)
            {
                sumDy[j] += dyRow[j];
                sumDyXhat[j] += dyRow[j] * ((zRow[j] - mean[j]) * invStd[j]);
            }
        }
    }

    /// <summary>
    /// dz[n×C] = γ·invStd · (dy − Σdy/N − z_norm · Σ(dy·z_norm)/N), with the sums over the global batch of N rows;
    /// evaluated in float64 per element (see <see cref="LocalGradSums"/>), stored as float32.
    /// <paramref name="scratch"/> holds 3×C doubles.
    /// </summary>
    public void InputGradient(ReadOnlySpan<float> dy, ReadOnlySpan<float> z, ReadOnlySpan<double> mean, ReadOnlySpan<double> invStd,
        BatchNormGradSums global, long globalCount, ReadOnlySpan<float> gamma, Span<float> dz, int rows, Span<double> scratch)
    {
        int c = Features;
        var scale = scratch.Slice(0, c);          // γ·invStd
        var meanDy = scratch.Slice(c, c);         // Σdy/N
        var meanDyXhat = scratch.Slice(2 * c, c); // Σ(dy·z_norm)/N
        for (int j = 0; j < c; j++)
        {
            scale[j] = gamma[j] * invStd[j];
            meanDy[j] = global.SumDy[j] / globalCount;
            meanDyXhat[j] = global.SumDyXhat[j] / globalCount;
        }
        for (int i = 0; i < rows; i++)
        {
            var dyRow = dy.Slice(i * c, c);
            var zRow = z.Slice(i * c, c);
            var dzRow = dz.Slice(i * c, c);
            for (int j = 0; j < c; j++)
            {
                double zn = (zRow[j] - mean[j]) * invStd[j];
                dzRow[j] = (float)(scale[j] * (dyRow[j] - meanDy[j] - zn * meanDyXhat[j]));
            }
        }
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
