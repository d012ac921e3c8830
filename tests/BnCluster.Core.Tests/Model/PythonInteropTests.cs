using System.Buffers;
using System.Runtime.InteropServices;
using BnCluster.Core.Model;
using BnCluster.Core.Tests.Data;
using MessagePack;
using Xunit;

namespace BnCluster.Core.Tests.Model;

/// <summary>
/// Python's msgpack (an independent implementation) against ours: Python reads a model file we wrote and we read one
/// it wrote; and, value by value, MessagePack-CSharp decodes what Python packs and encodes the same values to the
/// same bytes (both pick the smallest encodings, which is what the model file's writer relies on).
/// </summary>
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
    public void Values_packed_by_python_decode_and_match_MessagePack_CSharp_encoding()
    {
        byte[] python = SystemPython.Run(PackScript).Stdout;
        var r = new MessagePackReader(python);

        Assert.True(r.TryReadNil());
        Assert.True(r.ReadBoolean());
        Assert.False(r.ReadBoolean());
        foreach (long v in Integers[..10])
        {
            Assert.Equal(MessagePackType.Integer, r.NextMessagePackType);
            Assert.Equal(v, r.ReadInt64());
            if (v == long.MaxValue) Assert.Equal(ulong.MaxValue, r.ReadUInt64()); // python's list has 2**64-1 next
        }
        foreach (long v in Integers[10..]) Assert.Equal(v, r.ReadInt64());

        Assert.Equal(MessagePackCode.Float32, r.NextCode);
        Assert.Equal(1.5f, r.ReadSingle());
        Assert.Equal(MessagePackCode.Float32, r.NextCode);
        Assert.Equal((double)0.1f, r.ReadDouble()); // float32 widens exactly
        Assert.Equal(MessagePackCode.Float64, r.NextCode);
        Assert.Equal(0.1, r.ReadDouble());
        Assert.Equal(-1e300, r.ReadDouble());

        Assert.Equal("", r.ReadString());
        Assert.Equal("héllo €", r.ReadString());
        foreach (int n in StringLengths) Assert.Equal(new string('x', n), r.ReadString());

        Assert.Equal(0, r.ReadBytes()!.Value.Length);
        byte[] b512 = r.ReadBytes()!.Value.ToArray();
        Assert.Equal(512, b512.Length);
        Assert.Equal(255, b512[255]);
        Assert.Equal(3, b512[259]);
        byte[] b70k = r.ReadBytes()!.Value.ToArray();
        Assert.Equal(70000, b70k.Length);
        Assert.True(b70k.AsSpan().IndexOfAnyExcept((byte)7) < 0);

        (sbyte Type, int Length)[] exts = [(5, 1), (7, 2), (100, 4), (1, 8), (2, 16), (3, 3), (4, 300), (6, 70000)];
        foreach ((sbyte type, int length) in exts)
        {
            Assert.Equal(MessagePackType.Extension, r.NextMessagePackType);
            ExtensionResult ext = r.ReadExtensionFormat();
            Assert.Equal(type, ext.TypeCode);
            Assert.Equal(length, ext.Data.Length);
        }

        foreach (DateTime t in Timestamps) Assert.Equal(t, r.ReadDateTime());

        Assert.Equal(16, r.ReadArrayHeader());
        for (int i = 0; i < 16; i++) Assert.Equal(i, r.ReadInt32());
        Assert.Equal(70000, r.ReadArrayHeader());
        for (int i = 0; i < 70000; i++) Assert.Equal(i, r.ReadInt32());

        Assert.Equal(20, r.ReadMapHeader());
        for (int i = 0; i < 20; i++) { Assert.Equal($"k{i}", r.ReadString()); Assert.Equal(i, r.ReadInt64()); }

        long bigMapStart = r.Consumed;
        Assert.Equal(MessagePackCode.Map32, r.NextCode);
        Assert.Equal(70000, r.ReadMapHeader());
        for (int i = 0; i < 70000; i++)
        {
            Assert.Equal($"k{i}", r.ReadString());
            Assert.Equal(4, r.ReadArrayHeader());
            Assert.Equal(i, r.ReadInt64());
            Assert.Equal(i / 4.0, r.ReadDouble());
            Assert.Equal($"v{i}", r.ReadString());
            Assert.True(r.TryReadNil());
        }

        Assert.Equal([1f, -2.5f, 3.25f], MemoryMarshal.Cast<byte, float>(r.ReadBytes()!.Value.ToArray()).ToArray()); // little-endian hosts
        Assert.Equal([0.1, -7.0], MemoryMarshal.Cast<byte, double>(r.ReadBytes()!.Value.ToArray()).ToArray());
        Assert.True(r.End);

        // MessagePack-CSharp's writer produces the same bytes for the same values.
        Assert.Equal(Convert.ToHexString(python[..(int)bigMapStart]), Convert.ToHexString(EncodeSameValuesUpToBigMap()));
    }

    /// <summary>Python's four timestamps: 32-bit, 64-bit, and 96-bit (negative seconds; seconds ≥ 2^34).</summary>
    private static readonly DateTime[] Timestamps =
    [
        DateTime.UnixEpoch.AddSeconds(1500000000),
        DateTime.UnixEpoch.AddSeconds(1500000000).AddTicks(1234567),
        DateTime.UnixEpoch.AddTicks(-5_000_000),
        DateTime.UnixEpoch.AddSeconds(1L << 34).AddTicks(1),
    ];

    private static byte[] EncodeSameValuesUpToBigMap()
    {
        var buffer = new ArrayBufferWriter<byte>();
        var w = new MessagePackWriter(buffer);
        w.WriteNil(); w.Write(true); w.Write(false);
        foreach (long v in Integers[..10]) { w.Write(v); if (v == long.MaxValue) w.Write(ulong.MaxValue); }
        foreach (long v in Integers[10..]) w.Write(v);
        w.Write(1.5f); w.Write(0.1f); w.Write(0.1); w.Write(-1e300);
        w.Write(""); w.Write("héllo €");
        foreach (int n in StringLengths) w.Write(new string('x', n));
        w.Write(ReadOnlySpan<byte>.Empty);
        byte[] b512 = new byte[512];
        for (int i = 0; i < 512; i++) b512[i] = (byte)i;
        w.Write(b512);
        w.Write(Enumerable.Repeat((byte)7, 70000).ToArray());
        (sbyte Type, byte[] Data)[] exts =
            [(5, "a"u8.ToArray()), (7, "ab"u8.ToArray()), (100, "abcd"u8.ToArray()), (1, "12345678"u8.ToArray()),
             (2, new byte[16]), (3, "abc"u8.ToArray()), (4, new byte[300]), (6, new byte[70000])];
        foreach ((sbyte type, byte[] data) in exts) w.WriteExtensionFormat(new ExtensionResult(type, data));
        foreach (DateTime t in Timestamps) w.Write(t);
        w.WriteArrayHeader(16);
        for (int i = 0; i < 16; i++) w.Write((long)i);
        w.WriteArrayHeader(70000);
        for (int i = 0; i < 70000; i++) w.Write((long)i);
        w.WriteMapHeader(20);
        for (int i = 0; i < 20; i++) { w.Write($"k{i}"); w.Write((long)i); }
        w.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    // Python reads a model file we wrote, with its own msgpack and struct, and checks keys, shapes and values.
    private const string PythonCheckScript = """
import sys, struct, hashlib, msgpack
with open(sys.argv[1], "rb") as f:
    data = f.read()
m = msgpack.unpackb(data, raw=False)
def floats(b): 
    assert isinstance(b, bytes) and len(b) % 4 == 0, type(b)
    return struct.unpack("<%df" % (len(b) // 4), b)
assert list(m.keys()) == ["format", "version", "input", "preprocessing", "classes", "layers", "training", "checksum"], list(m.keys())
assert m["format"] == "bncluster.model" and m["version"] == 2
assert data[-43:-32] == b"\xa8checksum\xc4\x20" and hashlib.sha256(data[:-43]).digest() == m["checksum"]
assert m["preprocessing"] == {"divisor": 16.0}, m["preprocessing"]
inp = m["input"]
assert inp["features"] == 4 and floats(inp["mean"]) == (0.5, -1.0, 2.0, 0.0), inp
assert abs(inp["eps"] - 1e-5) < 1e-10
assert m["classes"] == ["cat", "dog", "\u00e9l\u00e9phant"], m["classes"]
types = [l["type"] for l in m["layers"]]
assert types == ["dense", "batchnorm", "relu", "dense"], types
d0, bn, d3 = m["layers"][0], m["layers"][1], m["layers"][3]
assert (d0["in"], d0["out"], d0["bias"]) == (4, 5, None)
w0 = floats(d0["weight"]); assert len(w0) == 20
assert w0[0] == struct.unpack("<f", struct.pack("<f", -0.1))[0], w0[0]
assert abs(w0[19] - (-0.1 + 19 * 0.01)) < 1e-6, w0[19]
assert bn["features"] == 5 and len(floats(bn["running_var"])) == 5 and abs(bn["momentum"] - 0.1) < 1e-7
assert floats(d3["bias"]) == tuple(struct.unpack("<3f", struct.pack("<3f", 0.1, 0.2, -0.3)))
assert len(floats(d3["weight"])) == 15
t = m["training"]
assert t["optimizer"] == "adam" and t["lr"] == 0.001 and t["epochs"] == 3 and t["steps"] == 1234567890123
assert t["seed"] == -7 and t["shuffle"] is True and t["resumed_from"] is None and t["hidden"] == [5, 7]
assert t["dataset"]["rows"] == 1797
print("OK %d layers" % len(m["layers"]))
""";

    [Fact]
    public void Python_msgpack_reads_a_model_file_we_wrote()
    {
        using var dir = new TempDirectory();
        string path = Path.Combine(dir.Path, "model.bnc");
        ModelFile.Write(path, ModelFileTests.SampleModel() with { Preprocessing = new InputPreprocessing(16f) });
        SystemPython.Result result = SystemPython.Run(PythonCheckScript, path);
        Assert.Equal("OK 4 layers", result.StdoutText.Trim());
    }

    // Python writes a model in its own way (float64 scalars, other key order, extra keys), we read it.
    private const string PythonWriteScript = """
import sys, struct, msgpack
f32 = lambda *v: struct.pack("<%df" % len(v), *v)
m = {
  "training": {"note": "from python", "lr": 0.5, "n": 2**40, "tags": ["a", None, True]},
  "layers": [
    {"bias": f32(1, 2), "weight": f32(*range(6)), "out": 2, "in": 3, "type": "dense", "extra": {"x": [1, 2]}},
    {"type": "sigmoid"},
  ],
  "classes": ["yes", "no"],
  "input": {"eps": 1e-3, "var": f32(1, 2, 3), "mean": f32(0, 0, 0), "features": 3},
  "version": 1, "format": "bncluster.model", "comment": "written by python",
}
with open(sys.argv[1], "wb") as f:
    f.write(msgpack.packb(m, use_bin_type=True))
""";

    // Python writes a version 2 model with its checksum as docs/design.md describes it; a second copy has a weight changed.
    private const string PythonWriteV2Script = """
import sys, struct, hashlib, msgpack
f32 = lambda *v: struct.pack("<%df" % len(v), *v)
m = {
  "format": "bncluster.model", "version": 2,
  "input": {"features": 3, "mean": f32(0, 0, 0), "var": f32(1, 1, 1), "eps": 1e-5},
  "preprocessing": {"divisor": 255.0},
  "classes": ["yes", "no"],
  "layers": [{"type": "dense", "in": 3, "out": 2, "weight": f32(*range(6)), "bias": f32(1, 2)}],
  "training": {"dataset": "py"},
  "checksum": bytes(32),
}
data = msgpack.packb(m, use_bin_type=True)
data = data[:-32] + hashlib.sha256(data[:-43]).digest()
with open(sys.argv[1], "wb") as f:
    f.write(data)
bad = bytearray(data)
bad[data.index(f32(0, 1, 2))] ^= 1
with open(sys.argv[2], "wb") as f:
    f.write(bad)
""";

    [Fact]
    public void We_read_a_version_2_model_python_wrote_and_refuse_it_changed()
    {
        using var dir = new TempDirectory();
        string path = Path.Combine(dir.Path, "py2.bnc"), changed = Path.Combine(dir.Path, "py2-changed.bnc");
        SystemPython.Run(PythonWriteV2Script, path, changed);
        ModelDocument doc = ModelFile.Read(path);
        Assert.Equal(new InputPreprocessing(255f), doc.Preprocessing);
        Assert.Equal([0f, 1f, 2f, 3f, 4f, 5f], Assert.IsType<DenseLayerRecord>(doc.Layers[0]).Weight);
        var e = Assert.Throws<ModelFileException>(() => ModelFile.Read(changed));
        Assert.Equal("checksum", e.Field);
    }

    [Fact]
    public void We_read_a_model_file_python_wrote()
    {
        using var dir = new TempDirectory();
        string path = Path.Combine(dir.Path, "py.bnc");
        SystemPython.Run(PythonWriteScript, path);
        ModelDocument doc = ModelFile.Read(path);
        Assert.Equal(3, doc.Input.Features);
        Assert.Equal(1e-3f, doc.Input.Eps);
        Assert.Equal([1f, 2f, 3f], doc.Input.Var);
        Assert.Equal(["yes", "no"], doc.Classes);
        var dense = Assert.IsType<DenseLayerRecord>(doc.Layers[0]);
        Assert.Equal((3, 2), (dense.In, dense.Out));
        Assert.Equal([0f, 1f, 2f, 3f, 4f, 5f], dense.Weight);
        Assert.Equal([1f, 2f], Assert.IsType<float[]>(dense.Bias));
        Assert.Equal(new ActivationLayerRecord("sigmoid"), doc.Layers[1]);
        Assert.Equal("from python", doc.Training["note"]);
        Assert.Equal(0.5, doc.Training["lr"]);
        Assert.Equal(1L << 40, doc.Training["n"]);
        Assert.Equal(new object?[] { "a", null, true }, Assert.IsAssignableFrom<IReadOnlyList<object?>>(doc.Training["tags"]));
    }
}
