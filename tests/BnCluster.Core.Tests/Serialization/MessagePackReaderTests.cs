using BnCluster.Core.Serialization;
using Xunit;

namespace BnCluster.Core.Tests.Serialization;

public class MessagePackReaderTests
{
    private static MessagePackReader Reader(string hex) => new(Convert.FromHexString(hex));

    [Fact]
    public void Spec_vectors_decode()
    {
        // Encodings written out by hand from the format table at msgpack.org.
        var r = Reader("93" + "01" + "c3" + "a3616263"); // [1, true, "abc"]
        Assert.Equal(MessagePackType.Array, r.PeekType());
        Assert.Equal(3, r.ReadArrayHeader());
        Assert.Equal(1, r.ReadInt32());
        Assert.True(r.ReadBoolean());
        Assert.Equal("abc", r.ReadString());
        Assert.True(r.End);

        r = Reader("82" + "a7636f6d70616374" + "c3" + "a6736368656d61" + "00"); // {"compact": true, "schema": 0}
        Assert.Equal(2, r.ReadMapHeader());
        Assert.Equal("compact", r.ReadString());
        Assert.True(r.ReadBoolean());
        Assert.Equal("schema", r.ReadString());
        Assert.Equal(0, r.ReadInt64());
        Assert.True(r.End);

        Assert.Equal(-1, Reader("ff").ReadInt64());
        Assert.Equal(-32, Reader("e0").ReadInt64());
        Assert.Equal(200UL, Reader("ccc8").ReadUInt64());
        Assert.Equal(-100, Reader("d09c").ReadInt32());
        Assert.Equal(ulong.MaxValue, Reader("cfffffffffffffffff").ReadUInt64());
        Assert.Equal(1.5f, Reader("ca3fc00000").ReadSingle());
        Assert.Equal(-2.25, Reader("cbc002000000000000").ReadDouble());
        Assert.Equal(new byte[] { 1, 2, 3 }, Reader("c403010203").ReadBinary().ToArray());
        Assert.Equal("hi", Reader("d9026869").ReadString());
        Assert.Equal("hi", Reader("da00026869").ReadString());
        Assert.Equal("hi", Reader("db000000026869").ReadString());
        Assert.Equal(2, Reader("dc0002c0c0").ReadArrayHeader());
        Assert.Equal(1, Reader("df00000001a178c0").ReadMapHeader());
        Assert.Equal(new DateTimeOffset(2017, 7, 14, 2, 40, 0, TimeSpan.Zero), Reader("d6ff59682f00").ReadTimestamp());
    }

    [Fact]
    public void Numbers_accept_any_width_and_are_range_checked()
    {
        Assert.Equal(5, Reader("d30000000000000005").ReadInt32());
        Assert.Equal(5, Reader("cf0000000000000005").ReadInt32());
        Assert.Equal(3.0, Reader("03").ReadDouble());
        Assert.Equal(-3f, Reader("d0fd").ReadSingle());
        Assert.Equal(0.1f, Reader("cb3fb999999999999a").ReadSingle());
        Assert.Equal(1e19, Reader("cf8ac7230489e80000").ReadDouble());

        var e = Assert.Throws<MessagePackException>(() => Reader("ce80000000").ReadInt32());
        Assert.Equal("offset 0: expected integer in int32 range, found 2147483648", e.Message);
        e = Assert.Throws<MessagePackException>(() => Reader("cfffffffffffffffff").ReadInt64());
        Assert.Contains("int64 range", e.Message);
        e = Assert.Throws<MessagePackException>(() => Reader("ff").ReadUInt64());
        Assert.Equal("offset 0: expected non-negative integer, found -1", e.Message);
    }

    [Fact]
    public void Errors_name_offset_expected_and_found()
    {
        var e = Assert.Throws<MessagePackException>(() =>
        {
            var r = Reader("92" + "01" + "d903616263");
            r.ReadArrayHeader();
            r.ReadInt32();
            r.ReadArrayHeader();
        });
        Assert.Equal("offset 2: expected array, found str8", e.Message);
        Assert.IsAssignableFrom<FormatException>(e);

        e = Assert.Throws<MessagePackException>(() => Reader("c0").ReadString());
        Assert.Equal("offset 0: expected string, found nil", e.Message);
        e = Assert.Throws<MessagePackException>(() => Reader("").ReadBoolean());
        Assert.Equal("offset 0: expected bool, found end of input", e.Message);
        e = Assert.Throws<MessagePackException>(() => Reader("a3616263").ReadBinary());
        Assert.Equal("offset 0: expected bin, found fixstr", e.Message);
    }

    [Fact]
    public void Never_used_byte_c1_is_an_error()
    {
        Assert.Throws<MessagePackException>(() => Reader("c1").PeekType());
        Assert.Throws<MessagePackException>(() => Reader("c1").Skip());
        Assert.Throws<MessagePackException>(() => Reader("c1").ReadInt64());
        var e = Assert.Throws<MessagePackException>(() => Reader("91c1").Skip());
        Assert.Equal("offset 1: expected any value, found never-used byte 0xc1", e.Message);
    }

    [Fact]
    public void Invalid_utf8_is_an_error()
    {
        var e = Assert.Throws<MessagePackException>(() => Reader("a2c328").ReadString());
        Assert.Contains("UTF-8", e.Message);
    }

    [Fact]
    public void Peek_type_covers_every_family()
    {
        (string Hex, MessagePackType Type)[] cases =
        [
            ("c0", MessagePackType.Nil), ("c2", MessagePackType.Boolean), ("c3", MessagePackType.Boolean),
            ("00", MessagePackType.Integer), ("7f", MessagePackType.Integer), ("e0", MessagePackType.Integer),
            ("cc", MessagePackType.Integer), ("d3", MessagePackType.Integer),
            ("ca", MessagePackType.Float), ("cb", MessagePackType.Float),
            ("a0", MessagePackType.String), ("bf", MessagePackType.String), ("d9", MessagePackType.String), ("db", MessagePackType.String),
            ("c4", MessagePackType.Binary), ("c6", MessagePackType.Binary),
            ("90", MessagePackType.Array), ("9f", MessagePackType.Array), ("dc", MessagePackType.Array), ("dd", MessagePackType.Array),
            ("80", MessagePackType.Map), ("8f", MessagePackType.Map), ("de", MessagePackType.Map), ("df", MessagePackType.Map),
            ("d4", MessagePackType.Extension), ("d8", MessagePackType.Extension), ("c7", MessagePackType.Extension), ("c9", MessagePackType.Extension),
        ];
        foreach ((string hex, MessagePackType type) in cases) Assert.Equal(type, Reader(hex).PeekType());
    }

    [Fact]
    public void Huge_declared_lengths_fail_fast_without_allocating()
    {
        // bin32 claiming 2^31 bytes, str32 claiming 4 GB − 1, array32/map32 claiming billions: in a ~10-byte buffer.
        string[] lies = ["c680000000" + "0102", "dbffffffff" + "6162", "ddffffffff" + "c0c0", "df7fffffff" + "c0c0", "c9ffffffff05" + "00", "c67ffffffc01020304"];
        foreach (string hex in lies)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            MessagePackException? error = null;
            try
            {
                var r = Reader(hex);
                switch (r.PeekType())
                {
                    case MessagePackType.Binary: r.ReadFloat32Array(); break;
                    case MessagePackType.String: r.ReadString(); break;
                    case MessagePackType.Array: r.ReadArrayHeader(); break;
                    case MessagePackType.Map: r.ReadMapHeader(); break;
                    default: r.ReadExtension(); break;
                }
            }
            catch (MessagePackException e) { error = e; }
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.NotNull(error);
            Assert.Contains("offset 0", error.Message);
            Assert.True(allocated < 64 * 1024, $"{hex}: allocated {allocated} bytes before failing");
            Assert.Throws<MessagePackException>(() => Reader(hex).Skip());
        }
        var msg = Assert.Throws<MessagePackException>(() => Reader("c680000000" + "0102").ReadBinary()).Message;
        Assert.Equal("offset 0: expected bin32 payload within the buffer, found declared length 2147483648, only 2 bytes left", msg);
    }

    [Fact]
    public void Float_arrays_check_multiple_and_count()
    {
        var e = Assert.Throws<MessagePackException>(() => Reader("c403010203").ReadFloat32Array());
        Assert.Equal("offset 0: expected bin of float32 (length a multiple of 4), found bin of 3 bytes", e.Message);
        e = Assert.Throws<MessagePackException>(() => Reader("c4080000803f000000c0").ReadFloat32Array(new float[3]));
        Assert.Equal("offset 0: expected bin of 3 float32, found 2 float32", e.Message);
        float[] dest = new float[2];
        Reader("c4080000803f000000c0").ReadFloat32Array(dest);
        Assert.Equal([1f, -2f], dest);
        Assert.Equal([1.0], Reader("c408000000000000f03f").ReadFloat64Array());
        Assert.Throws<MessagePackException>(() => Reader("c40400000000").ReadFloat64Array());
        var rented = new double[1];
        Assert.Same(rented, Reader("c408000000000000f03f").ReadFloat64Array(n => n == 1 ? rented : throw new InvalidOperationException($"asked for {n}")));
        Assert.Equal([1.0], rented);
        var wrong = Assert.Throws<InvalidOperationException>(() => Reader("c408000000000000f03f").ReadFloat64Array(_ => new double[2]));
        Assert.Equal("allocator returned 2 doubles for 1", wrong.Message);
    }

    [Fact]
    public void Depth_limit_applies_to_skip_and_dynamic_reading()
    {
        byte[] nested(int depth) => [.. Enumerable.Repeat((byte)0x91, depth), 0xc0]; // [[[…nil…]]]
        var ok = new MessagePackReader(nested(64));
        ok.Skip();
        Assert.True(ok.End);
        var okDyn = new MessagePackReader(nested(64));
        Assert.NotNull(MessagePackDynamic.Read(ref okDyn));

        byte[] tooDeep = nested(65);
        var e = Assert.Throws<MessagePackException>(() => new MessagePackReader(tooDeep).Skip());
        Assert.Equal("offset 64: expected nesting depth at most 64, found depth 65", e.Message);
        Assert.Throws<MessagePackException>(() => { var r = new MessagePackReader(tooDeep); MessagePackDynamic.Read(ref r); });

        // Configurable; maps count too; a 100k-deep input does not overflow the stack.
        Assert.Throws<MessagePackException>(() => new MessagePackReader(nested(5), maxDepth: 4).Skip());
        new MessagePackReader(nested(4), maxDepth: 4).Skip();
        byte[] mapNest = [0x81, 0xa1, 0x61, 0x81, 0xa1, 0x61, 0xc0]; // {"a": {"a": nil}}
        Assert.Throws<MessagePackException>(() => new MessagePackReader(mapNest, maxDepth: 1).Skip());
        Assert.Throws<MessagePackException>(() => new MessagePackReader(nested(100_000)).Skip());
    }

    [Fact]
    public void Skip_steps_over_every_family()
    {
        byte[] bytes = MessagePackWriterTests.Encode(w =>
        {
            w.WriteArrayHeader(12);
            w.WriteNil(); w.WriteBoolean(true); w.WriteInt64(-70000); w.WriteUInt64(ulong.MaxValue);
            w.WriteSingle(1f); w.WriteDouble(2.0); w.WriteString(new string('s', 300)); w.WriteBinary(new byte[70000]);
            w.WriteExtension(9, new byte[3]); w.WriteTimestamp(DateTimeOffset.UnixEpoch);
            w.WriteMapHeader(1); w.WriteString("k"); w.WriteArrayHeader(2); w.WriteInt64(1); w.WriteInt64(2);
            w.WriteArrayHeader(0);
            w.WriteInt64(42);
        });
        var r = new MessagePackReader(bytes);
        r.Skip();
        Assert.Equal(42, r.ReadInt64());
        Assert.True(r.End);
    }

    [Fact]
    public void Truncation_at_every_cut_point_fails_with_MessagePackException()
    {
        byte[] full = MessagePackWriterTests.Encode(w =>
        {
            w.WriteMapHeader(3);
            w.WriteString("ints"); w.WriteArrayHeader(9);
            foreach (long v in new long[] { 1, -5, 200, 40000, 3_000_000_000, -100, -40000, -3_000_000_000, long.MinValue }) w.WriteInt64(v);
            w.WriteString("mixed"); w.WriteArrayHeader(8);
            w.WriteSingle(1.5f); w.WriteDouble(2.5); w.WriteString(new string('q', 40)); w.WriteFloat32Array([1f, 2f, 3f]);
            w.WriteExtension(7, [1, 2, 3, 4, 5]); w.WriteTimestamp(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero).AddTicks(7));
            w.WriteBoolean(false); w.WriteNil();
            w.WriteString("ext"); w.WriteExtension(-3, new byte[300]);
        });
        var whole = new MessagePackReader(full);
        whole.Skip();
        Assert.True(whole.End);

        for (int cut = 0; cut < full.Length; cut++)
        {
            byte[] prefix = full[..cut];
            AssertFailsCleanly(prefix, cut, r => r.Skip());
            AssertFailsCleanly(prefix, cut, r => MessagePackDynamic.Read(ref r));
            AssertFailsCleanly(prefix, cut, ReadTyped);
        }
    }

    [Fact]
    public void Random_bytes_and_corrupted_buffers_only_ever_throw_MessagePackException()
    {
        var random = new Random(1234);
        byte[] valid = MessagePackWriterTests.Encode(w =>
        {
            w.WriteArrayHeader(7);
            w.WriteMapHeader(2); w.WriteString("a"); w.WriteInt64(-300); w.WriteString("bb"); w.WriteFloat32Array([1f, 2f]);
            w.WriteExtension(4, [9, 9, 9]); w.WriteTimestamp(DateTimeOffset.UnixEpoch.AddTicks(123));
            w.WriteString(new string('z', 40)); w.WriteDouble(3.5); w.WriteUInt64(ulong.MaxValue); w.WriteNil();
        });
        for (int i = 0; i < 20_000; i++)
        {
            byte[] input;
            if (i % 2 == 0)
            {
                input = new byte[random.Next(0, 24)];
                random.NextBytes(input);
            }
            else
            {
                input = (byte[])valid.Clone();
                for (int flips = random.Next(1, 4); flips > 0; flips--) input[random.Next(input.Length)] = (byte)random.Next(256);
            }
            AssertThrowsOnlyMessagePackException(input, r => r.Skip());
            AssertThrowsOnlyMessagePackException(input, r => MessagePackDynamic.Read(ref r));
        }
    }

    private static void AssertThrowsOnlyMessagePackException(byte[] input, ReaderAction action)
    {
        try { action(new MessagePackReader(input)); }
        catch (MessagePackException) { }
        catch (Exception e) { Assert.Fail($"{Convert.ToHexString(input)}: {e.GetType().Name}: {e.Message}"); }
    }

    private delegate void ReaderAction(MessagePackReader reader);

    private static void AssertFailsCleanly(byte[] prefix, int cut, ReaderAction action)
    {
        try
        {
            action(new MessagePackReader(prefix));
        }
        catch (MessagePackException)
        {
            return;
        }
        catch (Exception e)
        {
            Assert.Fail($"cut at {cut}: {e.GetType().Name}: {e.Message}");
        }
        Assert.Fail($"cut at {cut}: no exception");
    }

    /// <summary>Reads the value of the truncation test through the typed API.</summary>
    private static void ReadTyped(MessagePackReader r)
    {
        Assert.Equal(3, r.ReadMapHeader());
        Assert.Equal("ints", r.ReadString());
        int n = r.ReadArrayHeader();
        for (int i = 0; i < n; i++) r.ReadInt64();
        Assert.Equal("mixed", r.ReadString());
        r.ReadArrayHeader();
        r.ReadSingle(); r.ReadDouble(); r.ReadString(); r.ReadFloat32Array(); r.ReadExtension(); r.ReadTimestamp();
        r.ReadBoolean(); r.ReadNil();
        r.ReadString(); r.ReadExtension();
    }

    [Fact]
    public void Timestamp_validation()
    {
        var e = Assert.Throws<MessagePackException>(() => Reader("d40501").ReadTimestamp());
        Assert.Equal("offset 0: expected timestamp (ext type -1), found ext type 5", e.Message);
        Assert.Throws<MessagePackException>(() => Reader("d5ff0001").ReadTimestamp());
        // timestamp64 with nanoseconds = 10^9 (out of range): 1e9 << 34.
        ulong packed = 1_000_000_000UL << 34;
        Assert.Throws<MessagePackException>(() => Reader("d7ff" + packed.ToString("x16")).ReadTimestamp());
        // timestamp96 beyond year 9999 decodes raw but not as DateTimeOffset.
        const string FarFuture = "c70cff00000001" + "7fffffffffffffff";
        Assert.Equal((long.MaxValue, 1u), Reader(FarFuture).ReadTimestampRaw());
        Assert.Throws<MessagePackException>(() => Reader(FarFuture).ReadTimestamp());
    }
}
