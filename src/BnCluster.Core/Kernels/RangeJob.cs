namespace BnCluster.Core.Kernels;

/// <summary>
/// A range-partitioned body run on the <see cref="GemmThreadPool"/>: part p of <see cref="Parts"/> calls
/// <c>Body(State, start, end)</c> on its contiguous share of [0, <see cref="Count"/>), shares cut at multiples of
/// <see cref="Align"/>. The body is a static function and the state an unmanaged struct on the caller's stack
/// (passed by pointer) or a preallocated context object, so a dispatch allocates nothing. Reused for every call (fields are overwritten).
/// Bodies must only touch disjoint data per range (e.g. feature columns, element ranges): results then do not
/// depend on the number of parts.
/// </summary>
internal sealed unsafe class RangeJob : IParallelJob
{
    public delegate*<void*, int, int, void> Body;
    public void* State;
    public delegate*<object, int, int, void> ContextBody;
    public object? Context;
    public int Count, Align, Parts;

    /// <summary>Share [start, end) of part <paramref name="part"/>: whole multiples of Align, the last share takes the rest.</summary>
    public static void ShareOf(int part, int parts, int count, int align, out int start, out int end)
    {
        int units = (count + align - 1) / align;
        start = Math.Min(count, (int)((long)units * part / parts) * align);
        end = part == parts - 1 ? count : Math.Min(count, (int)((long)units * (part + 1) / parts) * align);
    }

    public void Execute(int part)
    {
        ShareOf(part, Parts, Count, Align, out int start, out int end);
        if (start >= end) return;
        if (Context is not null) ContextBody(Context, start, end);
        else Body(State, start, end);
    }
}
