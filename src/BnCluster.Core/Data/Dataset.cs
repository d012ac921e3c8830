using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using BnCluster.Core.Model;

namespace BnCluster.Core.Data;

/// <summary>
/// A labelled dataset held in memory: [Count × FeatureCount] row-major values (rows are samples), and
/// <see cref="Labels"/> with class indices in [0, ClassNames.Count). The values are stored one of two ways:
/// <list type="bullet">
/// <item>float32 (CSV, digits, synthetic data): <see cref="Features"/> is the array itself;</item>
/// <item>bytes with a divisor (IDX images, 4× smaller): value = (float)code / <see cref="CodeDivisor"/>, the exact
/// float32 division, decoded when rows are copied out.</item>
/// </list>
/// A dataset may also be a normalized view of another (<see cref="WithNormalization"/>): it shares the storage and
/// yields (value − shift[j]) · scale[j] per element, in float32, as two separately rounded operations — the same
/// numbers a normalized copy would hold, without the copy. Rows are read with <see cref="CopyRow"/>,
/// <see cref="CopyRows(int, int, Span{float})"/> and <see cref="GatherRows"/>.
/// </summary>
public sealed class Dataset
{
    private readonly float[]? _values;
    private readonly ReadOnlyMemory<byte> _codes;
    private readonly float[]? _shift;
    private readonly float[]? _scale;

    /// <summary>A dataset stored as float32 values.</summary>
    public Dataset(string name, float[] features, int[] labels, int featureCount, IReadOnlyList<string> classNames)
        : this(name, labels, featureCount, classNames)
    {
        ArgumentNullException.ThrowIfNull(features);
        if (features.Length != (long)labels.Length * featureCount)
            throw new ArgumentException($"features hold {features.Length} values, expected {labels.Length} × {featureCount}");
        _values = features;
    }

    /// <summary>A dataset stored as bytes: the value of a byte b is (float)b / <paramref name="codeDivisor"/>.</summary>
    public Dataset(string name, ReadOnlyMemory<byte> codes, float codeDivisor, int[] labels, int featureCount, IReadOnlyList<string> classNames)
        : this(name, labels, featureCount, classNames)
    {
        if (!(codeDivisor > 0) || !float.IsFinite(codeDivisor)) throw new ArgumentOutOfRangeException(nameof(codeDivisor), $"code divisor must be positive and finite, got {codeDivisor}");
        if (codes.Length != (long)labels.Length * featureCount)
            throw new ArgumentException($"codes hold {codes.Length} bytes, expected {labels.Length} × {featureCount}");
        _codes = codes;
        CodeDivisor = codeDivisor;
    }

    private Dataset(string name, int[] labels, int featureCount, IReadOnlyList<string> classNames)
    {
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(classNames);
        if (featureCount <= 0) throw new ArgumentOutOfRangeException(nameof(featureCount));
        Name = name;
        Labels = labels;
        FeatureCount = featureCount;
        ClassNames = classNames;
    }

    // A normalized view: same storage, labels and names.
    private Dataset(Dataset source, float[] shift, float[] scale)
        : this(source.Name, source.Labels, source.FeatureCount, source.ClassNames)
    {
        _values = source._values;
        _codes = source._codes;
        CodeDivisor = source.CodeDivisor;
        _shift = shift;
        _scale = scale;
        var (zerosPerFeature, zerosPerRow) = source.CountStoredZeros();
        ZeroOffsets = source.ZeroOffsetsFor(zerosPerFeature, shift, scale);
        if (ZeroOffsets is not null) ZeroPatternRanks = source.ZeroPatternRanksFor(zerosPerRow);
    }

    // The stored zeros per feature and per row, in one pass over the storage.
    private (int[] PerFeature, int[] PerRow) CountStoredZeros()
    {
        int f = FeatureCount;
        var perFeature = new int[f];
        var perRow = new int[Count];
        for (int r = 0; r < Count; r++)
        {
            if (_values is { } values)
            {
                var row = values.AsSpan(r * f, f);
                for (int j = 0; j < f; j++) perFeature[j] += row[j] == 0f ? 1 : 0;
                perRow[r] = row.Count(0f);
            }
            else
            {
                var row = _codes.Span.Slice(r * f, f);
                for (int j = 0; j < f; j++) perFeature[j] += row[j] == 0 ? 1 : 0;
                perRow[r] = row.Count((byte)0);
            }
        }
        return (perFeature, perRow);
    }

    // Every row's place when all are ordered by (label, stored zeros, row): rows of one class with as many zeros tend
    // to have their zeros in the same places (an item's silhouette).
    private int[] ZeroPatternRanksFor(int[] zeros)
    {
        var order = new int[Count];
        for (int r = 0; r < order.Length; r++) order[r] = r;
        var labels = Labels;
        Array.Sort(order, (a, b) => labels[a] != labels[b] ? labels[a].CompareTo(labels[b]) : zeros[a] != zeros[b] ? zeros[a].CompareTo(zeros[b]) : a.CompareTo(b));
        var ranks = new int[Count];
        for (int i = 0; i < order.Length; i++) ranks[order[i]] = i;
        return ranks;
    }

    /// <summary>A feature (and the whole storage) needs this share of stored zeros for <see cref="ZeroOffsets"/>.</summary>
    public const double ZeroOffsetsMinFraction = 0.125;

    // Per feature, the value a stored 0 yields under (shift, scale) where at least 1/8 of the rows store 0 there, else 0;
    // null when fewer than 1/8 of all stored values are 0. Decoded through the same code as the rows, so the bits match.
    private float[]? ZeroOffsetsFor(int[] zerosPerFeature, float[] shift, float[] scale)
    {
        int f = FeatureCount;
        if (Count == 0) return null;
        long zeros = 0;
        foreach (int z in zerosPerFeature) zeros += z;
        if (zeros < ZeroOffsetsMinFraction * Count * f) return null;
        var offsets = new float[f];
        if (_values is not null)
        {
            TensorPrimitives.Subtract(offsets, shift, offsets);
            TensorPrimitives.Multiply(offsets, scale, offsets);
        }
        else DecodeBytesNormalized(new byte[f], CodeDivisor, shift, scale, default, offsets);
        // Elsewhere a stored 0 is rare (a constant feature has none): centring would only add rounding.
        for (int j = 0; j < f; j++)
            if (zerosPerFeature[j] < ZeroOffsetsMinFraction * Count) offsets[j] = 0;
        return offsets;
    }

    public string Name { get; }
    public int[] Labels { get; }
    public int FeatureCount { get; }
    public IReadOnlyList<string> ClassNames { get; }
    public int Count => Labels.Length;
    public int ClassCount => ClassNames.Count;

    /// <summary>True when the values are bytes decoded with <see cref="CodeDivisor"/>.</summary>
    public bool StoresBytes => _values is null;

    /// <summary>The divisor of byte storage (0 for float storage).</summary>
    public float CodeDivisor { get; }

    /// <summary>True for a view made by <see cref="WithNormalization"/>.</summary>
    public bool IsNormalized => _shift is not null;

    /// <summary>
    /// For a normalized view whose storage is at least <see cref="ZeroOffsetsMinFraction"/> zeros (image backgrounds):
    /// [FeatureCount] for each feature stored as 0 in at least that share of rows, the value a stored 0 yields, bit for
    /// bit, so value − ZeroOffsets[j] is exactly 0 wherever the stored value is; 0 for the other features. The training
    /// step centres its input on them to keep the zeros the GEMMs skip (<see cref="Training.TrainingStep"/>). Null
    /// otherwise (without normalization a stored 0 reads as 0 already).
    /// </summary>
    public float[]? ZeroOffsets { get; }

    /// <summary>
    /// [Count] with <see cref="ZeroOffsets"/>: each row's rank in the order by (label, number of stored zeros, row), a
    /// permutation of 0..Count−1. A training step gathers its rows in this order, so that the rows of one packed GEMM
    /// panel share more zero features and the first layer's forward skips more depth steps (on Fashion-MNIST, 8-row
    /// panels all zero at a pixel: 13% of them in random order, 29% in this one; bench/zero_panels.py). The order of a
    /// batch's rows changes its sums' rounding only. Null without zero offsets.
    /// </summary>
    public int[]? ZeroPatternRanks { get; }

    /// <summary>Bytes of memory the values take (the labels aside).</summary>
    public long StorageBytes => _values is { } v ? 4L * v.Length : _codes.Length;

    /// <summary>
    /// The float32 values themselves, for a float-stored dataset that is not a normalized view; any other dataset
    /// has no such array (read its rows with <see cref="CopyRows(int, int, Span{float})"/>).
    /// </summary>
    public float[] Features => _values is { } v && _shift is null
        ? v
        : throw new InvalidOperationException(
            $"dataset '{Name}' {(IsNormalized ? "is a normalized view" : "stores bytes")}, so it has no float array; copy its rows out with CopyRows");

    /// <summary>
    /// A view that yields (value − shift[j]) · scale[j] for feature j; it shares this dataset's storage. Only an
    /// un-normalized dataset can be normalized (a view of a view would round twice).
    /// </summary>
    public Dataset WithNormalization(float[] shift, float[] scale)
    {
        ArgumentNullException.ThrowIfNull(shift);
        ArgumentNullException.ThrowIfNull(scale);
        if (shift.Length != FeatureCount || scale.Length != FeatureCount)
            throw new ArgumentException($"normalization of {shift.Length} shifts and {scale.Length} scales for dataset '{Name}' of {FeatureCount} features");
        if (IsNormalized) throw new InvalidOperationException($"dataset '{Name}' is already a normalized view");
        return new Dataset(this, shift, scale);
    }

    /// <summary>The values of row <paramref name="row"/> into <paramref name="destination"/> [FeatureCount].</summary>
    public void CopyRow(int row, Span<float> destination)
    {
        CheckRow(row);
        if (destination.Length < FeatureCount) throw new ArgumentException($"destination holds {destination.Length} of {FeatureCount} features");
        DecodeRow(row, destination[..FeatureCount]);
    }

    /// <summary>A new array with the values of row <paramref name="row"/> (allocates; for tools and tests).</summary>
    public float[] RowToArray(int row)
    {
        var values = new float[FeatureCount];
        CopyRow(row, values);
        return values;
    }

    /// <summary>Rows [start, start+count) into <paramref name="destination"/> [count × FeatureCount] row-major.</summary>
    public void CopyRows(int start, int count, Span<float> destination)
    {
        if (start < 0 || count < 0 || start > Count - count)
            throw new ArgumentOutOfRangeException(nameof(count), $"rows [{start}, {start + count}) outside dataset '{Name}' of {Count} rows");
        int f = FeatureCount;
        if (destination.Length < (long)count * f) throw new ArgumentException($"destination holds {destination.Length} values, {count} rows of {f} need {(long)count * f}");
        for (int i = 0; i < count; i++) DecodeRow(start + i, destination.Slice(i * f, f));
    }

    /// <summary>
    /// The rows named by <paramref name="rows"/> (in that order) into <paramref name="destination"/> [rows.Length ×
    /// FeatureCount] row-major: the gather of a training step's input. With <paramref name="minus"/> (FeatureCount
    /// values, e.g. <see cref="ZeroOffsets"/>), value − minus[j] in the same pass: the same bits as subtracting after.
    /// </summary>
    public unsafe void GatherRows(ReadOnlySpan<int> rows, Span<float> destination, ReadOnlySpan<float> minus = default)
    {
        int f = FeatureCount;
        if (destination.Length < (long)rows.Length * f) throw new ArgumentException($"destination holds {destination.Length} values, {rows.Length} rows of {f} need {(long)rows.Length * f}");
        if (!minus.IsEmpty && minus.Length != f) throw new ArgumentException($"{minus.Length} values to subtract from rows of {f} features", nameof(minus));
        fixed (byte* codes = _codes.Span) fixed (float* values = _values)
        {
            byte* storage = values is null ? codes : (byte*)values;
            long rowBytes = values is null ? f : (long)f * sizeof(float);
            for (int i = 0; i < Math.Min(PrefetchRows, rows.Length); i++) PrefetchRow(storage, rowBytes, rows[i]);
            for (int i = 0; i < rows.Length; i++)
            {
                if (i + PrefetchRows < rows.Length) PrefetchRow(storage, rowBytes, rows[i + PrefetchRows]);
                CheckRow(rows[i]);
                DecodeRow(rows[i], destination.Slice(i * f, f), minus);
            }
        }
    }

    // A training step reads its rows in random order from storage larger than the caches (Fashion-MNIST: 47 MB), so
    // each row is a few memory latencies; decoding one takes about one. Asking for the rows a few ahead overlaps those
    // misses with the decoding (measured: 256 random rows in ~115 µs without, ~40 µs when they are cached).
    private const int PrefetchRows = 4;

    private unsafe void PrefetchRow(byte* storage, long rowBytes, int row)
    {
        if (!Sse.IsSupported || (uint)row >= (uint)Count) return;
        byte* start = storage + row * rowBytes;
        for (long o = 0; o < rowBytes; o += 64) Sse.Prefetch0(start + o);
        Sse.Prefetch0(start + rowBytes - 1);
    }

    internal void CheckRow(int row)
    {
        if ((uint)row >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(row), $"row {row} is outside dataset '{Name}' of {Count} rows");
    }

    // destination[j] = value(row, j), then (destination[j] − shift[j]) · scale[j] when normalized, then − minus[j] when given.
    private void DecodeRow(int row, Span<float> destination, ReadOnlySpan<float> minus = default)
    {
        int f = FeatureCount;
        if (_values is { } values)
        {
            var source = values.AsSpan(row * f, f);
            if (_shift is { } shift)
            {
                TensorPrimitives.Subtract(source, shift, destination);
                TensorPrimitives.Multiply(destination, _scale!, destination);
            }
            else source.CopyTo(destination);
            if (!minus.IsEmpty) TensorPrimitives.Subtract(destination, minus, destination);
        }
        else if (_shift is { } shift) DecodeBytesNormalized(_codes.Span.Slice(row * f, f), CodeDivisor, shift, _scale!, minus, destination);
        else
        {
            DecodeBytesNormalized(_codes.Span.Slice(row * f, f), CodeDivisor, default, default, default, destination);
            if (!minus.IsEmpty) TensorPrimitives.Subtract(destination, minus, destination);
        }
    }

    /// <summary>
    /// destination[j] = (float)codes[j] / divisor, then (· − shift[j]) · scale[j] when <paramref name="shift"/> is not
    /// empty, then − minus[j] when <paramref name="minus"/> is not empty (normalized only); one pass, each operation rounded to float32 on its own (no FMA). IEEE division is correctly rounded, so
    /// the vector and scalar forms give the same bits (the same as a 256-entry table of b / divisor).
    /// </summary>
    private static void DecodeBytesNormalized(ReadOnlySpan<byte> codes, float divisor, ReadOnlySpan<float> shift, ReadOnlySpan<float> scale,
        ReadOnlySpan<float> minus, Span<float> destination)
    {
        int n = codes.Length, j = 0;
        bool normalize = !shift.IsEmpty, subtract = normalize && !minus.IsEmpty;
        ref byte c = ref MemoryMarshal.GetReference(codes);
        ref float d = ref MemoryMarshal.GetReference(destination);
        ref float sh = ref MemoryMarshal.GetReference(shift);
        ref float sc = ref MemoryMarshal.GetReference(scale);
        ref float mi = ref MemoryMarshal.GetReference(minus);
        if (Vector256.IsHardwareAccelerated)
        {
            var div = Vector256.Create(divisor);
            for (; j <= n - Vector256<byte>.Count; j += Vector256<byte>.Count)
            {
                var (lo16, hi16) = Vector256.Widen(Vector256.LoadUnsafe(ref c, (nuint)j));
                var (q0, q1) = Vector256.Widen(lo16);
                var (q2, q3) = Vector256.Widen(hi16);
                nuint o = (nuint)j;
                var v0 = Vector256.ConvertToSingle(q0.AsInt32()) / div;
                var v1 = Vector256.ConvertToSingle(q1.AsInt32()) / div;
                var v2 = Vector256.ConvertToSingle(q2.AsInt32()) / div;
                var v3 = Vector256.ConvertToSingle(q3.AsInt32()) / div;
                if (normalize)
                {
                    v0 = (v0 - Vector256.LoadUnsafe(ref sh, o)) * Vector256.LoadUnsafe(ref sc, o);
                    v1 = (v1 - Vector256.LoadUnsafe(ref sh, o + 8)) * Vector256.LoadUnsafe(ref sc, o + 8);
                    v2 = (v2 - Vector256.LoadUnsafe(ref sh, o + 16)) * Vector256.LoadUnsafe(ref sc, o + 16);
                    v3 = (v3 - Vector256.LoadUnsafe(ref sh, o + 24)) * Vector256.LoadUnsafe(ref sc, o + 24);
                }
                if (subtract)
                {
                    v0 -= Vector256.LoadUnsafe(ref mi, o);
                    v1 -= Vector256.LoadUnsafe(ref mi, o + 8);
                    v2 -= Vector256.LoadUnsafe(ref mi, o + 16);
                    v3 -= Vector256.LoadUnsafe(ref mi, o + 24);
                }
                v0.StoreUnsafe(ref d, o);
                v1.StoreUnsafe(ref d, o + 8);
                v2.StoreUnsafe(ref d, o + 16);
                v3.StoreUnsafe(ref d, o + 24);
            }
        }
        for (; j < n; j++)
        {
            float v = codes[j] / divisor;
            if (normalize) v = (v - shift[j]) * scale[j];
            destination[j] = subtract ? v - minus[j] : v;
        }
    }
}

/// <summary>
/// A train/test pair and the SHA-256 of the source files (checked at join: docs/design.md, "Cluster membership and failure"). <see cref="SplitDependsOnSeed"/>
/// is true when the split is drawn with the seed (CSV, digits) and false when the files fix it (IDX), so a node
/// holding the split of one seed knows whether it must load again for another.
/// </summary>
public sealed record DatasetSplit(Dataset Train, Dataset Test, string Sha256, bool SplitDependsOnSeed)
{
    /// <summary>The scaling the loader applied to the file's raw values (null: none); a model trained on the split records it.</summary>
    public InputPreprocessing? Preprocessing { get; init; }

    /// <summary>
    /// The shape of one sample before it was flattened into a row (IDX images: rows × columns; the digits: 8 × 8); null
    /// for a CSV file's flat rows. Two image sets of one pixel count but other shapes hold other pictures.
    /// </summary>
    public IReadOnlyList<int>? SampleShape { get; init; }
}

/// <summary>Bad dataset input; the message names the file and the row or offset.</summary>
public sealed class DatasetException(string message) : Exception(message);
