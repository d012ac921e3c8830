namespace BnCluster.Core.Training;

/// <summary>
/// Splits n rows over K workers in rank order, sizes differing by at most one: the first n mod K ranks take
/// ⌈n/K⌉ rows, the rest ⌊n/K⌋ (so a rank may get zero rows when n &lt; K).
/// </summary>
public static class ShardSplit
{
    public static (int Start, int Count) Shard(int rows, int workers, int rank)
    {
        if (rows < 0) throw new ArgumentOutOfRangeException(nameof(rows));
        if (workers <= 0) throw new ArgumentOutOfRangeException(nameof(workers), $"need at least one worker, got {workers}");
        if ((uint)rank >= (uint)workers) throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} of {workers} workers");
        int baseCount = rows / workers, extra = rows % workers;
        int start = rank * baseCount + Math.Min(rank, extra);
        return (start, baseCount + (rank < extra ? 1 : 0));
    }

    /// <summary>The slice of a global batch's row list that worker <paramref name="rank"/> processes.</summary>
    public static ReadOnlyMemory<int> Slice(ReadOnlyMemory<int> batch, int workers, int rank)
    {
        var (start, count) = Shard(batch.Length, workers, rank);
        return batch.Slice(start, count);
    }
}
