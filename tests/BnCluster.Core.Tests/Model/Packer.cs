using System.Buffers;
using System.Buffers.Binary;
using MessagePack;

namespace BnCluster.Core.Tests.Model;

/// <summary>
/// Builds MessagePack test input with MessagePack-CSharp: its writer for single values (smallest encodings), its
/// serializer for value trees (which writes fixed widths: int as int32, long as int64), and raw bytes for the
/// encodings neither produces. A class so that the lambdas of a test can share one; the writer is a ref struct.
/// </summary>
internal sealed class Packer
{
    private readonly ArrayBufferWriter<byte> _buffer = new();

    public delegate void WriteAction(ref MessagePackWriter writer);

    public static byte[] Of(WriteAction write) => new Packer().Write(write).ToArray();

    public Packer Write(WriteAction write)
    {
        var writer = new MessagePackWriter(_buffer);
        write(ref writer);
        writer.Flush();
        return this;
    }

    public Packer Raw(params byte[] bytes)
    {
        _buffer.Write(bytes);
        return this;
    }

    public Packer Nil() => Write((ref MessagePackWriter w) => w.WriteNil());

    public Packer Str(string value) => Write((ref MessagePackWriter w) => w.Write(value));

    public Packer Int(long value) => Write((ref MessagePackWriter w) => w.Write(value));

    public Packer Single(float value) => Write((ref MessagePackWriter w) => w.Write(value));

    public Packer Double(double value) => Write((ref MessagePackWriter w) => w.Write(value));

    public Packer MapHeader(int count) => Write((ref MessagePackWriter w) => w.WriteMapHeader(count));

    public Packer ArrayHeader(int count) => Write((ref MessagePackWriter w) => w.WriteArrayHeader(count));

    /// <summary>The smallest bin holding <paramref name="values"/> as little-endian float32.</summary>
    public Packer Floats(float[] values) => Write((ref MessagePackWriter w) => w.Write(LittleEndian(values)));

    /// <summary>Any value tree, through MessagePackSerializer with its standard resolver.</summary>
    public Packer Value(object? value) => Raw(MessagePackSerializer.Serialize(value));

    public byte[] ToArray() => _buffer.WrittenSpan.ToArray();

    public static byte[] LittleEndian(float[] values)
    {
        var bytes = new byte[values.Length * sizeof(float)];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * sizeof(float)), values[i]);
        return bytes;
    }

    /// <summary>The low <paramref name="width"/> bytes of <paramref name="value"/>, big-endian (MessagePack's byte order).</summary>
    public static byte[] BigEndian(long value, int width)
    {
        var bytes = new byte[width];
        for (int i = 0; i < width; i++) bytes[width - 1 - i] = (byte)(value >> (8 * i));
        return bytes;
    }
}
