namespace BnCluster.Core.Kernels;

/// <summary>
/// A range-partitioned body run on the <see cref="GemmThreadPool"/>: [0, <see cref="Count"/>) is cut into up to
/// <see cref="ChunksPerPart"/> chunks per part at multiples of <see cref="Align"/>; part p calls
/// <c>Body(State, start, end)</c> on the chunks it claims (<see cref="ChunkClaims"/>, as <see cref="GemmJob"/> does with
/// products). The body is a static function and the state an unmanaged struct on the caller's stack
/// (passed by pointer) or a preallocated context object, so a dispatch allocates nothing. Reused for every call (fields are overwritten).
/// Bodies must only touch disjoint data per range (e.g. feature columns, element ranges): results then do not
/// depend on the number of parts or on which part ran which chunk.
/// </summary>
internal sealed unsafe class RangeJob : IParallelJob
{
    /// <summary>Chunks per part at most: enough for a part to leave a quarter of its share to the others.</summary>
    public const int ChunksPerPart = 4;

    public delegate*<void*, int, int, void> Body;
    public void* State;
    public delegate*<object, int, int, void> ContextBody;
    public object? Context;
    public int Count, Align, Phase;
    private readonly ChunkClaims _claims = new();
    private int _parts, _chunksPerPart;

    public int Parts => _parts;

    /// <summary>
    /// Sets the parts of the next run and cuts each share into as many chunks (up to <see cref="ChunksPerPart"/>) as keep
    /// <paramref name="minPerChunk"/> indices each; clears the claims (before dispatch, on the caller).
    /// </summary>
    public void Start(int parts, int minPerChunk)
    {
        _parts = parts;
        _chunksPerPart = Math.Clamp(Count / parts / Math.Max(1, minPerChunk), 1, ChunksPerPart);
        _claims.Reset(_chunksPerPart * parts, parts);
    }

    /// <summary>
    /// Share [start, end) of part <paramref name="part"/>: the inner boundaries lie at <paramref name="phase"/> + a
    /// multiple of <paramref name="align"/> (0 ≤ phase &lt; align; a phase lets the caller put them on cache-line
    /// boundaries of an unaligned array); the first share starts at 0, the last ends at <paramref name="count"/>.
    /// </summary>
    public static void ShareOf(int part, int parts, int count, int align, int phase, out int start, out int end)
    {
        start = Boundary(part, parts, count, align, phase);
        end = Boundary(part + 1, parts, count, align, phase);
    }

    private static int Boundary(int p, int parts, int count, int align, int phase)
    {
        if (p <= 0) return 0;
        if (p >= parts || count <= phase) return count;
        int units = (count - phase + align - 1) / align;
        return Math.Min(count, phase + (int)((long)units * p / parts) * align);
    }

    public void Execute(int part)
    {
        int chunks = _chunksPerPart * _parts;
        foreach (int c in ChunkClaims.Order(part, _parts, chunks))
            if (_claims.TryClaim(c)) RunChunk(c, chunks);
    }

    private void RunChunk(int chunk, int chunks)
    {
        ShareOf(chunk, chunks, Count, Align, Phase, out int start, out int end);
        if (start >= end) return;
        if (Context is not null) ContextBody(Context, start, end);
        else Body(State, start, end);
    }
}
