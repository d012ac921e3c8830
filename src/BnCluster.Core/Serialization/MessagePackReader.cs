using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace BnCluster.Core.Serialization;

/// <summary>An extension value: its type code and a slice of the reader's buffer holding its payload.</summary>
public readonly ref struct MessagePackExtension(sbyte type, ReadOnlySpan<byte> data)
{
    public sbyte Type { get; } = type;
    public ReadOnlySpan<byte> Data { get; } = data;
}

/// <summary>
/// Reads MessagePack from one whole buffer (a frame or a file). Accepts every valid encoding of a
/// value (any integer width, float32 or float64, str8/16/32, …). Every declared length is checked
/// against the bytes left before anything is sliced or allocated, and nesting in <see cref="Skip"/>
/// is limited to <see cref="MaxDepth"/>. Every failure is a <see cref="MessagePackException"/> naming
/// the offset of the offending value, what was expected and what was found.
/// </summary>
public ref struct MessagePackReader
{
    public const int DefaultMaxDepth = 64;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private readonly ReadOnlySpan<byte> _buffer;
    private int _position;

    public MessagePackReader(ReadOnlySpan<byte> buffer, int maxDepth = DefaultMaxDepth)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxDepth);
        _buffer = buffer;
        _position = 0;
        MaxDepth = maxDepth;
    }

    /// <summary>Offset of the next value from the start of the buffer.</summary>
    public readonly int Position => _position;

    public readonly int Remaining => _buffer.Length - _position;

    public readonly bool End => _position >= _buffer.Length;

    /// <summary>How deep arrays/maps may nest inside one value read by <see cref="Skip"/> (and by the dynamic reader).</summary>
    public int MaxDepth { get; }

    public readonly MessagePackType PeekType()
    {
        byte code = PeekCode("any value");
        return code switch
        {
            <= MessagePackCode.MaxPositiveFixInt => MessagePackType.Integer,
            < MessagePackCode.FixArray => MessagePackType.Map,
            < MessagePackCode.FixStr => MessagePackType.Array,
            < MessagePackCode.Nil => MessagePackType.String,
            MessagePackCode.Nil => MessagePackType.Nil,
            MessagePackCode.NeverUsed => throw Error(_position, "any value", "never-used byte 0xc1"),
            MessagePackCode.False or MessagePackCode.True => MessagePackType.Boolean,
            MessagePackCode.Bin8 or MessagePackCode.Bin16 or MessagePackCode.Bin32 => MessagePackType.Binary,
            MessagePackCode.Ext8 or MessagePackCode.Ext16 or MessagePackCode.Ext32 => MessagePackType.Extension,
            MessagePackCode.Float32 or MessagePackCode.Float64 => MessagePackType.Float,
            >= MessagePackCode.UInt8 and <= MessagePackCode.Int64 => MessagePackType.Integer,
            >= MessagePackCode.FixExt1 and <= MessagePackCode.FixExt16 => MessagePackType.Extension,
            MessagePackCode.Str8 or MessagePackCode.Str16 or MessagePackCode.Str32 => MessagePackType.String,
            MessagePackCode.Array16 or MessagePackCode.Array32 => MessagePackType.Array,
            MessagePackCode.Map16 or MessagePackCode.Map32 => MessagePackType.Map,
            _ => MessagePackType.Integer, // negative fixint
        };
    }

    /// <summary>Consumes a nil and returns true, or leaves the reader where it is and returns false.</summary>
    public bool TryReadNil()
    {
        if (PeekCode("any value") != MessagePackCode.Nil) return false;
        _position++;
        return true;
    }

    public void ReadNil()
    {
        int start = _position;
        byte code = ReadCode("nil");
        if (code != MessagePackCode.Nil) throw Unexpected(start, "nil", code);
    }

    public bool ReadBoolean()
    {
        int start = _position;
        byte code = ReadCode("bool");
        return code switch
        {
            MessagePackCode.False => false,
            MessagePackCode.True => true,
            _ => throw Unexpected(start, "bool", code),
        };
    }

    /// <summary>Any integer encoding whose value fits in a long.</summary>
    public long ReadInt64()
    {
        int start = _position;
        if (TryReadInteger("integer", out long signed, out ulong unsigned, out bool isUnsigned))
        {
            if (!isUnsigned) return signed;
            if (unsigned <= long.MaxValue) return (long)unsigned;
            throw Error(start, "integer in int64 range", $"{unsigned}");
        }
        throw Unexpected(start, "integer", _buffer[start]);
    }

    /// <summary>Any integer encoding whose value is ≥ 0.</summary>
    public ulong ReadUInt64()
    {
        int start = _position;
        if (TryReadInteger("integer", out long signed, out ulong unsigned, out bool isUnsigned))
        {
            if (isUnsigned) return unsigned;
            if (signed >= 0) return (ulong)signed;
            throw Error(start, "non-negative integer", $"{signed}");
        }
        throw Unexpected(start, "integer", _buffer[start]);
    }

    public int ReadInt32()
    {
        int start = _position;
        long value = ReadInt64Unchecked(start, out ulong big, out bool tooBig);
        if (tooBig || value < int.MinValue || value > int.MaxValue)
            throw Error(start, "integer in int32 range", tooBig ? $"{big}" : $"{value}");
        return (int)value;
    }

    /// <summary>float64, float32 (widened exactly) or any integer.</summary>
    public double ReadDouble()
    {
        int start = _position;
        byte code = PeekCode("float");
        if (code == MessagePackCode.Float64)
        {
            Need(start, 9, "float64");
            _position += 9;
            return BinaryPrimitives.ReadDoubleBigEndian(_buffer.Slice(start + 1, 8));
        }
        if (code == MessagePackCode.Float32)
        {
            Need(start, 5, "float32");
            _position += 5;
            return BinaryPrimitives.ReadSingleBigEndian(_buffer.Slice(start + 1, 4));
        }
        if (TryReadInteger("float", out long signed, out ulong unsigned, out bool isUnsigned))
            return isUnsigned ? unsigned : signed;
        throw Unexpected(start, "float", code);
    }

    /// <summary>float32, float64 (rounded to nearest float32) or any integer.</summary>
    public float ReadSingle() => (float)ReadDouble();

    public string ReadString()
    {
        int start = _position;
        ReadOnlySpan<byte> utf8 = ReadStringUtf8();
        try
        {
            return StrictUtf8.GetString(utf8);
        }
        catch (DecoderFallbackException e)
        {
            throw new MessagePackException($"offset {start}: expected valid UTF-8 string, found invalid byte sequence", e);
        }
    }

    /// <summary>Null for nil, else the string.</summary>
    public string? ReadNullableString() => TryReadNil() ? null : ReadString();

    /// <summary>The raw UTF-8 bytes of a string, as a slice of the buffer (no copy, not validated).</summary>
    public ReadOnlySpan<byte> ReadStringUtf8()
    {
        int start = _position;
        byte code = ReadCode("string");
        int length;
        if (code >= MessagePackCode.FixStr && code < MessagePackCode.Nil) length = code & 0x1f;
        else if (code == MessagePackCode.Str8) length = ReadLength8(start, "str8");
        else if (code == MessagePackCode.Str16) length = ReadLength16(start, "str16");
        else if (code == MessagePackCode.Str32) length = ReadLength32(start, "str32");
        else throw Unexpected(start, "string", code);
        return TakePayload(start, length, MessagePackCode.Name(code));
    }

    /// <summary>A bin payload as a slice of the buffer (no copy).</summary>
    public ReadOnlySpan<byte> ReadBinary()
    {
        int start = _position;
        byte code = ReadCode("bin");
        int length = code switch
        {
            MessagePackCode.Bin8 => ReadLength8(start, "bin8"),
            MessagePackCode.Bin16 => ReadLength16(start, "bin16"),
            MessagePackCode.Bin32 => ReadLength32(start, "bin32"),
            _ => throw Unexpected(start, "bin", code),
        };
        return TakePayload(start, length, MessagePackCode.Name(code));
    }

    /// <summary>Reads a bin of little-endian float32 into <paramref name="destination"/>, whose length must match.</summary>
    public void ReadFloat32Array(Span<float> destination)
    {
        int start = _position;
        ReadOnlySpan<byte> bytes = ReadFloatBin(start, sizeof(float), "float32");
        if (bytes.Length / sizeof(float) != destination.Length)
            throw Error(start, $"bin of {destination.Length} float32", $"{bytes.Length / sizeof(float)} float32");
        CopyFloat32(bytes, destination);
    }

    /// <summary>Reads a bin of little-endian float32 into a new array (allocated only after the length is checked).</summary>
    public float[] ReadFloat32Array()
    {
        ReadOnlySpan<byte> bytes = ReadFloatBin(_position, sizeof(float), "float32");
        float[] result = new float[bytes.Length / sizeof(float)];
        CopyFloat32(bytes, result);
        return result;
    }

    /// <summary>
    /// Reads a bin of little-endian float32 into an array of exactly its length from <paramref name="allocate"/>
    /// (e.g. a pool's rent; called only after the length is checked).
    /// </summary>
    public float[] ReadFloat32Array(Func<int, float[]> allocate)
    {
        ReadOnlySpan<byte> bytes = ReadFloatBin(_position, sizeof(float), "float32");
        float[] result = allocate(bytes.Length / sizeof(float));
        if (result.Length != bytes.Length / sizeof(float)) throw new InvalidOperationException($"allocator returned {result.Length} floats for {bytes.Length / sizeof(float)}");
        CopyFloat32(bytes, result);
        return result;
    }

    public void ReadFloat64Array(Span<double> destination)
    {
        int start = _position;
        ReadOnlySpan<byte> bytes = ReadFloatBin(start, sizeof(double), "float64");
        if (bytes.Length / sizeof(double) != destination.Length)
            throw Error(start, $"bin of {destination.Length} float64", $"{bytes.Length / sizeof(double)} float64");
        CopyFloat64(bytes, destination);
    }

    /// <summary>
    /// Reads a bin of little-endian float64 into an array of exactly its length from <paramref name="allocate"/>
    /// (e.g. a pool's rent; called only after the length is checked).
    /// </summary>
    public double[] ReadFloat64Array(Func<int, double[]> allocate)
    {
        ReadOnlySpan<byte> bytes = ReadFloatBin(_position, sizeof(double), "float64");
        double[] result = allocate(bytes.Length / sizeof(double));
        if (result.Length != bytes.Length / sizeof(double)) throw new InvalidOperationException($"allocator returned {result.Length} doubles for {bytes.Length / sizeof(double)}");
        CopyFloat64(bytes, result);
        return result;
    }

    public double[] ReadFloat64Array()
    {
        ReadOnlySpan<byte> bytes = ReadFloatBin(_position, sizeof(double), "float64");
        double[] result = new double[bytes.Length / sizeof(double)];
        CopyFloat64(bytes, result);
        return result;
    }

    /// <summary>Element count of an array; fails fast if the buffer cannot hold that many values (≥ 1 byte each).</summary>
    public int ReadArrayHeader()
    {
        int start = _position;
        byte code = ReadCode("array");
        int count;
        if (code >= MessagePackCode.FixArray && code < MessagePackCode.FixStr) count = code & 0x0f;
        else if (code == MessagePackCode.Array16) count = ReadLength16(start, "array16");
        else if (code == MessagePackCode.Array32) count = ReadLength32(start, "array32");
        else throw Unexpected(start, "array", code);
        if (count > Remaining)
            throw Error(start, $"{MessagePackCode.Name(code)} of {count} elements", $"only {Remaining} bytes left");
        return count;
    }

    /// <summary>Entry count of a map; fails fast if the buffer cannot hold that many pairs (≥ 2 bytes each).</summary>
    public int ReadMapHeader()
    {
        int start = _position;
        byte code = ReadCode("map");
        int count;
        if (code >= MessagePackCode.FixMap && code < MessagePackCode.FixArray) count = code & 0x0f;
        else if (code == MessagePackCode.Map16) count = ReadLength16(start, "map16");
        else if (code == MessagePackCode.Map32) count = ReadLength32(start, "map32");
        else throw Unexpected(start, "map", code);
        if ((long)count * 2 > Remaining)
            throw Error(start, $"{MessagePackCode.Name(code)} of {count} entries", $"only {Remaining} bytes left");
        return count;
    }

    public MessagePackExtension ReadExtension()
    {
        int start = _position;
        byte code = ReadCode("ext");
        int length = code switch
        {
            MessagePackCode.FixExt1 => 1,
            MessagePackCode.FixExt2 => 2,
            MessagePackCode.FixExt4 => 4,
            MessagePackCode.FixExt8 => 8,
            MessagePackCode.FixExt16 => 16,
            MessagePackCode.Ext8 => ReadLength8(start, "ext8"),
            MessagePackCode.Ext16 => ReadLength16(start, "ext16"),
            MessagePackCode.Ext32 => ReadLength32(start, "ext32"),
            _ => throw Unexpected(start, "ext", code),
        };
        if (Remaining < 1) throw Truncated(start, MessagePackCode.Name(code) + " type byte");
        sbyte type = unchecked((sbyte)_buffer[_position++]);
        ReadOnlySpan<byte> data = TakePayload(start, length, MessagePackCode.Name(code));
        return new MessagePackExtension(type, data);
    }

    /// <summary>Timestamp extension (type −1, 4/8/12-byte forms) as Unix seconds and nanoseconds.</summary>
    public (long UnixSeconds, uint Nanoseconds) ReadTimestampRaw()
    {
        int start = _position;
        MessagePackExtension ext = ReadExtension();
        if (ext.Type != MessagePackCode.TimestampExtType)
            throw Error(start, "timestamp (ext type -1)", $"ext type {ext.Type}");
        ReadOnlySpan<byte> d = ext.Data;
        long seconds;
        uint nanoseconds;
        switch (d.Length)
        {
            case 4:
                return (BinaryPrimitives.ReadUInt32BigEndian(d), 0);
            case 8:
                ulong packed = BinaryPrimitives.ReadUInt64BigEndian(d);
                nanoseconds = (uint)(packed >> 34);
                seconds = (long)(packed & 0x3_ffff_ffffUL);
                break;
            case 12:
                nanoseconds = BinaryPrimitives.ReadUInt32BigEndian(d);
                seconds = BinaryPrimitives.ReadInt64BigEndian(d[4..]);
                break;
            default:
                throw Error(start, "timestamp of 4, 8 or 12 bytes", $"{d.Length} bytes");
        }
        if (nanoseconds >= 1_000_000_000) throw Error(start, "timestamp nanoseconds below 10^9", $"{nanoseconds}");
        return (seconds, nanoseconds);
    }

    /// <summary>Timestamp as a UTC <see cref="DateTimeOffset"/> (nanoseconds truncated to 100 ns ticks).</summary>
    public DateTimeOffset ReadTimestamp()
    {
        int start = _position;
        (long seconds, uint nanoseconds) = ReadTimestampRaw();
        const long MinSeconds = -62135596800L;  // 0001-01-01T00:00:00Z
        const long MaxSeconds = 253402300799L;  // 9999-12-31T23:59:59Z
        if (seconds < MinSeconds || seconds > MaxSeconds)
            throw Error(start, "timestamp within years 1..9999", $"{seconds} s since 1970");
        return DateTimeOffset.UnixEpoch.AddTicks(seconds * TimeSpan.TicksPerSecond + nanoseconds / 100);
    }

    /// <summary>Skips one value of any kind, including everything nested in it (at most <see cref="MaxDepth"/> levels).</summary>
    public void Skip() => Skip(0);

    private void Skip(int depth)
    {
        int start = _position;
        switch (PeekType())
        {
            case MessagePackType.Nil: _position++; break;
            case MessagePackType.Boolean: _position++; break;
            case MessagePackType.Integer: ReadIntegerAny(); break;
            case MessagePackType.Float: ReadDouble(); break;
            case MessagePackType.String: ReadStringUtf8(); break;
            case MessagePackType.Binary: ReadBinary(); break;
            case MessagePackType.Extension: ReadExtension(); break;
            case MessagePackType.Array:
            {
                CheckDepth(start, depth + 1);
                int count = ReadArrayHeader();
                for (int i = 0; i < count; i++) Skip(depth + 1);
                break;
            }
            case MessagePackType.Map:
            {
                CheckDepth(start, depth + 1);
                int count = ReadMapHeader();
                for (int i = 0; i < count * 2; i++) Skip(depth + 1);
                break;
            }
        }
    }

    /// <summary>Throws if an array/map at <paramref name="depth"/> (1 = outermost) would exceed <see cref="MaxDepth"/>.</summary>
    internal readonly void CheckDepth(int offset, int depth)
    {
        if (depth > MaxDepth) throw Error(offset, $"nesting depth at most {MaxDepth}", $"depth {depth}");
    }

    /// <summary>Reads any integer: signed value, or unsigned value when it is above long.MaxValue.</summary>
    internal (long Signed, ulong Unsigned, bool IsUnsigned) ReadIntegerAny()
    {
        int start = _position;
        if (TryReadInteger("integer", out long s, out ulong u, out bool isU)) return (s, u, isU);
        throw Unexpected(start, "integer", _buffer[start]);
    }

    /// <summary>Builds an exception with the standard message shape "offset N: expected X, found Y".</summary>
    public readonly MessagePackException Error(int offset, string expected, string found) =>
        new($"offset {offset}: expected {expected}, found {found}");

    // ---- internals ----

    private long ReadInt64Unchecked(int start, out ulong big, out bool tooBig)
    {
        big = 0; tooBig = false;
        if (!TryReadInteger("integer", out long signed, out ulong unsigned, out bool isUnsigned))
            throw Unexpected(start, "integer", _buffer[start]);
        if (!isUnsigned) return signed;
        if (unsigned <= long.MaxValue) return (long)unsigned;
        big = unsigned; tooBig = true;
        return 0;
    }

    /// <summary>
    /// If the next value is an integer, consumes it. isUnsigned is set only for uint64 values above long.MaxValue,
    /// whose value is in <paramref name="unsigned"/>; all others are in <paramref name="signed"/>.
    /// </summary>
    private bool TryReadInteger(string expected, out long signed, out ulong unsigned, out bool isUnsigned)
    {
        int start = _position;
        byte code = PeekCode(expected);
        signed = 0; unsigned = 0; isUnsigned = false;
        if (code <= MessagePackCode.MaxPositiveFixInt || code >= MessagePackCode.MinNegativeFixInt)
        {
            signed = unchecked((sbyte)code);
            _position++;
            return true;
        }
        int size = code switch
        {
            MessagePackCode.UInt8 or MessagePackCode.Int8 => 1,
            MessagePackCode.UInt16 or MessagePackCode.Int16 => 2,
            MessagePackCode.UInt32 or MessagePackCode.Int32 => 4,
            MessagePackCode.UInt64 or MessagePackCode.Int64 => 8,
            _ => 0,
        };
        if (size == 0) return false;
        Need(start, 1 + size, MessagePackCode.Name(code));
        ReadOnlySpan<byte> p = _buffer.Slice(start + 1, size);
        switch (code)
        {
            case MessagePackCode.UInt8: signed = p[0]; break;
            case MessagePackCode.UInt16: signed = BinaryPrimitives.ReadUInt16BigEndian(p); break;
            case MessagePackCode.UInt32: signed = BinaryPrimitives.ReadUInt32BigEndian(p); break;
            case MessagePackCode.UInt64:
                ulong u = BinaryPrimitives.ReadUInt64BigEndian(p);
                if (u <= long.MaxValue) signed = (long)u;
                else { unsigned = u; isUnsigned = true; }
                break;
            case MessagePackCode.Int8: signed = unchecked((sbyte)p[0]); break;
            case MessagePackCode.Int16: signed = BinaryPrimitives.ReadInt16BigEndian(p); break;
            case MessagePackCode.Int32: signed = BinaryPrimitives.ReadInt32BigEndian(p); break;
            case MessagePackCode.Int64: signed = BinaryPrimitives.ReadInt64BigEndian(p); break;
        }
        _position += 1 + size;
        return true;
    }

    private ReadOnlySpan<byte> ReadFloatBin(int start, int elementSize, string elementName)
    {
        ReadOnlySpan<byte> bytes = ReadBinary();
        if (bytes.Length % elementSize != 0)
            throw Error(start, $"bin of {elementName} (length a multiple of {elementSize})", $"bin of {bytes.Length} bytes");
        return bytes;
    }

    private static void CopyFloat32(ReadOnlySpan<byte> bytes, Span<float> destination)
    {
        if (BitConverter.IsLittleEndian) { bytes.CopyTo(MemoryMarshal.AsBytes(destination)); return; }
        for (int i = 0; i < destination.Length; i++)
            destination[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.Slice(i * sizeof(float), sizeof(float)));
    }

    private static void CopyFloat64(ReadOnlySpan<byte> bytes, Span<double> destination)
    {
        if (BitConverter.IsLittleEndian) { bytes.CopyTo(MemoryMarshal.AsBytes(destination)); return; }
        for (int i = 0; i < destination.Length; i++)
            destination[i] = BinaryPrimitives.ReadDoubleLittleEndian(bytes.Slice(i * sizeof(double), sizeof(double)));
    }

    private readonly byte PeekCode(string expected)
    {
        if (_position >= _buffer.Length) throw Error(_position, expected, "end of input");
        return _buffer[_position];
    }

    private byte ReadCode(string expected)
    {
        byte code = PeekCode(expected);
        _position++;
        return code;
    }

    private int ReadLength8(int start, string what)
    {
        Need(start, 2, what);
        return _buffer[_position++];
    }

    private int ReadLength16(int start, string what)
    {
        Need(start, 3, what);
        int length = BinaryPrimitives.ReadUInt16BigEndian(_buffer.Slice(_position, 2));
        _position += 2;
        return length;
    }

    private int ReadLength32(int start, string what)
    {
        Need(start, 5, what);
        uint length = BinaryPrimitives.ReadUInt32BigEndian(_buffer.Slice(_position, 4));
        _position += 4;
        // No buffer this reader can hold is larger than int.MaxValue, so such a length is always truncated input.
        if (length > int.MaxValue) throw Error(start, $"{what} payload within the buffer", $"declared length {length}, only {Remaining} bytes left");
        return (int)length;
    }

    /// <summary>Slices <paramref name="length"/> payload bytes after checking they are all there.</summary>
    private ReadOnlySpan<byte> TakePayload(int start, int length, string what)
    {
        if (length > Remaining)
            throw Error(start, $"{what} payload of {length} bytes", $"only {Remaining} bytes left");
        ReadOnlySpan<byte> payload = _buffer.Slice(_position, length);
        _position += length;
        return payload;
    }

    /// <summary>Checks that the value starting at <paramref name="start"/> has at least <paramref name="total"/> bytes (header).</summary>
    private readonly void Need(int start, int total, string what)
    {
        if (_buffer.Length - start < total) throw Truncated(start, what);
    }

    private readonly MessagePackException Truncated(int start, string what) =>
        Error(start, $"complete {what}", "end of input");

    private readonly MessagePackException Unexpected(int start, string expected, byte code) =>
        Error(start, expected, MessagePackCode.Name(code));
}
