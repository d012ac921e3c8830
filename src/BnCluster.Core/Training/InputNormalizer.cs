using BnCluster.Core.Data;
using BnCluster.Core.Model;

namespace BnCluster.Core.Training;

/// <summary>
/// Per-feature input normalization (docs/design.md, "The math"): μ, σ² of the training set, reduced over slices with the same Chan
/// merge as BN; x' = (x − μ)/sqrt(σ² + ε), and a feature with zero variance is only centred (x − μ).
/// </summary>
public sealed class InputNormalizer
{
    public const float DefaultEpsilon = 1e-8f;

    public InputNormalizer(float[] mean, float[] variance, float epsilon = DefaultEpsilon)
    {
        if (mean.Length != variance.Length) throw new ArgumentException($"input mean has {mean.Length} features, variance {variance.Length}");
        Mean = mean;
        Variance = variance;
        Epsilon = epsilon;
        Scale = new float[mean.Length];
        for (int j = 0; j < mean.Length; j++)
        {
            if (!(variance[j] >= 0) || !float.IsFinite(mean[j])) throw new ArgumentException($"input feature {j} has mean {mean[j]} and variance {variance[j]}");
            Scale[j] = variance[j] > 0 ? (float)(1.0 / Math.Sqrt(variance[j] + (double)epsilon)) : 1f;
        }
    }

    public float[] Mean { get; }
    public float[] Variance { get; }
    public float Epsilon { get; }
    public int Features => Mean.Length;

    /// <summary>[Features] the factor each centred feature is multiplied by: 1/sqrt(var + eps), 1 for zero variance.</summary>
    public float[] Scale { get; }

    /// <summary>(n, mean, M2) of rows [start, start+count) of a dataset: one worker's slice, merge with <see cref="BatchNormStats.Merge"/>.</summary>
    public static BatchNormStats SliceStats(Dataset data, int start, int count)
    {
        if (start < 0 || count < 0 || start + count > data.Count) throw new ArgumentOutOfRangeException(nameof(count), $"rows [{start}, {start + count}) outside dataset '{data.Name}' of {data.Count} rows");
        var stats = new BatchNormStats(data.FeatureCount);
        stats.ComputeFromRows(count, (i, row) => data.CopyRow(start + i, row));
        return stats;
    }

    public static InputNormalizer FromStats(BatchNormStats stats, float epsilon = DefaultEpsilon)
    {
        if (stats.Count <= 0) throw new ArgumentException("input statistics of zero rows");
        var mean = new float[stats.Features];
        var variance = new float[stats.Features];
        for (int j = 0; j < mean.Length; j++)
        {
            mean[j] = (float)stats.Mean[j];
            // A constant feature is stored with variance 1, so that the model file's formula
            // (x − μ)/sqrt(var + ε), applied literally by any reader, passes it through centred.
            double v = stats.Variance(j);
            variance[j] = v > 0 ? (float)v : 1f;
        }
        return new InputNormalizer(mean, variance, epsilon);
    }

    /// <summary>Statistics of the whole training set (one slice).</summary>
    public static InputNormalizer Fit(Dataset train, float epsilon = DefaultEpsilon) =>
        FromStats(SliceStats(train, 0, train.Count), epsilon);

    /// <summary>Normalizes a [rows × Features] row-major matrix in place.</summary>
    public void ApplyInPlace(Span<float> features)
    {
        int f = Features;
        if (features.Length % f != 0) throw new ArgumentException($"{features.Length} values are not whole rows of {f} features");
        for (int i = 0; i < features.Length; i += f)
        {
            var row = features.Slice(i, f);
            System.Numerics.Tensors.TensorPrimitives.Subtract(row, Mean, row);
            System.Numerics.Tensors.TensorPrimitives.Multiply(row, Scale, row);
        }
    }

    /// <summary>
    /// The dataset normalized: a view sharing <paramref name="data"/>'s storage that normalizes each row as it is
    /// copied out (no normalized copy of the whole set is made), element for element the same float32 values as
    /// <see cref="ApplyInPlace"/> on the rows.
    /// </summary>
    public Dataset Apply(Dataset data)
    {
        if (data.FeatureCount != Features) throw new ArgumentException($"dataset '{data.Name}' has {data.FeatureCount} features, the normalizer {Features}");
        return data.WithNormalization(Mean, Scale);
    }

    public InputNormalization ToRecord() => new(Features, (float[])Mean.Clone(), (float[])Variance.Clone(), Epsilon);

    public static InputNormalizer FromRecord(InputNormalization record)
    {
        if (record.Mean.Length != record.Features || record.Var.Length != record.Features)
            throw new FormatException($"model input normalization declares {record.Features} features but holds {record.Mean.Length} means and {record.Var.Length} variances");
        return new InputNormalizer((float[])record.Mean.Clone(), (float[])record.Var.Clone(), record.Eps);
    }
}
