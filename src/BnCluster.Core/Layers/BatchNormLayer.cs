using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Training;

namespace BnCluster.Core.Layers;

/// <summary>
/// Batch norm over a global batch split across workers, in its phases (docs/design.md, "The math"):
/// local moments → (collective merge) → normalize with the global μ, σ²;
/// local backward sums → (collective sum) → input gradient from the global sums and global N;
/// running averages (coordinator, once per committed step); eval-mode normalize.
/// All matrices are [rows × Features] row-major.
/// <para>The training passes take an optional <see cref="MatMul"/> whose threads run them split
/// (<see cref="MatMul.ParallelFor{T}"/>): the passes with per-feature sums by feature columns, so every sum keeps its
/// row order; the element-wise passes by rows. Every element keeps its operations, so the results are bit-identical
/// for any number of threads. Null runs on the caller.</para>
/// </summary>
public sealed class BatchNormLayer(int features, float epsilon = 1e-5f, float momentum = 0.1f)
{
    public int Features { get; } = features;
    public float Epsilon { get; } = epsilon;
    public float Momentum { get; } = momentum;

    /// <summary>
    /// Two-pass (n, mean, M2) of this shard's rows of z[n×C] (float64): mean_j = Σ_i z_ij / n, then
    /// M2_j = Σ_i (z_ij − mean_j)², rows in order. The same operations and order as
    /// <see cref="BatchNormStats.ComputeFrom"/>, per feature column range.
    /// </summary>
    public unsafe void LocalStats(ReadOnlySpan<float> z, int rows, BatchNormStats local, MatMul? parallel = null)
    {
        int c = Features;
        if (parallel is null || local.Features != c)
        {
            local.ComputeFrom(z, rows);
            return;
        }
        CheckRows(z.Length, z.Length, rows);
        local.Count = rows;
        fixed (float* pz = z) fixed (double* pm = local.Mean) fixed (double* pm2 = local.M2)
        {
            var args = new StatsArgs { Z = pz, Mean = pm, M2 = pm2, Rows = rows, C = c };
            ForColumns(parallel, c, rows, ref args, &StatsColumns);
        }
    }

    private unsafe struct StatsArgs
    {
        public float* Z;
        public double* Mean, M2;
        public int Rows, C;
    }

    // Feature columns [j0, j1): the two passes over the rows in order; in blocks of 16 features with the sums in
    // registers where AVX-512 runs the pass, the rest row by row.
    private static unsafe void StatsColumns(ref StatsArgs a, int j0, int j1)
    {
        int j = j0;
        if (Vector512.IsHardwareAccelerated && a.Rows > 0)
            for (; j + 16 <= j1; j += 16) StatsBlock16(ref a, j);
        if (j < j1) StatsRows(ref a, j, j1);
    }

    /// <summary>
    /// Features [j, j + 16) of <see cref="StatsColumns"/> (rows ≥ 1), the sums in float64 registers: per feature the
    /// operations and row order of <see cref="BatchNormStats.AddRow"/>, the division by the row count and
    /// <see cref="BatchNormStats.AddSquaredDeviationsRow"/>, so the same bits. The block's 64 bytes per row are read
    /// twice, the second time from L1 (256 rows: 16 KB). (256×512: 36 → 31 µs on 1 thread, 22 → 19 µs on 2.)
    /// </summary>
    private static unsafe void StatsBlock16(ref StatsArgs a, int j)
    {
        Vector512<double> sum0 = default, sum1 = default;
        for (int i = 0; i < a.Rows; i++)
        {
            var (lo, hi) = Vector512.Widen(Vector512.Load(a.Z + (long)i * a.C + j));
            sum0 += lo;
            sum1 += hi;
        }
        var count = Vector512.Create((double)a.Rows);
        var mean0 = sum0 / count;
        var mean1 = sum1 / count;
        Vector512<double> m20 = default, m21 = default;
        for (int i = 0; i < a.Rows; i++)
        {
            var (lo, hi) = Vector512.Widen(Vector512.Load(a.Z + (long)i * a.C + j));
            var d0 = lo - mean0;
            var d1 = hi - mean1;
            m20 += d0 * d0;
            m21 += d1 * d1;
        }
        mean0.Store(a.Mean + j);
        mean1.Store(a.Mean + j + 8);
        m20.Store(a.M2 + j);
        m21.Store(a.M2 + j + 8);
    }

    // Feature columns [j0, j1) of StatsColumns row by row, summed in a private buffer (in L1) or in place, then stored.
    private static unsafe void StatsRows(ref StatsArgs a, int j0, int j1)
    {
        int w = j1 - j0;
        var outMean = new Span<double>(a.Mean + j0, w);
        var outM2 = new Span<double>(a.M2 + j0, w);
        bool local = w <= MaxPrivateSums;
        Span<double> buffer = local ? stackalloc double[2 * w] : default;
        var mean = local ? buffer.Slice(0, w) : outMean;
        var m2 = local ? buffer.Slice(w, w) : outM2;
        mean.Clear();
        m2.Clear();
        if (a.Rows > 0)
        {
            for (int i = 0; i < a.Rows; i++) BatchNormStats.AddRow(new ReadOnlySpan<float>(a.Z + (long)i * a.C + j0, w), mean);
            for (int j = 0; j < w; j++) mean[j] /= a.Rows;
            for (int i = 0; i < a.Rows; i++) BatchNormStats.AddSquaredDeviationsRow(new ReadOnlySpan<float>(a.Z + (long)i * a.C + j0, w), mean, m2);
        }
        if (local)
        {
            mean.CopyTo(outMean);
            m2.CopyTo(outM2);
        }
    }

    // Runs a column-range body (the passes with per-feature sums) on the caller or split over the threads of
    // `parallel`. Shares are multiples of 16 features and at least 64, so a narrow layer stays on one thread. The
    // bodies accumulate their sums in private buffers (a share boundary inside a cache line of the sums would
    // otherwise bounce that line between the cores on every row).
    // `written` is a float matrix the body writes row by row (null: none): the column boundaries are then put on
    // cache-line boundaries of its rows when the row length allows, so the threads never write the same line.
    private static unsafe void ForColumns<T>(MatMul? parallel, int c, int rows, ref T args, delegate*<ref T, int, int, void> body,
        float* written = null)
        where T : unmanaged
    {
        if (parallel is null)
        {
            body(ref args, 0, c);
            return;
        }
        int phase = written != null && c % 16 == 0 ? (int)((64 - ((nuint)written & 63)) & 63) / sizeof(float) : 0;
        parallel.ParallelFor(c, (long)rows * c, ref args, body, align: 16, minPerPart: 64, phase: phase, minPerChunk: ColumnsPerChunk);
    }

    // Runs a row-range body (the element-wise passes, no sums) on the caller or split over the threads of `parallel`
    // by whole rows: each thread writes one contiguous block, so the threads never write the same cache line except
    // at the single boundary (a column split would share one line per row). At least 8 rows per share.
    private static unsafe void ForRows<T>(MatMul? parallel, int c, int rows, ref T args, delegate*<ref T, int, int, void> body)
        where T : unmanaged
    {
        if (parallel is null) body(ref args, 0, rows);
        else parallel.ParallelFor(rows, (long)rows * c, ref args, body, align: 1, minPerPart: 8);
    }

    // Columns a claimed chunk of a column pass takes at least: each chunk walks every row, and its per-row calls cost
    // about as much as 64 columns' work (chunks of 64 doubled the ReLU backward + sums pass in a profile).
    internal const int ColumnsPerChunk = 256;

    // Per-feature sums longer than this are accumulated in place instead of in a private stack buffer.
    private const int MaxPrivateSums = 2048;

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
        ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> y, int rows, MatMul? parallel = null) =>
        Normalize(null, z, mean, invStd, gamma, beta, y, rows, parallel);

    /// <summary>
    /// BN before the activation, fused: a[n×C] = g(γ ⊙ (z − μ)·invStd + β), one pass over z. The BN output itself is
    /// not stored (the backward needs only z and a); each row's activation runs while the row is still in L1.
    /// </summary>
    public void NormalizeActivate(Activation kind, ReadOnlySpan<float> z, ReadOnlySpan<float> mean, ReadOnlySpan<float> invStd,
        ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> a, int rows, MatMul? parallel = null) =>
        Normalize(kind, z, mean, invStd, gamma, beta, a, rows, parallel);

    private unsafe void Normalize(Activation? activation, ReadOnlySpan<float> z, ReadOnlySpan<float> mean, ReadOnlySpan<float> invStd,
        ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> y, int rows, MatMul? parallel)
    {
        int c = Features;
        CheckRows(z.Length, y.Length, rows);
        CheckFeatures(mean.Length, invStd.Length, gamma.Length, beta.Length);
        fixed (float* pz = z) fixed (float* pm = mean) fixed (float* ps = invStd) fixed (float* pg = gamma) fixed (float* pb = beta) fixed (float* py = y)
        {
            var args = new NormalizeArgs
            {
                Z = pz, Mean = pm, InvStd = ps, Gamma = pg, Beta = pb, Y = py, Rows = rows, C = c,
                Activate = activation.HasValue, Kind = activation.GetValueOrDefault(),
            };
            ForRows(parallel, c, rows, ref args, &NormalizeRows);
        }
    }

    private unsafe struct NormalizeArgs
    {
        public float* Z, Mean, InvStd, Gamma, Beta, Y;
        public int Rows, C;
        public bool Activate;
        public Activation Kind;
    }

    // Rows [i0, i1): y = γ(z − μ)invStd + β, then g(y) in place when fused (each row while it is in L1).
    private static unsafe void NormalizeRows(ref NormalizeArgs a, int i0, int i1)
    {
        int w = a.C;
        var mean = new ReadOnlySpan<float>(a.Mean, w);
        var invStd = new ReadOnlySpan<float>(a.InvStd, w);
        var gamma = new ReadOnlySpan<float>(a.Gamma, w);
        var beta = new ReadOnlySpan<float>(a.Beta, w);
        for (int i = i0; i < i1; i++)
        {
            long o = (long)i * w;
            var yRow = new Span<float>(a.Y + o, w);
            NormalizeRow(new ReadOnlySpan<float>(a.Z + o, w), mean, invStd, gamma, beta, yRow);
            if (a.Activate) ActivationLayer.Forward(a.Kind, yRow, yRow);
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
    public unsafe void LocalGradSums(ReadOnlySpan<float> dy, ReadOnlySpan<float> z, ReadOnlySpan<double> mean, ReadOnlySpan<double> invStd,
        int rows, BatchNormGradSums local, MatMul? parallel = null)
    {
        int c = Features;
        CheckRows(dy.Length, z.Length, rows);
        CheckFeatures(mean.Length, invStd.Length, local.Features, c);
        fixed (float* pdy = dy) fixed (float* pz = z) fixed (double* pm = mean) fixed (double* ps = invStd)
        fixed (double* s1 = local.SumDy) fixed (double* s2 = local.SumDyXhat)
        {
            var args = new GradSumsArgs { Dy = pdy, Z = pz, Mean = pm, InvStd = ps, SumDy = s1, SumDyXhat = s2, Rows = rows, C = c };
            ForColumns(parallel, c, rows, ref args, &GradSumsColumns);
        }
    }

    /// <summary>
    /// BN before the activation, backward pass 1 fused: dy[n×C] = da ⊙ g'(a) (kept for pass 2,
    /// <see cref="InputGradient"/>) and this shard's Σdy, Σdy·z_norm as in <see cref="LocalGradSums"/>,
    /// each row accumulated while it is still in L1.
    /// </summary>
    public unsafe void ActivationBackwardGradSums(Activation kind, ReadOnlySpan<float> a, ReadOnlySpan<float> da, ReadOnlySpan<float> z,
        ReadOnlySpan<double> mean, ReadOnlySpan<double> invStd, Span<float> dy, int rows, BatchNormGradSums local, MatMul? parallel = null)
    {
        int c = Features;
        CheckRows(a.Length, da.Length, rows);
        CheckRows(z.Length, dy.Length, rows);
        CheckFeatures(mean.Length, invStd.Length, local.Features, c);
        fixed (float* pa = a) fixed (float* pda = da) fixed (float* pdy = dy) fixed (float* pz = z) fixed (double* pm = mean) fixed (double* ps = invStd)
        fixed (double* s1 = local.SumDy) fixed (double* s2 = local.SumDyXhat)
        {
            var args = new GradSumsArgs
            {
                A = pa, DA = pda, Dy = pdy, Z = pz, Mean = pm, InvStd = ps, SumDy = s1, SumDyXhat = s2, Rows = rows, C = c,
                Activate = true, Kind = kind,
            };
            ForColumns(parallel, c, rows, ref args, &GradSumsColumns, written: pdy);
        }
    }

    private unsafe struct GradSumsArgs
    {
        public float* A, DA, Dy, Z;
        public double* Mean, InvStd, SumDy, SumDyXhat;
        public int Rows, C;
        public bool Activate;
        public Activation Kind;
    }

    // Feature columns [j0, j1): dy = da ⊙ g'(a) first when fused, then Σdy, Σdy·z_norm over the rows in order; in
    // blocks of 16 features with the sums in registers where AVX-512 runs the pass (ReLU or no activation), the rest
    // row by row.
    private static unsafe void GradSumsColumns(ref GradSumsArgs a, int j0, int j1)
    {
        int j = j0;
        if (Vector512.IsHardwareAccelerated && (!a.Activate || a.Kind == Activation.Relu))
            for (; j + 16 <= j1; j += 16) GradSumsBlock16(ref a, j);
        if (j < j1) GradSumsRows(ref a, j, j1);
    }

    /// <summary>
    /// Features [j, j + 16) of <see cref="GradSumsColumns"/> over all the rows, their sums in four float64 registers:
    /// per feature the operations and the row order of <see cref="AccumulateGradSumsRow"/> (and of the ReLU backward),
    /// so the same bits. Each row's 64 bytes of every operand are read once, and no sum is loaded and stored per row,
    /// which the row-by-row form does for every element (ReLU backward + sums of the first layer, 256×512,
    /// BenchmarkDotNet short job: 64 → 49 µs on 1 thread, 43 → 32 µs on 2).
    /// </summary>
    private static unsafe void GradSumsBlock16(ref GradSumsArgs a, int j)
    {
        var mean0 = Vector512.Load(a.Mean + j);
        var mean1 = Vector512.Load(a.Mean + j + 8);
        var invStd0 = Vector512.Load(a.InvStd + j);
        var invStd1 = Vector512.Load(a.InvStd + j + 8);
        Vector512<double> sumDy0 = default, sumDy1 = default, sumDyXhat0 = default, sumDyXhat1 = default;
        for (int i = 0; i < a.Rows; i++)
        {
            long o = (long)i * a.C + j;
            Vector512<float> dy;
            if (a.Activate)
            {
                var act = Vector512.Load(a.A + o);
                dy = Vector512.ConditionalSelect(Vector512.GreaterThan(act, Vector512<float>.Zero), Vector512.Load(a.DA + o), Vector512<float>.Zero);
                dy.Store(a.Dy + o);
            }
            else dy = Vector512.Load(a.Dy + o);
            var (dyLo, dyHi) = Vector512.Widen(dy);
            var (zLo, zHi) = Vector512.Widen(Vector512.Load(a.Z + o));
            sumDy0 += dyLo;
            sumDy1 += dyHi;
            sumDyXhat0 += dyLo * ((zLo - mean0) * invStd0);
            sumDyXhat1 += dyHi * ((zHi - mean1) * invStd1);
        }
        sumDy0.Store(a.SumDy + j);
        sumDy1.Store(a.SumDy + j + 8);
        sumDyXhat0.Store(a.SumDyXhat + j);
        sumDyXhat1.Store(a.SumDyXhat + j + 8);
    }

    // Feature columns [j0, j1) of GradSumsColumns row by row, the sums in a private buffer (in L1) or in place.
    private static unsafe void GradSumsRows(ref GradSumsArgs a, int j0, int j1)
    {
        int w = j1 - j0;
        var mean = new ReadOnlySpan<double>(a.Mean + j0, w);
        var invStd = new ReadOnlySpan<double>(a.InvStd + j0, w);
        var outSumDy = new Span<double>(a.SumDy + j0, w);
        var outSumDyXhat = new Span<double>(a.SumDyXhat + j0, w);
        bool local = w <= MaxPrivateSums;
        Span<double> buffer = local ? stackalloc double[2 * w] : default;
        var sumDy = local ? buffer.Slice(0, w) : outSumDy;
        var sumDyXhat = local ? buffer.Slice(w, w) : outSumDyXhat;
        sumDy.Clear();
        sumDyXhat.Clear();
        for (int i = 0; i < a.Rows; i++)
        {
            long o = (long)i * a.C + j0;
            var dyRow = new Span<float>(a.Dy + o, w);
            if (a.Activate) ActivationLayer.Backward(a.Kind, new ReadOnlySpan<float>(a.A + o, w), new ReadOnlySpan<float>(a.DA + o, w), dyRow);
            AccumulateGradSumsRow(dyRow, new ReadOnlySpan<float>(a.Z + o, w), mean, invStd, sumDy, sumDyXhat);
        }
        if (local)
        {
            sumDy.CopyTo(outSumDy);
            sumDyXhat.CopyTo(outSumDyXhat);
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
    /// evaluated in float64 per element on a batch of fewer than <see cref="Float32InputGradientMinBatch"/> rows (see
    /// <see cref="LocalGradSums"/>), in float32 from there on; vectorized across features with the scalar form's
    /// operations and order. <paramref name="scratch"/> holds 3×C doubles.
    /// </summary>
    public void InputGradient(ReadOnlySpan<float> dy, ReadOnlySpan<float> z, ReadOnlySpan<double> mean, ReadOnlySpan<double> invStd,
        BatchNormGradSums global, long globalCount, ReadOnlySpan<float> gamma, Span<float> dz, int rows, Span<double> scratch,
        MatMul? parallel = null) =>
        InputGradient(null, dy, z, mean, invStd, global, globalCount, gamma, dz, rows, scratch, parallel);

    /// <summary>
    /// BN after the activation, backward pass 2 fused with the activation: BN's input is the activation output a,
    /// so dz_pre[n×C] = g'(a) ⊙ <see cref="InputGradient"/>(dy, a), each row taken through g' while it is in L1.
    /// </summary>
    public void InputGradientThroughActivation(Activation kind, ReadOnlySpan<float> dy, ReadOnlySpan<float> a, ReadOnlySpan<double> mean,
        ReadOnlySpan<double> invStd, BatchNormGradSums global, long globalCount, ReadOnlySpan<float> gamma, Span<float> dzPre, int rows,
        Span<double> scratch, MatMul? parallel = null) =>
        InputGradient(kind, dy, a, mean, invStd, global, globalCount, gamma, dzPre, rows, scratch, parallel);

    private unsafe void InputGradient(Activation? activation, ReadOnlySpan<float> dy, ReadOnlySpan<float> z, ReadOnlySpan<double> mean,
        ReadOnlySpan<double> invStd, BatchNormGradSums global, long globalCount, ReadOnlySpan<float> gamma, Span<float> dz, int rows,
        Span<double> scratch, MatMul? parallel)
    {
        int c = Features;
        CheckRows(dy.Length, z.Length, rows);
        CheckRows(dz.Length, dz.Length, rows);
        CheckFeatures(mean.Length, invStd.Length, gamma.Length, global.Features);
        if (scratch.Length < 3 * c) throw new ArgumentException($"scratch holds {scratch.Length} of {3 * c} doubles", nameof(scratch));
        if (globalCount >= Float32InputGradientMinBatch)
        {
            InputGradientFloat32(activation, dy, z, mean, invStd, global, globalCount, gamma, dz, rows, MemoryMarshal.Cast<double, float>(scratch), parallel);
            return;
        }
        var scale = scratch.Slice(0, c);          // γ·invStd
        var meanDy = scratch.Slice(c, c);         // Σdy/N
        var meanDyXhat = scratch.Slice(2 * c, c); // Σ(dy·z_norm)/N
        for (int j = 0; j < c; j++)
        {
            scale[j] = gamma[j] * invStd[j];
            meanDy[j] = global.SumDy[j] / globalCount;
            meanDyXhat[j] = global.SumDyXhat[j] / globalCount;
        }
        fixed (float* pdy = dy) fixed (float* pz = z) fixed (float* pdz = dz) fixed (double* pm = mean) fixed (double* ps = invStd)
        fixed (double* pk = scale) fixed (double* pa = meanDy) fixed (double* pb = meanDyXhat)
        {
            var args = new InputGradientArgs
            {
                Dy = pdy, Z = pz, Dz = pdz, Mean = pm, InvStd = ps, Scale = pk, MeanDy = pa, MeanDyXhat = pb, Rows = rows, C = c,
                Activate = activation.HasValue, Kind = activation.GetValueOrDefault(),
            };
            ForRows(parallel, c, rows, ref args, &InputGradientRows);
        }
    }

    /// <summary>
    /// From this global batch size on, <see cref="InputGradient"/> computes in float32 (docs/design.md, "The math": float32 compute,
    /// float64 reductions; its sums stay float64), about 3× faster than in float64. Below it, float64: on a tiny batch dz
    /// is the small difference of nearly equal terms (with N = 2 only the ε part is left), where float32 would lose it.
    /// </summary>
    public const long Float32InputGradientMinBatch = 64;

    // The float32 form: the per-feature constants rounded once to float32 (in scratch: 5·C floats), then per element
    // dz = scale·((dy − meanDy) − ((z − μ)·invStd)·meanDyXhat), vectorized with the scalar form's operations and order.
    private unsafe void InputGradientFloat32(Activation? activation, ReadOnlySpan<float> dy, ReadOnlySpan<float> z, ReadOnlySpan<double> mean,
        ReadOnlySpan<double> invStd, BatchNormGradSums global, long globalCount, ReadOnlySpan<float> gamma, Span<float> dz, int rows,
        Span<float> scratch, MatMul? parallel)
    {
        int c = Features;
        var meanF = scratch.Slice(0, c);
        var invStdF = scratch.Slice(c, c);
        var scale = scratch.Slice(2 * c, c);
        var meanDy = scratch.Slice(3 * c, c);
        var meanDyXhat = scratch.Slice(4 * c, c);
        for (int j = 0; j < c; j++)
        {
            meanF[j] = (float)mean[j];
            invStdF[j] = (float)invStd[j];
            scale[j] = (float)(gamma[j] * invStd[j]);
            meanDy[j] = (float)(global.SumDy[j] / globalCount);
            meanDyXhat[j] = (float)(global.SumDyXhat[j] / globalCount);
        }
        fixed (float* pdy = dy) fixed (float* pz = z) fixed (float* pdz = dz) fixed (float* ps = scratch)
        {
            var args = new InputGradientFloat32Args
            {
                Dy = pdy, Z = pz, Dz = pdz, Constants = ps, Rows = rows, C = c, Activate = activation.HasValue, Kind = activation.GetValueOrDefault(),
            };
            ForRows(parallel, c, rows, ref args, &InputGradientFloat32Rows);
        }
    }

    private unsafe struct InputGradientFloat32Args
    {
        public float* Dy, Z, Dz, Constants; // Constants: μ, invStd, scale, meanDy, meanDyXhat, C floats each
        public int Rows, C;
        public bool Activate;
        public Activation Kind;
    }

    private static unsafe void InputGradientFloat32Rows(ref InputGradientFloat32Args p, int i0, int i1)
    {
        int c = p.C;
        float* mean = p.Constants, invStd = mean + c, scale = invStd + c, meanDy = scale + c, meanDyXhat = meanDy + c;
        for (int i = i0; i < i1; i++)
        {
            long o = (long)i * c;
            float* dyRow = p.Dy + o, zRow = p.Z + o, dzRow = p.Dz + o;
            int j = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                for (; j <= c - Vector256<float>.Count; j += Vector256<float>.Count)
                {
                    var zn = (Vector256.Load(zRow + j) - Vector256.Load(mean + j)) * Vector256.Load(invStd + j);
                    (Vector256.Load(scale + j) * (Vector256.Load(dyRow + j) - Vector256.Load(meanDy + j) - zn * Vector256.Load(meanDyXhat + j)))
                        .Store(dzRow + j);
                }
            }
            for (; j < c; j++)
            {
                float zn = (zRow[j] - mean[j]) * invStd[j];
                dzRow[j] = scale[j] * (dyRow[j] - meanDy[j] - zn * meanDyXhat[j]);
            }
            if (p.Activate)
            {
                var dzSpan = new Span<float>(dzRow, c);
                ActivationLayer.Backward(p.Kind, new ReadOnlySpan<float>(zRow, c), dzSpan, dzSpan);
            }
        }
    }

    private unsafe struct InputGradientArgs
    {
        public float* Dy, Z, Dz;
        public double* Mean, InvStd, Scale, MeanDy, MeanDyXhat;
        public int Rows, C;
        public bool Activate;
        public Activation Kind;
    }

    // Rows [i0, i1): dz = scale·(dy − Σdy/N − z_norm·Σ(dy·z_norm)/N) in float64, stored as float32, then through g'
    // in place when fused.
    private static unsafe void InputGradientRows(ref InputGradientArgs p, int i0, int i1)
    {
        int c = p.C;
        double* mean = p.Mean, invStd = p.InvStd, scale = p.Scale, meanDy = p.MeanDy, meanDyXhat = p.MeanDyXhat;
        for (int i = i0; i < i1; i++)
        {
            long o = (long)i * c;
            float* dyRow = p.Dy + o, zRow = p.Z + o, dzRow = p.Dz + o;
            int j = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                for (; j <= c - Vector256<float>.Count; j += Vector256<float>.Count)
                {
                    int j4 = j + 4;
                    var (dyLo, dyHi) = Vector256.Widen(Vector256.Load(dyRow + j));
                    var (zLo, zHi) = Vector256.Widen(Vector256.Load(zRow + j));
                    var znLo = (zLo - Vector256.Load(mean + j)) * Vector256.Load(invStd + j);
                    var znHi = (zHi - Vector256.Load(mean + j4)) * Vector256.Load(invStd + j4);
                    var dzLo = Vector256.Load(scale + j) * (dyLo - Vector256.Load(meanDy + j) - znLo * Vector256.Load(meanDyXhat + j));
                    var dzHi = Vector256.Load(scale + j4) * (dyHi - Vector256.Load(meanDy + j4) - znHi * Vector256.Load(meanDyXhat + j4));
                    Vector256.Narrow(dzLo, dzHi).Store(dzRow + j);
                }
            }
            for (; j < c; j++)
            {
                double zn = (zRow[j] - mean[j]) * invStd[j];
                dzRow[j] = (float)(scale[j] * (dyRow[j] - meanDy[j] - zn * meanDyXhat[j]));
            }
            if (p.Activate)
            {
                var dzSpan = new Span<float>(dzRow, c);
                ActivationLayer.Backward(p.Kind, new ReadOnlySpan<float>(zRow, c), dzSpan, dzSpan);
            }
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
