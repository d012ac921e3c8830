using System.Buffers;
using BnCluster.Core.Model;
using BnCluster.Core.Serialization;
using BnCluster.Core.Tests.Serialization;
using Xunit;

namespace BnCluster.Core.Tests.Model;

public sealed class ModelFileTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bnc-modelfile-" + Guid.NewGuid().ToString("N"));

    public ModelFileTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static float[] Seq(int n, float scale, float offset = 0f) => Enumerable.Range(0, n).Select(i => offset + i * scale).ToArray();

    /// <summary>4 inputs → dense 4×5 (no bias) → batchnorm 5 → relu → dense 5×3 (bias) ; 3 classes.</summary>
    internal static ModelDocument SampleModel() => new(
        new InputNormalization(4, [0.5f, -1f, 2f, 0f], [1f, 0.25f, 4f, 0f], 1e-5f),
        ["cat", "dog", "éléphant"],
        [
            new DenseLayerRecord(4, 5, Seq(20, 0.01f, -0.1f), null),
            new BatchNormLayerRecord(5, Seq(5, 0.1f, 1f), Seq(5, -0.1f), Seq(5, 0.5f), Seq(5, 0.25f, 1f), 1e-5f, 0.1f),
            new ActivationLayerRecord("relu"),
            new DenseLayerRecord(5, 3, Seq(15, -0.02f, 0.3f), [0.1f, 0.2f, -0.3f]),
        ],
        new Dictionary<string, object?>
        {
            ["optimizer"] = "adam",
            ["lr"] = 0.001,
            ["bn_eps"] = 1e-5f,
            ["epochs"] = 3,
            ["steps"] = 1234567890123L,
            ["seed"] = -7,
            ["shuffle"] = true,
            ["resumed_from"] = null,
            ["hidden"] = new List<object?> { 5, 7L },
            ["dataset"] = new Dictionary<string, object?> { ["name"] = "digits", ["sha256"] = new string('a', 64), ["rows"] = 1797 },
        });

    private static void AssertSameModel(ModelDocument expected, ModelDocument actual)
    {
        Assert.Equal(expected.Input.Features, actual.Input.Features);
        Assert.Equal(expected.Input.Mean, actual.Input.Mean);
        Assert.Equal(expected.Input.Var, actual.Input.Var);
        Assert.Equal(expected.Input.Eps, actual.Input.Eps);
        Assert.Equal(expected.Classes, actual.Classes);
        Assert.Equal(expected.Layers.Count, actual.Layers.Count);
        for (int i = 0; i < expected.Layers.Count; i++)
        {
            switch (expected.Layers[i])
            {
                case DenseLayerRecord d:
                    var d2 = Assert.IsType<DenseLayerRecord>(actual.Layers[i]);
                    Assert.Equal((d.In, d.Out), (d2.In, d2.Out));
                    Assert.Equal(d.Weight, d2.Weight);
                    Assert.Equal(d.Bias, d2.Bias);
                    break;
                case BatchNormLayerRecord b:
                    var b2 = Assert.IsType<BatchNormLayerRecord>(actual.Layers[i]);
                    Assert.Equal(b.Features, b2.Features);
                    Assert.Equal(b.Gamma, b2.Gamma);
                    Assert.Equal(b.Beta, b2.Beta);
                    Assert.Equal(b.RunningMean, b2.RunningMean);
                    Assert.Equal(b.RunningVar, b2.RunningVar);
                    Assert.Equal((b.Eps, b.Momentum), (b2.Eps, b2.Momentum));
                    break;
                default:
                    Assert.Equal(expected.Layers[i], actual.Layers[i]);
                    break;
            }
        }
    }

    [Fact]
    public void Round_trips_and_training_values_come_back_as_long_double_string_bool_null_list_map()
    {
        ModelDocument doc = SampleModel();
        ModelDocument back = ModelFile.Deserialize(ModelFile.Serialize(doc));
        AssertSameModel(doc, back);

        IReadOnlyDictionary<string, object?> t = back.Training;
        Assert.Equal(10, t.Count);
        Assert.Equal("adam", t["optimizer"]);
        Assert.Equal(0.001, Assert.IsType<double>(t["lr"]));
        Assert.Equal((double)1e-5f, Assert.IsType<double>(t["bn_eps"]));
        Assert.Equal(3L, Assert.IsType<long>(t["epochs"]));
        Assert.Equal(1234567890123L, t["steps"]);
        Assert.Equal(-7L, t["seed"]);
        Assert.Equal(true, t["shuffle"]);
        Assert.True(t.ContainsKey("resumed_from"));
        Assert.Null(t["resumed_from"]);
        Assert.Equal(new object?[] { 5L, 7L }, Assert.IsAssignableFrom<IReadOnlyList<object?>>(t["hidden"]));
        var dataset = Assert.IsAssignableFrom<IReadOnlyDictionary<string, object?>>(t["dataset"]);
        Assert.Equal("digits", dataset["name"]);
        Assert.Equal(1797L, dataset["rows"]);
    }

    [Fact]
    public void Serialized_bytes_are_deterministic_and_start_with_the_format_key()
    {
        byte[] a = ModelFile.Serialize(SampleModel());
        byte[] b = ModelFile.Serialize(SampleModel());
        Assert.Equal(a, b);
        // fixmap(6), fixstr "format", fixstr "bncluster.model"
        Assert.Equal("86a6666f726d6174af626e636c75737465722e6d6f64656c", Convert.ToHexString(a[..24]).ToLowerInvariant());
    }

    [Fact]
    public void Write_is_atomic_and_leaves_no_temp_files()
    {
        string path = Path.Combine(_dir, "model.bnc");
        ModelFile.Write(path, SampleModel());
        AssertSameModel(SampleModel(), ModelFile.Read(path));
        byte[] first = File.ReadAllBytes(path);

        // Overwrite works; a failing write (invalid doc) keeps the old file intact.
        ModelFile.Write(path, SampleModel());
        ModelDocument bad = SampleModel() with { Classes = ["only", "two"] };
        var e = Assert.Throws<ModelFileException>(() => ModelFile.Write(path, bad));
        Assert.Equal("model.bnc: classes holds 2 names, but the last dense layer (layers[3].out) has 3 outputs", e.Message);
        Assert.Equal(first, File.ReadAllBytes(path));
        Assert.Equal(["model.bnc"], Directory.GetFiles(_dir).Select(Path.GetFileName));

        // Unwritable target (a directory of that name): error, no temp file left behind.
        string dirTarget = Path.Combine(_dir, "taken.bnc");
        Directory.CreateDirectory(dirTarget);
        Assert.ThrowsAny<IOException>(() => ModelFile.Write(dirTarget, SampleModel()));
        Assert.Equal(["model.bnc"], Directory.GetFiles(_dir).Select(Path.GetFileName));
    }

    [Fact]
    public void Read_of_a_missing_file_names_it()
    {
        string path = Path.Combine(_dir, "nope.bnc");
        var e = Assert.Throws<ModelFileException>(() => ModelFile.Read(path));
        Assert.StartsWith(path + ": cannot read the model file", e.Message);
    }

    [Fact]
    public void Shape_errors_name_the_file_and_field()
    {
        string path = Path.Combine(_dir, "model.bnc");
        ModelDocument doc = SampleModel();
        var layers = doc.Layers.ToList();
        layers[3] = new DenseLayerRecord(5, 3, new float[14], null);
        Check(doc with { Layers = layers }, "layers[3].weight holds 14 floats, expected 3×5 = 15");

        layers = doc.Layers.ToList();
        layers[3] = new DenseLayerRecord(6, 3, new float[18], null);
        Check(doc with { Layers = layers }, "layers[3].in is 6, but layers[0].out is 5");

        layers = doc.Layers.ToList();
        layers[0] = new DenseLayerRecord(3, 5, new float[15], null);
        Check(doc with { Layers = layers }, "layers[0].in is 3, but input.features is 4");

        layers = doc.Layers.ToList();
        layers[0] = new DenseLayerRecord(4, 5, new float[20], new float[4]);
        Check(doc with { Layers = layers }, "layers[0].bias holds 4 floats, expected out = 5");

        layers = doc.Layers.ToList();
        layers[1] = new BatchNormLayerRecord(5, new float[5], new float[5], new float[4], new float[5], 1e-5f, 0.1f);
        Check(doc with { Layers = layers }, "layers[1].running_mean holds 4 floats, expected features = 5");

        layers = doc.Layers.ToList();
        layers[2] = new ActivationLayerRecord("gelu");
        Check(doc with { Layers = layers }, "layers[2].type is \"gelu\", expected dense, batchnorm, relu, tanh or sigmoid");

        Check(doc with { Input = doc.Input with { Var = new float[3] } }, "input.var holds 3 floats, expected features = 4");

        void Check(ModelDocument bad, string expected)
        {
            var e = Assert.Throws<ModelFileException>(() => ModelFile.Write(path, bad));
            Assert.Equal("model.bnc: " + expected, e.Message);
            // The reader applies the same checks to a file that somebody else wrote.
            byte[] bytes = HandWrittenModel(bad);
            var r = Assert.Throws<ModelFileException>(() => ModelFile.Deserialize(bytes, "x/model.bnc"));
            Assert.Equal("x/model.bnc: " + expected, r.Message);
        }
    }

    [Fact]
    public void Header_and_key_errors()
    {
        ModelDocument doc = SampleModel();
        Assert.Equal("m: format is \"other\", expected \"bncluster.model\" (not a BnCluster model file?)",
            Error(HandWrittenModel(doc, format: "other")));
        Assert.Equal("m: version 2 is not supported (this build reads version 1)", Error(HandWrittenModel(doc, version: 2)));
        Assert.Equal("m: input.eps is missing", Error(HandWrittenModel(doc, skipKey: "eps")));
        Assert.Equal("m: training is missing", Error(HandWrittenModel(doc, skipKey: "training")));
        Assert.Equal("m: layers[0].bias is missing", Error(HandWrittenModel(doc, skipKey: "bias")));
        Assert.Equal("m: layers[1].momentum is missing", Error(HandWrittenModel(doc, skipKey: "momentum")));
        Assert.Equal("m: layers[2].type is \"conv\", expected dense, batchnorm, relu, tanh or sigmoid",
            Error(HandWrittenModel(doc, activationName: "conv")));

        // A field of the wrong MessagePack type: the MessagePack error is wrapped with the field path.
        byte[] bytes = ModelFile.Serialize(doc);
        byte[] strWeight = HandWrittenModel(doc, weightAsString: true);
        string message = Error(strWeight);
        Assert.Matches(@"^m: layers\[0\]\.weight is malformed: offset \d+: expected bin, found fixstr$", message);

        Assert.Equal("m: offset 0: expected map, found fixarray", Error([0x90]));
        Assert.StartsWith("m: 1 trailing bytes after the model map", Error([.. bytes, 0xc0]));
    }

    [Fact]
    public void Truncated_model_at_every_cut_fails_with_ModelFileException()
    {
        ModelDocument small = new(
            new InputNormalization(2, [0f, 1f], [1f, 1f], 1e-5f),
            ["a", "b"],
            [new DenseLayerRecord(2, 2, [1f, 2f, 3f, 4f], [0f, 1f]), new ActivationLayerRecord("tanh"),
             new BatchNormLayerRecord(2, [1f, 1f], [0f, 0f], [0f, 0f], [1f, 1f], 1e-5f, 0.1f), new DenseLayerRecord(2, 2, [1f, 0f, 0f, 1f], null)],
            new Dictionary<string, object?> { ["x"] = new List<object?> { 1, "two", 3.0, null } });
        byte[] full = ModelFile.Serialize(small);
        ModelFile.Deserialize(full);
        for (int cut = 0; cut < full.Length; cut++)
        {
            try
            {
                ModelFile.Deserialize(full.AsMemory(0, cut), "cut.bnc");
                Assert.Fail($"cut at {cut}: no exception");
            }
            catch (ModelFileException e)
            {
                Assert.StartsWith("cut.bnc: ", e.Message);
            }
        }
    }

    [Fact]
    public void Corrupted_model_bytes_only_ever_throw_ModelFileException()
    {
        byte[] valid = ModelFile.Serialize(SampleModel());
        var random = new Random(99);
        for (int i = 0; i < 5_000; i++)
        {
            byte[] input = (byte[])valid.Clone();
            for (int flips = random.Next(1, 3); flips > 0; flips--) input[random.Next(input.Length)] = (byte)random.Next(256);
            try { ModelFile.Deserialize(input, "f.bnc"); }
            catch (ModelFileException e) { Assert.StartsWith("f.bnc: ", e.Message); }
            catch (Exception e) { Assert.Fail($"{Convert.ToHexString(input)}: {e.GetType().Name}: {e.Message}"); }
        }
    }

    [Fact]
    public void Reader_accepts_other_valid_encodings_key_orders_and_unknown_keys()
    {
        ModelDocument doc = SampleModel();
        byte[] bytes = HandWrittenModel(doc, alternative: true);
        Assert.NotEqual(ModelFile.Serialize(doc), bytes);
        AssertSameModel(doc, ModelFile.Deserialize(bytes));
    }

    private static string Error(byte[] bytes) => Assert.Throws<ModelFileException>(() => ModelFile.Deserialize(bytes, "m")).Message;

    /// <summary>
    /// Encodes a model with the raw writer, bypassing ModelFile's own checks. With <paramref name="alternative"/>
    /// it uses non-canonical but valid encodings: reversed key order, str8/str16 keys, int64/uint32 ints,
    /// float64 scalars, map16/array16 headers, and unknown keys with nested values.
    /// </summary>
    internal static byte[] HandWrittenModel(ModelDocument doc, bool alternative = false, string format = ModelFile.FormatName,
        int version = 1, string? skipKey = null, string? activationName = null, bool weightAsString = false)
    {
        var buffer = new ArrayBufferWriter<byte>();
        var w = new MessagePackWriter(buffer);

        void Key(string k)
        {
            if (!alternative) { w.WriteString(k); return; }
            byte[] utf8 = System.Text.Encoding.UTF8.GetBytes(k);
            if (k.Length % 2 == 0) { w.WriteRaw([0xd9, (byte)utf8.Length]); }          // str8 even for short keys
            else { w.WriteRaw([0xda, 0, (byte)utf8.Length]); }                          // str16
            w.WriteRaw(utf8);
        }
        void Int(long v)
        {
            if (!alternative) { w.WriteInt64(v); return; }
            if (v % 2 == 0) w.WriteRaw([0xd3, 0, 0, 0, 0, (byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v]);
            else w.WriteRaw([0xce, (byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v]);
        }
        void Float(float v) { if (alternative) w.WriteDouble(v); else w.WriteSingle(v); }
        void Map(int n) { if (alternative) w.WriteRaw([0xde, (byte)(n >> 8), (byte)n]); else w.WriteMapHeader(n); }
        void Array(int n) { if (alternative) w.WriteRaw([0xdc, (byte)(n >> 8), (byte)n]); else w.WriteArrayHeader(n); }
        void Unknown()
        {
            Key("future_field");
            MessagePackDynamic.Write(w, new Dictionary<string, object?> { ["a"] = new List<object?> { 1, new byte[3], DateTimeOffset.UnixEpoch } });
        }
        // Emits the entries in order (or reversed), minus skipKey, plus an unknown one when alternative.
        void Entries(params (string Key, Action Value)[] entries)
        {
            var list = entries.Where(e => e.Key != skipKey).ToList();
            if (alternative) list.Reverse();
            Map(list.Count + (alternative ? 1 : 0));
            if (alternative) Unknown();
            foreach ((string k, Action value) in list) { Key(k); value(); }
        }

        Entries(
            ("format", () => w.WriteString(format)),
            ("version", () => Int(version)),
            ("input", () => Entries(
                ("features", () => Int(doc.Input.Features)),
                ("mean", () => w.WriteFloat32Array(doc.Input.Mean)),
                ("var", () => w.WriteFloat32Array(doc.Input.Var)),
                ("eps", () => Float(doc.Input.Eps)))),
            ("classes", () => { Array(doc.Classes.Count); foreach (string c in doc.Classes) w.WriteString(c); }),
            ("layers", () =>
            {
                Array(doc.Layers.Count);
                foreach (ModelLayer layer in doc.Layers)
                {
                    switch (layer)
                    {
                        case DenseLayerRecord d:
                            Entries(
                                ("type", () => w.WriteString("dense")),
                                ("in", () => Int(d.In)),
                                ("out", () => Int(d.Out)),
                                ("weight", () => { if (weightAsString) w.WriteString("nope"); else w.WriteFloat32Array(d.Weight); }),
                                ("bias", () => { if (d.Bias is null) w.WriteNil(); else w.WriteFloat32Array(d.Bias); }));
                            break;
                        case BatchNormLayerRecord b:
                            Entries(
                                ("type", () => w.WriteString("batchnorm")),
                                ("features", () => Int(b.Features)),
                                ("gamma", () => w.WriteFloat32Array(b.Gamma)),
                                ("beta", () => w.WriteFloat32Array(b.Beta)),
                                ("running_mean", () => w.WriteFloat32Array(b.RunningMean)),
                                ("running_var", () => w.WriteFloat32Array(b.RunningVar)),
                                ("eps", () => Float(b.Eps)),
                                ("momentum", () => Float(b.Momentum)));
                            break;
                        case ActivationLayerRecord a:
                            Entries(("type", () => w.WriteString(activationName ?? a.Type)));
                            break;
                    }
                }
            }),
            ("training", () => MessagePackDynamic.Write(w, doc.Training)));
        return buffer.WrittenSpan.ToArray();
    }

    // Python reads a model file we wrote, with its own msgpack and struct, and checks keys, shapes and values.
    private const string PythonCheckScript = """
import sys, struct, msgpack
with open(sys.argv[1], "rb") as f:
    m = msgpack.unpackb(f.read(), raw=False)
def floats(b): 
    assert isinstance(b, bytes) and len(b) % 4 == 0, type(b)
    return struct.unpack("<%df" % (len(b) // 4), b)
assert list(m.keys()) == ["format", "version", "input", "classes", "layers", "training"], list(m.keys())
assert m["format"] == "bncluster.model" and m["version"] == 1
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
        string path = Path.Combine(_dir, "model.bnc");
        ModelFile.Write(path, SampleModel());
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

    [Fact]
    public void We_read_a_model_file_python_wrote()
    {
        string path = Path.Combine(_dir, "py.bnc");
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
