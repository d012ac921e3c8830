using System.Runtime.CompilerServices;
using BnCluster.Core.Training;

namespace BnCluster.Collectives;

/// <summary>
/// A bounded, process-wide pool of float arrays of exact lengths, for the big tensors of the step messages
/// (parameter snapshots, gradients), and of float64 arrays for the BN statistics messages, so that a step allocates
/// none. Ownership rule: whoever creates a message
/// rents its arrays and never touches them after sending; whoever consumes the message (the receiving actor
/// after using it, or the remoting codec after encoding it, see <c>TrainingMessageSerializer</c>) returns them.
/// A tensor set sent to several receivers at once is registered with <see cref="Share"/> and goes back to the
/// pool at the last <see cref="Release(float[][])"/>. A message that is lost (dead letters, a stopped actor)
/// simply leaves its arrays to the garbage collector: the pool then allocates new ones.
/// </summary>
public static class TensorPool
{
    /// <summary>Arrays kept per length; beyond that, returned arrays are dropped.</summary>
    public const int ArraysPerLength = 32;

    /// <summary>The arrays of one element type, by length (guarded by <see cref="Gate"/>).</summary>
    private sealed class Buckets<T>
    {
        private sealed class Bucket
        {
            public readonly T[]?[] Arrays = new T[ArraysPerLength][];
            public int Count;
        }

        private readonly Dictionary<int, Bucket> _byLength = [];

        public T[]? TryTake(int length)
        {
            if (!_byLength.TryGetValue(length, out var bucket) || bucket.Count == 0) return null;
            var array = bucket.Arrays[--bucket.Count]!;
            bucket.Arrays[bucket.Count] = null;
            return array;
        }

        public void Put(T[] array)
        {
            if (!_byLength.TryGetValue(array.Length, out var bucket)) _byLength[array.Length] = bucket = new Bucket();
            // A second return would hand one array to two renters: a bug to name rather than corrupt tensors.
            for (int i = 0; i < bucket.Count; i++)
                if (ReferenceEquals(bucket.Arrays[i], array))
                    throw new InvalidOperationException($"an array of {array.Length} {typeof(T).Name} was returned to the pool twice");
            if (bucket.Count < ArraysPerLength) bucket.Arrays[bucket.Count++] = array;
        }

        public int Count(int length) => _byLength.TryGetValue(length, out var bucket) ? bucket.Count : 0;
    }

    private sealed class Holders
    {
        public int Count;
    }

    private static readonly Lock Gate = new();
    private static readonly Buckets<float> Floats = new();
    private static readonly Buckets<double> Doubles = new();
    // Shared sets: the entry lives as long as the set does, so a set nobody releases leaks nothing.
    private static readonly ConditionalWeakTable<float[][], Holders> Shared = new();

    /// <summary>An array of exactly <paramref name="length"/> floats; its contents are undefined (overwrite all of it).</summary>
    public static float[] Rent(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (length == 0) return [];
        lock (Gate)
            if (Floats.TryTake(length) is { } array) return array;
        Interlocked.Increment(ref _allocations);
        return GC.AllocateUninitializedArray<float>(length);
    }

    /// <summary>An array of exactly <paramref name="length"/> float64 (BN statistics); its contents are undefined.</summary>
    public static double[] RentDoubles(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (length == 0) return [];
        lock (Gate)
            if (Doubles.TryTake(length) is { } array) return array;
        Interlocked.Increment(ref _allocations);
        return GC.AllocateUninitializedArray<double>(length);
    }

    private static long _allocations;

    /// <summary>Arrays allocated because the pool had none of the length asked for (since the process started).</summary>
    public static long Allocations => Interlocked.Read(ref _allocations);

    /// <summary>Gives <paramref name="array"/> back; the caller must not touch it any more.</summary>
    public static void Return(float[] array)
    {
        if (array.Length == 0) return;
        lock (Gate) Floats.Put(array);
    }

    /// <summary>Gives <paramref name="array"/> back; the caller must not touch it any more.</summary>
    public static void Return(double[] array)
    {
        if (array.Length == 0) return;
        lock (Gate) Doubles.Put(array);
    }

    /// <summary>A rented copy of <paramref name="values"/>, for a message that must own it.</summary>
    public static double[] RentCopy(ReadOnlySpan<double> values)
    {
        var copy = RentDoubles(values.Length);
        values.CopyTo(copy);
        return copy;
    }

    /// <summary>Arrays of the given lengths, rented.</summary>
    public static float[][] RentSet(IReadOnlyList<int> lengths)
    {
        var set = new float[lengths.Count][];
        for (int i = 0; i < set.Length; i++) set[i] = Rent(lengths[i]);
        return set;
    }

    /// <summary>Rented copies of <paramref name="tensors"/>' values, for a message that must own them.</summary>
    public static float[][] RentCopies(IReadOnlyList<NamedTensor> tensors)
    {
        var set = new float[tensors.Count][];
        for (int i = 0; i < set.Length; i++)
        {
            var source = tensors[i].Values;
            set[i] = Rent(source.Length);
            source.CopyTo(set[i], 0);
        }
        return set;
    }

    /// <summary>Marks <paramref name="set"/> as held by <paramref name="holders"/> receivers, each of which calls <see cref="Release(float[][])"/> once.</summary>
    public static void Share(float[][] set, int holders)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(holders, 1);
        lock (Gate) Shared.AddOrUpdate(set, new Holders { Count = holders });
    }

    /// <summary>
    /// One holder is done with <paramref name="set"/>: its arrays go back to the pool when it was not shared or
    /// this was its last holder.
    /// </summary>
    public static void Release(float[][] set)
    {
        lock (Gate)
        {
            if (Shared.TryGetValue(set, out var holders))
            {
                if (--holders.Count > 0) return;
                Shared.Remove(set);
            }
        }
        foreach (var array in set) Return(array);
    }

    /// <summary>Float arrays currently kept for <paramref name="length"/> (for tests).</summary>
    public static int Pooled(int length)
    {
        lock (Gate) return Floats.Count(length);
    }

    /// <summary>Float64 arrays currently kept for <paramref name="length"/> (for tests).</summary>
    public static int PooledDoubles(int length)
    {
        lock (Gate) return Doubles.Count(length);
    }
}
