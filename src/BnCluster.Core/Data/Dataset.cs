namespace BnCluster.Core.Data;

/// <summary>
/// A labelled dataset held in memory: <see cref="Features"/> is [Count × FeatureCount]
/// row-major float32 (rows are samples; pixels already scaled to [0, 1]),
/// <see cref="Labels"/> holds class indices in [0, ClassNames.Count).
/// </summary>
public sealed class Dataset
{
    public Dataset(string name, float[] features, int[] labels, int featureCount, IReadOnlyList<string> classNames)
    {
        ArgumentNullException.ThrowIfNull(features);
        ArgumentNullException.ThrowIfNull(labels);
        if (featureCount <= 0) throw new ArgumentOutOfRangeException(nameof(featureCount));
        if (features.Length != (long)labels.Length * featureCount)
            throw new ArgumentException($"features hold {features.Length} values, expected {labels.Length} × {featureCount}");
        Name = name;
        Features = features;
        Labels = labels;
        FeatureCount = featureCount;
        ClassNames = classNames;
    }

    public string Name { get; }
    public float[] Features { get; }
    public int[] Labels { get; }
    public int FeatureCount { get; }
    public IReadOnlyList<string> ClassNames { get; }
    public int Count => Labels.Length;
    public int ClassCount => ClassNames.Count;

    public ReadOnlySpan<float> Row(int i) => Features.AsSpan(i * FeatureCount, FeatureCount);
}

/// <summary>A train/test pair and the SHA-256 of the source files (checked at join, DESIGN §3).</summary>
public sealed record DatasetSplit(Dataset Train, Dataset Test, string Sha256);

/// <summary>Bad dataset input; the message names the file and the row or offset.</summary>
public sealed class DatasetException(string message) : Exception(message);
