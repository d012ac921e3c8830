using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace BnCluster.Core.Serialization;

/// <summary>
/// Writes MessagePack (msgpack.org spec) into an <see cref="IBufferWriter{T}"/>, always in the
/// smallest encoding of each value. Every write asks the buffer writer for a span, fills it and
/// advances: nothing is allocated per value.
/// </summary>
/// <remarks>
/// A readonly struct: its only state is the buffer writer, so copies of it (passing it by value to
/// helpers) all write to the same place and none can get out of step; being a struct it costs no
/// allocation per message. Large payloads (bin, str, float arrays) are copied in chunks of whatever
/// span the buffer writer offers, so a pipe-backed writer never has to hold one giant segment.
/// </remarks>
public readonly struct MessagePackWriter
{
    private readonly IBufferWriter<byte> _output;

    public MessagePackWriter(IBufferWriter<byte> output)
    {
        ArgumentNullException.ThrowIfNull(output);
        _output = output;
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public void WriteNil() => WriteByte(MessagePackCode.Nil);

    public void WriteBoolean(bool value) => WriteByte(value ? MessagePackCode.True : MessagePackCode.False);

    public void WriteInt32(int value) => WriteInt64(value);

    /// <summary>Smallest of: positive/negative fixint, uint8..64 (for non-negative values), int8..64.</summary>
    public void WriteInt64(long value)
    {
        if (value >= 0) { WriteUInt64((ulong)value); return; }
        if (value >= -32) { WriteByte(unchecked((byte)value)); return; }
        if (value >= sbyte.MinValue)
        {
            Span<byte> s = _output.GetSpan(2);
            s[0] = MessagePackCode.Int8; s[1] = unchecked((byte)value);
            _output.Advance(2);
        }
        else if (value >= short.MinValue)
        {
            Span<byte> s = _output.GetSpan(3);
            s[0] = MessagePackCode.Int16; BinaryPrimitives.WriteInt16BigEndian(s[1..], (short)value);
            _output.Advance(3);
        }
        else if (value >= int.MinValue)
        {
            Span<byte> s = _output.GetSpan(5);
            s[0] = MessagePackCode.Int32; BinaryPrimitives.WriteInt32BigEndian(s[1..], (int)value);
            _output.Advance(5);
        }
        else
        {
            Span<byte> s = _output.GetSpan(9);
            s[0] = MessagePackCode.Int64; BinaryPrimitives.WriteInt64BigEndian(s[1..], value);
            _output.Advance(9);
        }
    }

    public void WriteUInt64(ulong value)
    {
        if (value <= MessagePackCode.MaxPositiveFixInt) { WriteByte((byte)value); return; }
        if (value <= byte.MaxValue)
        {
            Span<byte> s = _output.GetSpan(2);
            s[0] = MessagePackCode.UInt8; s[1] = (byte)value;
            _output.Advance(2);
        }
        else if (value <= ushort.MaxValue)
        {
            Span<byte> s = _output.GetSpan(3);
            s[0] = MessagePackCode.UInt16; BinaryPrimitives.WriteUInt16BigEndian(s[1..], (ushort)value);
            _output.Advance(3);
        }
        else if (value <= uint.MaxValue)
        {
            Span<byte> s = _output.GetSpan(5);
            s[0] = MessagePackCode.UInt32; BinaryPrimitives.WriteUInt32BigEndian(s[1..], (uint)value);
            _output.Advance(5);
        }
        else
        {
            Span<byte> s = _output.GetSpan(9);
            s[0] = MessagePackCode.UInt64; BinaryPrimitives.WriteUInt64BigEndian(s[1..], value);
            _output.Advance(9);
        }
    }

    /// <summary>float32 (0xca), big-endian IEEE 754.</summary>
    public void WriteSingle(float value)
    {
        Span<byte> s = _output.GetSpan(5);
        s[0] = MessagePackCode.Float32; BinaryPrimitives.WriteSingleBigEndian(s[1..], value);
        _output.Advance(5);
    }

    /// <summary>float64 (0xcb), big-endian IEEE 754.</summary>
    public void WriteDouble(double value)
    {
        Span<byte> s = _output.GetSpan(9);
        s[0] = MessagePackCode.Float64; BinaryPrimitives.WriteDoubleBigEndian(s[1..], value);
        _output.Advance(9);
    }

    /// <summary>UTF-8 string as fixstr/str8/str16/str32, whichever is smallest. Null writes nil.</summary>
    public void WriteString(string? value)
    {
        if (value is null) { WriteNil(); return; }
        WriteString(value.AsSpan());
    }

    public void WriteString(ReadOnlySpan<char> value)
    {
        int byteCount = StrictUtf8.GetByteCount(value); // throws on lone surrogates rather than writing U+FFFD
        WriteStringHeader(byteCount);
        if (byteCount == 0) return;
        Span<byte> s = _output.GetSpan(byteCount);
        int written = StrictUtf8.GetBytes(value, s);
        _output.Advance(written);
    }

    /// <summary>A string whose UTF-8 bytes the caller already has (not validated).</summary>
    public void WriteStringUtf8(ReadOnlySpan<byte> utf8)
    {
        WriteStringHeader(utf8.Length);
        WriteRaw(utf8);
    }

    public void WriteStringHeader(int byteCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(byteCount);
        if (byteCount <= 31) { WriteByte((byte)(MessagePackCode.FixStr | byteCount)); return; }
        if (byteCount <= byte.MaxValue) WriteCodeAndLength8(MessagePackCode.Str8, byteCount);
        else if (byteCount <= ushort.MaxValue) WriteCodeAndLength16(MessagePackCode.Str16, byteCount);
        else WriteCodeAndLength32(MessagePackCode.Str32, byteCount);
    }

    /// <summary>bin8/bin16/bin32, whichever is smallest.</summary>
    public void WriteBinary(ReadOnlySpan<byte> value)
    {
        WriteBinaryHeader(value.Length);
        WriteRaw(value);
    }

    public void WriteBinaryHeader(int byteCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(byteCount);
        if (byteCount <= byte.MaxValue) WriteCodeAndLength8(MessagePackCode.Bin8, byteCount);
        else if (byteCount <= ushort.MaxValue) WriteCodeAndLength16(MessagePackCode.Bin16, byteCount);
        else WriteCodeAndLength32(MessagePackCode.Bin32, byteCount);
    }

    /// <summary>The tensor encoding of DESIGN §4/§5: a bin holding the floats as little-endian float32.</summary>
    public void WriteFloat32Array(ReadOnlySpan<float> values)
    {
        if (values.Length > int.MaxValue / sizeof(float)) throw new ArgumentOutOfRangeException(nameof(values), "too many floats for one bin32");
        WriteBinaryHeader(values.Length * sizeof(float));
        if (BitConverter.IsLittleEndian) { WriteRaw(MemoryMarshal.AsBytes(values)); return; }
        foreach (float v in values)
        {
            Span<byte> s = _output.GetSpan(sizeof(float));
            BinaryPrimitives.WriteSingleLittleEndian(s, v);
            _output.Advance(sizeof(float));
        }
    }

    /// <summary>A bin holding the values as little-endian float64.</summary>
    public void WriteFloat64Array(ReadOnlySpan<double> values)
    {
        if (values.Length > int.MaxValue / sizeof(double)) throw new ArgumentOutOfRangeException(nameof(values), "too many doubles for one bin32");
        WriteBinaryHeader(values.Length * sizeof(double));
        if (BitConverter.IsLittleEndian) { WriteRaw(MemoryMarshal.AsBytes(values)); return; }
        foreach (double v in values)
        {
            Span<byte> s = _output.GetSpan(sizeof(double));
            BinaryPrimitives.WriteDoubleLittleEndian(s, v);
            _output.Advance(sizeof(double));
        }
    }

    /// <summary>fixarray/array16/array32 header; the caller then writes <paramref name="count"/> values.</summary>
    public void WriteArrayHeader(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count <= 15) WriteByte((byte)(MessagePackCode.FixArray | count));
        else if (count <= ushort.MaxValue) WriteCodeAndLength16(MessagePackCode.Array16, count);
        else WriteCodeAndLength32(MessagePackCode.Array32, count);
    }

    /// <summary>fixmap/map16/map32 header; the caller then writes <paramref name="count"/> key/value pairs.</summary>
    public void WriteMapHeader(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count <= 15) WriteByte((byte)(MessagePackCode.FixMap | count));
        else if (count <= ushort.MaxValue) WriteCodeAndLength16(MessagePackCode.Map16, count);
        else WriteCodeAndLength32(MessagePackCode.Map32, count);
    }

    /// <summary>fixext1/2/4/8/16 when the payload has exactly that size, else ext8/16/32.</summary>
    public void WriteExtension(sbyte type, ReadOnlySpan<byte> data)
    {
        WriteExtensionHeader(type, data.Length);
        WriteRaw(data);
    }

    public void WriteExtensionHeader(sbyte type, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        byte fixCode = length switch
        {
            1 => MessagePackCode.FixExt1,
            2 => MessagePackCode.FixExt2,
            4 => MessagePackCode.FixExt4,
            8 => MessagePackCode.FixExt8,
            16 => MessagePackCode.FixExt16,
            _ => 0,
        };
        if (fixCode != 0)
        {
            Span<byte> f = _output.GetSpan(2);
            f[0] = fixCode; f[1] = unchecked((byte)type);
            _output.Advance(2);
            return;
        }
        if (length <= byte.MaxValue) WriteCodeAndLength8(MessagePackCode.Ext8, length);
        else if (length <= ushort.MaxValue) WriteCodeAndLength16(MessagePackCode.Ext16, length);
        else WriteCodeAndLength32(MessagePackCode.Ext32, length);
        WriteByte(unchecked((byte)type));
    }

    /// <summary>
    /// Timestamp extension (type −1) in its smallest form: timestamp32 (whole seconds in uint32),
    /// timestamp64 (30-bit nanoseconds + 34-bit seconds), else timestamp96 (uint32 ns + int64 s).
    /// </summary>
    public void WriteTimestamp(DateTimeOffset value)
    {
        long ticks = value.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
        long seconds = Math.DivRem(ticks, TimeSpan.TicksPerSecond, out long remainderTicks);
        if (remainderTicks < 0) { seconds--; remainderTicks += TimeSpan.TicksPerSecond; } // floor, nanoseconds ≥ 0
        uint nanoseconds = (uint)(remainderTicks * 100);
        WriteTimestamp(seconds, nanoseconds);
    }

    /// <summary>Timestamp from Unix seconds and nanoseconds (0 ≤ ns &lt; 10⁹), smallest form.</summary>
    public void WriteTimestamp(long unixSeconds, uint nanoseconds)
    {
        if (nanoseconds >= 1_000_000_000) throw new ArgumentOutOfRangeException(nameof(nanoseconds), "nanoseconds must be below 10^9");
        if ((ulong)unixSeconds >> 34 == 0) // 0 ≤ seconds < 2^34
        {
            ulong packed = ((ulong)nanoseconds << 34) | (ulong)unixSeconds;
            if ((packed & 0xffffffff00000000UL) == 0)
            {
                Span<byte> s = _output.GetSpan(6);
                s[0] = MessagePackCode.FixExt4; s[1] = 0xff;
                BinaryPrimitives.WriteUInt32BigEndian(s[2..], (uint)packed);
                _output.Advance(6);
            }
            else
            {
                Span<byte> s = _output.GetSpan(10);
                s[0] = MessagePackCode.FixExt8; s[1] = 0xff;
                BinaryPrimitives.WriteUInt64BigEndian(s[2..], packed);
                _output.Advance(10);
            }
            return;
        }
        Span<byte> t = _output.GetSpan(15);
        t[0] = MessagePackCode.Ext8; t[1] = 12; t[2] = 0xff;
        BinaryPrimitives.WriteUInt32BigEndian(t[3..], nanoseconds);
        BinaryPrimitives.WriteInt64BigEndian(t[7..], unixSeconds);
        _output.Advance(15);
    }

    /// <summary>Copies bytes as they are (an already-encoded MessagePack value, or a payload after a header).</summary>
    public void WriteRaw(ReadOnlySpan<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            Span<byte> s = _output.GetSpan(Math.Min(bytes.Length, 64 * 1024));
            int n = Math.Min(s.Length, bytes.Length);
            bytes[..n].CopyTo(s);
            _output.Advance(n);
            bytes = bytes[n..];
        }
    }

    private void WriteByte(byte b)
    {
        Span<byte> s = _output.GetSpan(1);
        s[0] = b;
        _output.Advance(1);
    }

    private void WriteCodeAndLength8(byte code, int length)
    {
        Span<byte> s = _output.GetSpan(2);
        s[0] = code; s[1] = (byte)length;
        _output.Advance(2);
    }

    private void WriteCodeAndLength16(byte code, int length)
    {
        Span<byte> s = _output.GetSpan(3);
        s[0] = code; BinaryPrimitives.WriteUInt16BigEndian(s[1..], (ushort)length);
        _output.Advance(3);
    }

    private void WriteCodeAndLength32(byte code, int length)
    {
        Span<byte> s = _output.GetSpan(5);
        s[0] = code; BinaryPrimitives.WriteUInt32BigEndian(s[1..], (uint)length);
        _output.Advance(5);
    }
}
