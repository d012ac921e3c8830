namespace BnCluster.Core.Training;

/// <summary>
/// The order of the training rows in one epoch: a permutation seeded from (seed, epoch) with our own
/// <see cref="Rng"/>, cut into global batches of <see cref="BatchSize"/> rows; the last, smaller batch is kept.
/// The coordinator owns it; the same seed gives the same plan on every machine.
/// </summary>
public sealed class EpochPlan
{
    private readonly int[] _order;

    public EpochPlan(int rows, int batchSize, ulong seed, int epoch)
    {
        if (rows <= 0) throw new ArgumentOutOfRangeException(nameof(rows), $"an epoch needs rows, got {rows}");
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), $"batch size must be positive, got {batchSize}");
        if (epoch < 0) throw new ArgumentOutOfRangeException(nameof(epoch));
        Rows = rows;
        BatchSize = batchSize;
        Epoch = epoch;
        _order = new int[rows];
        for (int i = 0; i < rows; i++) _order[i] = i;
        ulong mix = seed + (ulong)epoch;
        new Rng(Rng.SplitMix64(ref mix)).Shuffle(_order);
    }

    public int Rows { get; }
    public int BatchSize { get; }
    public int Epoch { get; }
    public int BatchCount => (Rows + BatchSize - 1) / BatchSize;

    /// <summary>The whole permutation of the epoch.</summary>
    public ReadOnlyMemory<int> Order => _order;

    /// <summary>Dataset rows of global batch <paramref name="batch"/> (the last may be smaller).</summary>
    public ReadOnlyMemory<int> Batch(int batch)
    {
        if ((uint)batch >= (uint)BatchCount) throw new ArgumentOutOfRangeException(nameof(batch), $"batch {batch} of {BatchCount}");
        int start = batch * BatchSize;
        return _order.AsMemory(start, Math.Min(BatchSize, Rows - start));
    }
}
