using System.Buffers.Binary;
using System.Text;

namespace BnCluster.Core.Export;

/// <summary>
/// The protocol-buffers wire format, as much of it as an ONNX model needs: one message's fields appended in the order
/// they are written. A field is a key (field number &lt;&lt; 3 | wire type) followed by a varint (wire type 0), a
/// length-prefixed byte string or embedded message (2) or a little-endian 32-bit value (5). Embedded messages are
/// written whole into their parent (<see cref="Message"/>), which is fine at the size of an MLP.
/// </summary>
internal sealed class ProtobufWriter
{
    private const int WireVarint = 0, WireLengthDelimited = 2, WireFixed32 = 5;
    private readonly MemoryStream _buffer = new();

    public byte[] ToArray() => _buffer.ToArray();

    public ProtobufWriter Int64(int field, long value)
    {
        Key(field, WireVarint);
        Varint(unchecked((ulong)value)); // negative int64 is ten bytes of two's complement, as protobuf has it
        return this;
    }

    public ProtobufWriter Float(int field, float value)
    {
        Key(field, WireFixed32);
        Span<byte> bytes = stackalloc byte[4];
        BinaryPrimitives.WriteSingleLittleEndian(bytes, value);
        _buffer.Write(bytes);
        return this;
    }

    public ProtobufWriter String(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

    public ProtobufWriter Bytes(int field, ReadOnlySpan<byte> value)
    {
        Key(field, WireLengthDelimited);
        Varint((ulong)value.Length);
        _buffer.Write(value);
        return this;
    }

    /// <summary>An embedded message: its fields are written by <paramref name="build"/> into a writer of its own.</summary>
    public ProtobufWriter Message(int field, Action<ProtobufWriter> build)
    {
        var inner = new ProtobufWriter();
        build(inner);
        return Bytes(field, inner._buffer.GetBuffer().AsSpan(0, (int)inner._buffer.Length));
    }

    private void Key(int field, int wireType) => Varint((ulong)((uint)field << 3 | (uint)wireType));

    private void Varint(ulong value)
    {
        while (value >= 0x80)
        {
            _buffer.WriteByte((byte)(value | 0x80));
            value >>= 7;
        }
        _buffer.WriteByte((byte)value);
    }
}
