using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace BnCluster.Core.Training;

/// <summary>
/// Per-feature moments of a set of rows: count n, mean, and M2 = Σ(z − mean)², in float64.
/// A worker computes them for its shard (two-pass); the coordinator merges shards in rank
/// order with Chan's parallel formula (docs/design.md, "The math"), never Σz² − (Σz)²/N, which cancels
/// catastrophically when |μ| ≫ σ. Input normalization reuses the same merge.
/// </summary>
public sealed class BatchNormStats
{
    public BatchNormStats(int features)
    {
        Mean = new double[features];
        M2 = new double[features];
    }

    public BatchNormStats(long count, double[] mean, double[] m2)
    {
        if (mean.Length != m2.Length) throw new ArgumentException("mean and M2 differ in length");
        Count = count;
        Mean = mean;
        M2 = m2;
    }

    public long Count { get; set; }
    public double[] Mean { get; }
    public double[] M2 { get; }
    public int Features => Mean.Length;

    /// <summary>Biased variance σ² = M2 / n of feature <paramref name="j"/>.</summary>
    public double Variance(int j) => Count == 0 ? 0 : M2[j] / Count;

    public void Clear()
    {
        Count = 0;
        Array.Clear(Mean);
        Array.Clear(M2);
    }

    public void CopyFrom(BatchNormStats other)
    {
        if (other.Features != Features) throw new ArgumentException($"stats for {other.Features} features merged into {Features}");
        Count = other.Count;
        other.Mean.CopyTo(Mean, 0);
        other.M2.CopyTo(M2, 0);
    }

    /// <summary>
    /// Two-pass moments of rows [0, rows) of a [rows × Features] row-major matrix: the mean
    /// first, then Σ(z − mean)², both accumulated in float64.
    /// </summary>
    public void ComputeFrom(ReadOnlySpan<float> z, int rows)
    {
        int c = Features;
        if (z.Length < rows * c) throw new ArgumentException($"{z.Length} values hold fewer than {rows} rows of {c}");
        Array.Clear(Mean);
        Array.Clear(M2);
        Count = rows;
        if (rows == 0) return;
        // Both passes run across features (rows are samples, features contiguous), four doubles per vector, with
        // the scalar form's operations and row order per feature: bit-identical to it.
        for (int i = 0; i < rows; i++) AddRow(z.Slice(i * c, c), Mean);
        for (int j = 0; j < c; j++) Mean[j] /= rows;
        for (int i = 0; i < rows; i++) AddSquaredDeviationsRow(z.Slice(i * c, c), Mean, M2);
    }

    /// <summary>
    /// The same two passes over <paramref name="rows"/> rows that <paramref name="readRow"/>(i, destination) writes
    /// one at a time into a scratch row (a dataset decoding its rows on the fly): the same operations and order as
    /// <see cref="ComputeFrom"/>, so the same bits as on the materialized matrix.
    /// </summary>
    public void ComputeFromRows(int rows, Action<int, Span<float>> readRow)
    {
        ArgumentNullException.ThrowIfNull(readRow);
        Array.Clear(Mean);
        Array.Clear(M2);
        Count = rows;
        if (rows == 0) return;
        var row = new float[Features];
        for (int i = 0; i < rows; i++)
        {
            readRow(i, row);
            AddRow(row, Mean);
        }
        for (int j = 0; j < row.Length; j++) Mean[j] /= rows;
        for (int i = 0; i < rows; i++)
        {
            readRow(i, row);
            AddSquaredDeviationsRow(row, Mean, M2);
        }
    }

    // sum[j] += row[j] in float64 (also the first pass of BatchNormLayer's local statistics).
    internal static void AddRow(ReadOnlySpan<float> row, Span<double> sum)
    {
        int c = row.Length, j = 0;
        ref float r = ref MemoryMarshal.GetReference(row);
        ref double s = ref MemoryMarshal.GetReference(sum);
        if (Vector256.IsHardwareAccelerated)
        {
            for (; j <= c - Vector256<float>.Count; j += Vector256<float>.Count)
            {
                nuint o = (nuint)j, o4 = o + 4;
                var (lo, hi) = Vector256.Widen(Vector256.LoadUnsafe(ref r, o));
                (Vector256.LoadUnsafe(ref s, o) + lo).StoreUnsafe(ref s, o);
                (Vector256.LoadUnsafe(ref s, o4) + hi).StoreUnsafe(ref s, o4);
            }
        }
        for (; j < c; j++) sum[j] += row[j];
    }

    // m2[j] += (row[j] − mean[j])² in float64 (also BatchNormLayer's second pass).
    internal static void AddSquaredDeviationsRow(ReadOnlySpan<float> row, ReadOnlySpan<double> mean, Span<double> m2)
    {
        int c = row.Length, j = 0;
        ref float r = ref MemoryMarshal.GetReference(row);
        ref double mr = ref MemoryMarshal.GetReference(mean);
        ref double s = ref MemoryMarshal.GetReference(m2);
        if (Vector256.IsHardwareAccelerated)
        {
            for (; j <= c - Vector256<float>.Count; j += Vector256<float>.Count)
            {
                nuint o = (nuint)j, o4 = o + 4;
                var (lo, hi) = Vector256.Widen(Vector256.LoadUnsafe(ref r, o));
                var dLo = lo - Vector256.LoadUnsafe(ref mr, o);
                var dHi = hi - Vector256.LoadUnsafe(ref mr, o4);
                (Vector256.LoadUnsafe(ref s, o) + dLo * dLo).StoreUnsafe(ref s, o);
                (Vector256.LoadUnsafe(ref s, o4) + dHi * dHi).StoreUnsafe(ref s, o4);
            }
        }
        for (; j < c; j++)
        {
            double d = row[j] - mean[j];
            m2[j] += d * d;
        }
    }

    /// <summary>
    /// Chan's merge of <paramref name="other"/> (b) into this (a):
    /// n = na + nb; δ = mb − ma; mean = ma + δ·nb/n; M2 = M2a + M2b + δ²·na·nb/n.
    /// </summary>
    public void Merge(BatchNormStats other) => Merge(other.Count, other.Mean, other.M2);

    /// <summary>The same merge of the moments (<paramref name="count"/>, <paramref name="mean"/>, <paramref name="m2"/>) of another set of rows.</summary>
    public void Merge(long count, ReadOnlySpan<double> mean, ReadOnlySpan<double> m2)
    {
        if (mean.Length != Features || m2.Length != Features) throw new ArgumentException($"stats for {mean.Length} features merged into {Features}");
        if (count == 0) return;
        if (Count == 0)
        {
            Count = count;
            mean.CopyTo(Mean);
            m2.CopyTo(M2);
            return;
        }
        double na = Count, nb = count, n = na + nb;
        for (int j = 0; j < Features; j++)
        {
            double delta = mean[j] - Mean[j];
            Mean[j] += delta * nb / n;
            M2[j] += m2[j] + delta * delta * na * nb / n;
        }
        Count += count;
    }
}

/// <summary>
/// Backward BN sums of a set of rows, per feature: Σdy (= dβ over the global batch) and
/// Σdy·z_norm (= dγ), in float64. Shards are summed in rank order.
/// </summary>
public sealed class BatchNormGradSums
{
    public BatchNormGradSums(int features)
    {
        SumDy = new double[features];
        SumDyXhat = new double[features];
    }

    public BatchNormGradSums(double[] sumDy, double[] sumDyXhat)
    {
        if (sumDy.Length != sumDyXhat.Length) throw new ArgumentException("Σdy and Σdy·z_norm differ in length");
        SumDy = sumDy;
        SumDyXhat = sumDyXhat;
    }

    public double[] SumDy { get; }
    public double[] SumDyXhat { get; }
    public int Features => SumDy.Length;

    public void Clear()
    {
        Array.Clear(SumDy);
        Array.Clear(SumDyXhat);
    }

    public void CopyFrom(BatchNormGradSums other)
    {
        if (other.Features != Features) throw new ArgumentException($"sums for {other.Features} features added to {Features}");
        other.SumDy.CopyTo(SumDy, 0);
        other.SumDyXhat.CopyTo(SumDyXhat, 0);
    }

    public void Add(BatchNormGradSums other) => Add(other.SumDy, other.SumDyXhat);

    /// <summary>Adds another set of rows' Σdy and Σdy·z_norm.</summary>
    public void Add(ReadOnlySpan<double> sumDy, ReadOnlySpan<double> sumDyXhat)
    {
        if (sumDy.Length != Features || sumDyXhat.Length != Features) throw new ArgumentException($"sums for {sumDy.Length} features added to {Features}");
        for (int j = 0; j < Features; j++)
        {
            SumDy[j] += sumDy[j];
            SumDyXhat[j] += sumDyXhat[j];
        }
    }
}
