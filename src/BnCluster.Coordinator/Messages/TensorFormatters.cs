using System.Buffers;
using System.Runtime.InteropServices;
using BnCluster.Collectives;
using MessagePack;
using MessagePack.Formatters;

namespace BnCluster.Coordinator.Messages;

// Arrays of numbers travel as one MessagePack bin of little-endian values (a float costs 4 bytes, not 5, and a
// copy, not a loop of tagged writes). Tensors and BN partials are read into arrays rented from TensorPool, which
// their receiver returns once consumed. A length that is not a whole number of values is refused; the bin itself
// is bounded by the frame that carried it, so nothing is allocated beyond what arrived.

/// <summary>Little-endian values of <typeparamref name="T"/> as one bin; read into <see cref="Rent"/>'s arrays.</summary>
public abstract class NumberBinFormatter<T> : IMessagePackFormatter<T[]?> where T : unmanaged
{
    public void Serialize(ref MessagePackWriter writer, T[]? value, MessagePackSerializerOptions options)
    {
        if (value is null) { writer.WriteNil(); return; }
        // The machines this runs on are little-endian (x64, arm64): the values are their own wire bytes.
        writer.Write(MemoryMarshal.AsBytes(value.AsSpan()));
    }

    public T[]? Deserialize(ref MessagePackReader reader, MessagePackSerializerOptions options)
    {
        if (reader.TryReadNil()) return null;
        var bytes = reader.ReadBytes() ?? throw new MessagePackSerializationException("a nil bin where an array was expected");
        int size = Marshal.SizeOf<T>();
        if (bytes.Length % size != 0)
            throw new MessagePackSerializationException($"a bin of {bytes.Length} bytes is not a whole number of {typeof(T).Name} values");
        var values = Rent(checked((int)(bytes.Length / size)));
        bytes.CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    protected abstract T[] Rent(int length);
}

public sealed class Float32BinFormatter : NumberBinFormatter<float>
{
    public static readonly Float32BinFormatter Instance = new();
    protected override float[] Rent(int length) => TensorPool.Rent(length);
}

public sealed class Float64BinFormatter : NumberBinFormatter<double>
{
    public static readonly Float64BinFormatter Instance = new();
    protected override double[] Rent(int length) => TensorPool.RentDoubles(length);
}

public sealed class Int32BinFormatter : NumberBinFormatter<int>
{
    public static readonly Int32BinFormatter Instance = new();
    protected override int[] Rent(int length) => new int[length];
}

/// <summary>A set of tensors (a parameter snapshot, gradients): an array of float32 bins.</summary>
public sealed class TensorSetFormatter : IMessagePackFormatter<float[][]?>
{
    public static readonly TensorSetFormatter Instance = new();

    public void Serialize(ref MessagePackWriter writer, float[][]? value, MessagePackSerializerOptions options)
    {
        if (value is null) { writer.WriteNil(); return; }
        writer.WriteArrayHeader(value.Length);
        foreach (var tensor in value) Float32BinFormatter.Instance.Serialize(ref writer, tensor, options);
    }

    public float[][]? Deserialize(ref MessagePackReader reader, MessagePackSerializerOptions options)
    {
        if (reader.TryReadNil()) return null;
        int count = reader.ReadArrayHeader(); // (bounded by the bytes left: the reader checks each element exists)
        var set = new float[count][];
        for (int i = 0; i < count; i++)
            set[i] = Float32BinFormatter.Instance.Deserialize(ref reader, options)
                     ?? throw new MessagePackSerializationException($"tensor {i} of a set is nil");
        return set;
    }
}
