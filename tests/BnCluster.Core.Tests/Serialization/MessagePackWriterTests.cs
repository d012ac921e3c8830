using System.Buffers;
using BnCluster.Core.Serialization;
using Xunit;

namespace BnCluster.Core.Tests.Serialization;

public class MessagePackWriterTests
{
    internal static byte[] Encode(Action<MessagePackWriter> write)
    {
        var buffer = new ArrayBufferWriter<byte>();
        write(new MessagePackWriter(buffer));
        return buffer.WrittenSpan.ToArray();
    }

    private static string Hex(byte[] bytes) => Convert.ToHexString(bytes).ToLowerInvariant();

    [Theory]
    [InlineData(0L, "00")]
    [InlineData(1L, "01")]
    [InlineData(127L, "7f")]
    [InlineData(128L, "cc80")]
    [InlineData(255L, "ccff")]
    [InlineData(256L, "cd0100")]
    [InlineData(65535L, "cdffff")]
    [InlineData(65536L, "ce00010000")]
    [InlineData(4294967295L, "ceffffffff")]
    [InlineData(4294967296L, "cf0000000100000000")]
    [InlineData(long.MaxValue, "cf7fffffffffffffff")]
    [InlineData(-1L, "ff")]
    [InlineData(-32L, "e0")]
    [InlineData(-33L, "d0df")]
    [InlineData(-128L, "d080")]
    [InlineData(-129L, "d1ff7f")]
    [InlineData(-32768L, "d18000")]
    [InlineData(-32769L, "d2ffff7fff")]
    [InlineData(-2147483648L, "d280000000")]
    [InlineData(-2147483649L, "d3ffffffff7fffffff")]
    [InlineData(long.MinValue, "d38000000000000000")]
    public void Int64_uses_smallest_encoding(long value, string expectedHex)
    {
        Assert.Equal(expectedHex, Hex(Encode(w => w.WriteInt64(value))));
        var reader = new MessagePackReader(Convert.FromHexString(expectedHex));
        Assert.Equal(value, reader.ReadInt64());
        Assert.True(reader.End);
    }

    [Fact]
    public void UInt64_max_is_uint64()
    {
        Assert.Equal("cfffffffffffffffff", Hex(Encode(w => w.WriteUInt64(ulong.MaxValue))));
        Assert.Equal("7f", Hex(Encode(w => w.WriteUInt64(127))));
        Assert.Equal("cc80", Hex(Encode(w => w.WriteUInt64(128))));
    }

    [Fact]
    public void Nil_bool_and_floats()
    {
        Assert.Equal("c0", Hex(Encode(w => w.WriteNil())));
        Assert.Equal("c2", Hex(Encode(w => w.WriteBoolean(false))));
        Assert.Equal("c3", Hex(Encode(w => w.WriteBoolean(true))));
        Assert.Equal("ca3fc00000", Hex(Encode(w => w.WriteSingle(1.5f))));
        Assert.Equal("cb3ff8000000000000", Hex(Encode(w => w.WriteDouble(1.5))));
        Assert.Equal("cb3fb999999999999a", Hex(Encode(w => w.WriteDouble(0.1))));
    }

    [Theory]
    [InlineData(0, "a0", 1)]
    [InlineData(31, "bf", 1)]
    [InlineData(32, "d920", 2)]
    [InlineData(255, "d9ff", 2)]
    [InlineData(256, "da0100", 3)]
    [InlineData(65535, "daffff", 3)]
    [InlineData(65536, "db00010000", 5)]
    public void String_header_is_smallest(int length, string headerHex, int headerLength)
    {
        string s = new('x', length);
        byte[] bytes = Encode(w => w.WriteString(s));
        Assert.Equal(headerLength + length, bytes.Length);
        Assert.Equal(headerHex, Hex(bytes[..headerLength]));
        Assert.All(bytes[headerLength..], b => Assert.Equal((byte)'x', b));
        var reader = new MessagePackReader(bytes);
        Assert.Equal(s, reader.ReadString());
        Assert.True(reader.End);
    }

    [Fact]
    public void String_length_counts_utf8_bytes_not_chars()
    {
        // "é" is 2 bytes in UTF-8: 16 of them = 32 bytes → str8, although only 16 chars.
        string s = new('é', 16);
        byte[] bytes = Encode(w => w.WriteString(s));
        Assert.Equal("d920", Hex(bytes[..2]));
        Assert.Equal(34, bytes.Length);
        Assert.Equal("a3e282ac", Hex(Encode(w => w.WriteString("€"))));
        Assert.Throws<System.Text.EncoderFallbackException>(() => Encode(w => w.WriteString("\ud800")));
    }

    [Theory]
    [InlineData(0, "c400", 2)]
    [InlineData(255, "c4ff", 2)]
    [InlineData(256, "c50100", 3)]
    [InlineData(65535, "c5ffff", 3)]
    [InlineData(65536, "c600010000", 5)]
    public void Binary_header_is_smallest(int length, string headerHex, int headerLength)
    {
        byte[] payload = new byte[length];
        new Random(length).NextBytes(payload);
        byte[] bytes = Encode(w => w.WriteBinary(payload));
        Assert.Equal(headerHex, Hex(bytes[..headerLength]));
        Assert.Equal(payload, bytes[headerLength..]);
        var reader = new MessagePackReader(bytes);
        Assert.Equal(payload, reader.ReadBinary().ToArray());
        Assert.True(reader.End);
    }

    [Theory]
    [InlineData(0, "90", "80")]
    [InlineData(15, "9f", "8f")]
    [InlineData(16, "dc0010", "de0010")]
    [InlineData(65535, "dcffff", "deffff")]
    [InlineData(65536, "dd00010000", "df00010000")]
    public void Array_and_map_headers_are_smallest(int count, string arrayHex, string mapHex)
    {
        Assert.Equal(arrayHex, Hex(Encode(w => w.WriteArrayHeader(count))));
        Assert.Equal(mapHex, Hex(Encode(w => w.WriteMapHeader(count))));

        // A full array of `count` nils reads back with the same count.
        byte[] array = Encode(w => { w.WriteArrayHeader(count); for (int i = 0; i < count; i++) w.WriteNil(); });
        var reader = new MessagePackReader(array);
        Assert.Equal(count, reader.ReadArrayHeader());
        for (int i = 0; i < count; i++) Assert.True(reader.TryReadNil());
        Assert.True(reader.End);
    }

    [Theory]
    [InlineData(1, "d405")]
    [InlineData(2, "d505")]
    [InlineData(4, "d605")]
    [InlineData(8, "d705")]
    [InlineData(16, "d805")]
    [InlineData(0, "c70005")]
    [InlineData(3, "c70305")]
    [InlineData(17, "c71105")]
    [InlineData(255, "c7ff05")]
    [InlineData(256, "c8010005")]
    [InlineData(65535, "c8ffff05")]
    [InlineData(65536, "c90001000005")]
    public void Extension_header_is_smallest(int length, string headerHex)
    {
        byte[] payload = new byte[length];
        new Random(length + 1).NextBytes(payload);
        byte[] bytes = Encode(w => w.WriteExtension(5, payload));
        int headerLength = headerHex.Length / 2;
        Assert.Equal(headerHex, Hex(bytes[..headerLength]));
        Assert.Equal(payload, bytes[headerLength..]);
        var reader = new MessagePackReader(bytes);
        MessagePackExtension ext = reader.ReadExtension();
        Assert.Equal(5, ext.Type);
        Assert.Equal(payload, ext.Data.ToArray());
        Assert.True(reader.End);
    }

    [Fact]
    public void Negative_extension_type_is_written_as_twos_complement()
    {
        Assert.Equal("d4807f", Hex(Encode(w => w.WriteExtension(-128, [0x7f]))));
    }

    [Fact]
    public void Timestamp_uses_32_64_and_96_bit_forms()
    {
        // 32-bit: whole seconds in [0, 2^32).
        Assert.Equal("d6ff00000000", Hex(Encode(w => w.WriteTimestamp(DateTimeOffset.UnixEpoch))));
        Assert.Equal("d6ffffffffff", Hex(Encode(w => w.WriteTimestamp(uint.MaxValue, 0))));
        // 64-bit: nanoseconds, or seconds ≥ 2^32 (below 2^34).
        Assert.Equal("d7ff0000000400000000", Hex(Encode(w => w.WriteTimestamp(0, 1))));
        Assert.Equal("d7ff0000000100000000", Hex(Encode(w => w.WriteTimestamp(1L << 32, 0))));
        DateTimeOffset withTicks = DateTimeOffset.UnixEpoch.AddSeconds(1).AddTicks(5); // 500 ns
        Assert.Equal("d7ff000007d000000001", Hex(Encode(w => w.WriteTimestamp(withTicks))));
        // 96-bit: negative seconds or ≥ 2^34.
        Assert.Equal("c70cff00000000ffffffffffffffff", Hex(Encode(w => w.WriteTimestamp(DateTimeOffset.UnixEpoch.AddSeconds(-1)))));
        Assert.Equal("c70cff000000000000000400000000", Hex(Encode(w => w.WriteTimestamp(1L << 34, 0))));
        // Before 1970 with a fraction: seconds floor, nanoseconds stay positive (−0.5 s = −1 s + 5e8 ns).
        Assert.Equal("c70cff1dcd6500ffffffffffffffff", Hex(Encode(w => w.WriteTimestamp(DateTimeOffset.UnixEpoch.AddTicks(-5_000_000)))));
    }

    [Fact]
    public void Timestamps_round_trip_through_every_form()
    {
        DateTimeOffset[] times =
        [
            DateTimeOffset.UnixEpoch,
            new DateTimeOffset(2026, 11, 21, 23, 35, 0, TimeSpan.Zero),
            new DateTimeOffset(2026, 11, 21, 23, 35, 0, TimeSpan.Zero).AddTicks(1234567),
            new DateTimeOffset(2600, 1, 1, 0, 0, 0, TimeSpan.Zero).AddTicks(1),
            new DateTimeOffset(1900, 6, 1, 12, 0, 0, TimeSpan.FromHours(2)).AddTicks(3),
            DateTimeOffset.MinValue,
            DateTimeOffset.MaxValue,
        ];
        foreach (DateTimeOffset t in times)
        {
            var reader = new MessagePackReader(Encode(w => w.WriteTimestamp(t)));
            DateTimeOffset back = reader.ReadTimestamp();
            Assert.Equal(t.UtcTicks, back.UtcTicks);
            Assert.True(reader.End);
        }
    }

    [Fact]
    public void Float_arrays_are_little_endian_bin()
    {
        Assert.Equal("c408" + "0000803f" + "000000c0", Hex(Encode(w => w.WriteFloat32Array([1f, -2f]))));
        Assert.Equal("c408" + "000000000000f03f", Hex(Encode(w => w.WriteFloat64Array([1.0]))));
        float[] big = Enumerable.Range(0, 70_000).Select(i => i * 0.25f - 7f).ToArray();
        byte[] bytes = Encode(w => w.WriteFloat32Array(big));
        Assert.Equal("c6" + "000445c0", Hex(bytes[..5])); // 280000 bytes in bin32
        var reader = new MessagePackReader(bytes);
        Assert.Equal(big, reader.ReadFloat32Array());
    }

    [Fact]
    public void Writing_a_value_into_a_pooled_buffer_allocates_nothing()
    {
        var buffer = new ArrayBufferWriter<byte>(1 << 16);
        var writer = new MessagePackWriter(buffer);
        float[] tensor = new float[1000];
        void WriteFrame()
        {
            writer.WriteArrayHeader(6);
            writer.WriteInt64(123456789);
            writer.WriteString("BnStats");
            writer.WriteDouble(0.5);
            writer.WriteFloat32Array(tensor);
            writer.WriteTimestamp(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
            writer.WriteExtension(3, [1, 2, 3]);
        }
        WriteFrame(); // warm up (JIT, static init)
        buffer.ResetWrittenCount();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10; i++) { WriteFrame(); buffer.ResetWrittenCount(); }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
    }
}
