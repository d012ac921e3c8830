using System.Buffers;
using BnCluster.Core.Serialization;
using Xunit;

namespace BnCluster.Core.Tests.Serialization;

/// <summary>Bytes packed by Python's msgpack (an independent implementation) decode correctly, and match our writer byte for byte.</summary>
public class PythonInteropTests
{
    // Packs one value per family and boundary, concatenated, to stdout.
    private const string PackScript = """
import sys, struct, msgpack
from msgpack import ExtType, Timestamp
out = bytearray()
def add(v, **kw):
    out.extend(msgpack.packb(v, use_bin_type=True, **kw))
add(None); add(True); add(False)
for v in [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1,
          -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63]:
    add(v)
add(1.5, use_single_float=True)
add(0.1, use_single_float=True)
add(0.1)
add(-1e300)
add("")
add("h\u00e9llo \u20ac")
for n in [31, 32, 255, 256, 65535, 65536]:
    add("x" * n)
add(b"")
add(bytes(range(256)) * 2)
add(b"\x07" * 70000)
add(ExtType(5, b"a")); add(ExtType(7, b"ab")); add(ExtType(100, b"abcd")); add(ExtType(1, b"12345678"))
add(ExtType(2, bytes(16))); add(ExtType(3, b"abc")); add(ExtType(4, bytes(300))); add(ExtType(6, bytes(70000)))
add(Timestamp(1500000000, 0)); add(Timestamp(1500000000, 123456700)); add(Timestamp(-1, 500000000)); add(Timestamp(2**34, 100))
add(list(range(16)))
add(list(range(70000)))
add({"k%d" % i: i for i in range(20)})
add({"k%d" % i: [i, float(i) / 4, "v%d" % i, None] for i in range(70000)})
add(struct.pack("<3f", 1.0, -2.5, 3.25))
add(struct.pack("<2d", 0.1, -7.0))
sys.stdout.buffer.write(out)
""";

    private static readonly long[] Integers =
    [
        0, 127, 128, 255, 256, 65535, 65536, uint.MaxValue, 1L << 32, long.MaxValue,
        -1, -32, -33, -128, -129, -32768, -32769, int.MinValue, (long)int.MinValue - 1, long.MinValue,
    ];

    private static readonly int[] StringLengths = [31, 32, 255, 256, 65535, 65536];

    [Fact]
    public void Values_packed_by_python_decode_and_match_our_encoding()
    {
        byte[] python = SystemPython.Run(PackScript).Stdout;
        var r = new MessagePackReader(python);

        Assert.True(r.TryReadNil());
        Assert.True(r.ReadBoolean());
        Assert.False(r.ReadBoolean());
        foreach (long v in Integers[..10])
        {
            Assert.Equal(MessagePackType.Integer, r.PeekType());
            Assert.Equal(v, r.ReadInt64());
            if (v == long.MaxValue) Assert.Equal(ulong.MaxValue, r.ReadUInt64()); // python's list has 2**64-1 next
        }
        foreach (long v in Integers[10..]) Assert.Equal(v, r.ReadInt64());

        Assert.Equal(0xca, python[r.Position]); // float32 on the wire
        Assert.Equal(1.5f, r.ReadSingle());
        Assert.Equal(0xca, python[r.Position]);
        Assert.Equal((double)0.1f, r.ReadDouble()); // float32 widens exactly
        Assert.Equal(0xcb, python[r.Position]);
        Assert.Equal(0.1, r.ReadDouble());
        Assert.Equal(-1e300, r.ReadDouble());

        Assert.Equal("", r.ReadString());
        Assert.Equal("héllo €", r.ReadString());
        foreach (int n in StringLengths) Assert.Equal(new string('x', n), r.ReadString());

        Assert.Equal(0, r.ReadBinary().Length);
        ReadOnlySpan<byte> b512 = r.ReadBinary();
        Assert.Equal(512, b512.Length);
        Assert.Equal(255, b512[255]);
        Assert.Equal(3, b512[259]);
        ReadOnlySpan<byte> b70k = r.ReadBinary();
        Assert.Equal(70000, b70k.Length);
        Assert.True(b70k.IndexOfAnyExcept((byte)7) < 0);

        (sbyte Type, int Length)[] exts = [(5, 1), (7, 2), (100, 4), (1, 8), (2, 16), (3, 3), (4, 300), (6, 70000)];
        foreach ((sbyte type, int length) in exts)
        {
            Assert.Equal(MessagePackType.Extension, r.PeekType());
            MessagePackExtension ext = r.ReadExtension();
            Assert.Equal(type, ext.Type);
            Assert.Equal(length, ext.Data.Length);
        }

        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1500000000), r.ReadTimestamp());
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1500000000).AddTicks(1234567), r.ReadTimestamp());
        Assert.Equal(DateTimeOffset.UnixEpoch.AddMilliseconds(-500), r.ReadTimestamp());
        Assert.Equal((1L << 34, 100u), r.ReadTimestampRaw());

        Assert.Equal(16, r.ReadArrayHeader());
        for (int i = 0; i < 16; i++) Assert.Equal(i, r.ReadInt32());
        Assert.Equal(70000, r.ReadArrayHeader());
        for (int i = 0; i < 70000; i++) Assert.Equal(i, r.ReadInt32());

        Assert.Equal(20, r.ReadMapHeader());
        for (int i = 0; i < 20; i++) { Assert.Equal($"k{i}", r.ReadString()); Assert.Equal(i, r.ReadInt64()); }

        int bigMapStart = r.Position;
        Assert.Equal(0xdf, python[bigMapStart]); // map32
        var big = Assert.IsType<Dictionary<string, object?>>(MessagePackDynamic.Read(ref r));
        Assert.Equal(70000, big.Count);
        var entry = Assert.IsType<List<object?>>(big["k69999"]);
        Assert.Equal(new object?[] { 69999L, 69999 / 4.0, "v69999", null }, entry);

        Assert.Equal([1f, -2.5f, 3.25f], r.ReadFloat32Array());
        Assert.Equal([0.1, -7.0], r.ReadFloat64Array());
        Assert.True(r.End);

        // Our writer produces the same bytes for the same values (both pick the smallest encodings).
        Assert.Equal(Convert.ToHexString(python[..bigMapStart]), Convert.ToHexString(EncodeSameValuesUpToBigMap()));
    }

    private static byte[] EncodeSameValuesUpToBigMap()
    {
        var buffer = new ArrayBufferWriter<byte>();
        var w = new MessagePackWriter(buffer);
        w.WriteNil(); w.WriteBoolean(true); w.WriteBoolean(false);
        foreach (long v in Integers[..10]) { w.WriteInt64(v); if (v == long.MaxValue) w.WriteUInt64(ulong.MaxValue); }
        foreach (long v in Integers[10..]) w.WriteInt64(v);
        w.WriteSingle(1.5f); w.WriteSingle(0.1f); w.WriteDouble(0.1); w.WriteDouble(-1e300);
        w.WriteString(""); w.WriteString("héllo €");
        foreach (int n in StringLengths) w.WriteString(new string('x', n));
        w.WriteBinary([]);
        byte[] b512 = new byte[512];
        for (int i = 0; i < 512; i++) b512[i] = (byte)i;
        w.WriteBinary(b512);
        w.WriteBinary(Enumerable.Repeat((byte)7, 70000).ToArray());
        w.WriteExtension(5, "a"u8); w.WriteExtension(7, "ab"u8); w.WriteExtension(100, "abcd"u8); w.WriteExtension(1, "12345678"u8);
        w.WriteExtension(2, new byte[16]); w.WriteExtension(3, "abc"u8); w.WriteExtension(4, new byte[300]); w.WriteExtension(6, new byte[70000]);
        w.WriteTimestamp(1500000000, 0); w.WriteTimestamp(1500000000, 123456700); w.WriteTimestamp(-1, 500000000); w.WriteTimestamp(1L << 34, 100);
        w.WriteArrayHeader(16);
        for (int i = 0; i < 16; i++) w.WriteInt64(i);
        w.WriteArrayHeader(70000);
        for (int i = 0; i < 70000; i++) w.WriteInt64(i);
        w.WriteMapHeader(20);
        for (int i = 0; i < 20; i++) { w.WriteString($"k{i}"); w.WriteInt64(i); }
        return buffer.WrittenSpan.ToArray();
    }
}
