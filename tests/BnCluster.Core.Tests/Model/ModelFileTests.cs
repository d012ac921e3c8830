using System.Buffers;
using System.Text;
using BnCluster.Core.Model;
using MessagePack;
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
        // fixmap(8), fixstr "format", fixstr "bncluster.model"
        Assert.Equal("88a6666f726d6174af626e636c75737465722e6d6f64656c", Convert.ToHexString(a[..24]).ToLowerInvariant());
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
        Assert.Equal("m: version 3 is not supported (this build reads versions 1 to 2)", Error(HandWrittenModel(doc, version: 3)));
        Assert.Equal("m: version 0 is not supported (this build reads versions 1 to 2)", Error(HandWrittenModel(doc, version: 0)));
        Assert.Equal("m: input.eps is missing", Error(HandWrittenModel(doc, skipKey: "eps")));
        Assert.Equal("m: training is missing", Error(HandWrittenModel(doc, skipKey: "training")));
        Assert.Equal("m: layers[0].bias is missing", Error(HandWrittenModel(doc, skipKey: "bias")));
        Assert.Equal("m: layers[1].momentum is missing", Error(HandWrittenModel(doc, skipKey: "momentum")));
        Assert.Equal("m: layers[2].type is \"conv\", expected dense, batchnorm, relu, tanh or sigmoid",
            Error(HandWrittenModel(doc, activationName: "conv")));

        // A field of the wrong MessagePack type: the MessagePack error is wrapped with the field path.
        byte[] bytes = ModelFile.Serialize(doc);
        byte[] strWeight = HandWrittenModel(doc, raw: new() { ["weight"] = new Packer().Str("nope").ToArray() });
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
        Assert.Equal(doc.Training["steps"], ModelFile.Deserialize(bytes).Training["steps"]);
    }

    private static string Error(byte[] bytes) => Assert.Throws<ModelFileException>(() => ModelFile.Deserialize(bytes, "m")).Message;

    /// <summary>The sample model with the value of <paramref name="key"/> (wherever it occurs) replaced by <paramref name="value"/>.</summary>
    private static byte[] With(string key, byte[] value) => HandWrittenModel(SampleModel(), raw: new() { [key] = value });

    /// <summary><paramref name="model"/> (a fixmap, as HandWrittenModel writes it) with one more entry at its end.</summary>
    private static byte[] WithExtraEntry(byte[] model, string key, byte[] value)
    {
        Assert.InRange(model[0], 0x80, 0x8e);
        return [(byte)(model[0] + 1), .. model[1..], .. new Packer().Str(key).ToArray(), .. value];
    }

    private static byte[] Hex(string hex) => Convert.FromHexString(hex);

    [Fact]
    public void Every_integer_encoding_is_accepted_and_int32_range_is_checked()
    {
        // Version 1 in each of the nine encodings that can hold it.
        foreach (string one in new[] { "01", "cc01", "cd0001", "ce00000001", "cf0000000000000001", "d001", "d10001", "d200000001", "d30000000000000001" })
            Assert.Equal(4, ModelFile.Deserialize(With("version", Hex(one))).Input.Features);

        Assert.Matches(@"^m: input\.features is malformed: offset \d+: expected integer in int32 range, found 2147483648$",
            Error(With("features", Hex("ce80000000"))));
        Assert.Matches(@"^m: version is malformed: offset \d+: expected integer in int32 range, found 18446744073709551615$",
            Error(With("version", Hex("cfffffffffffffffff"))));
        Assert.Matches(@"^m: version is malformed: offset \d+: expected integer in int32 range, found -2147483649$",
            Error(With("version", Hex("d3ffffffff7fffffff"))));
        Assert.Matches(@"^m: layers\[0\]\.in is malformed: offset \d+: expected integer, found float 32$",
            Error(With("in", Hex("ca40800000"))));
    }

    [Fact]
    public void Float_scalars_accept_float32_float64_and_integers()
    {
        ModelDocument doc = ModelFile.Deserialize(HandWrittenModel(SampleModel(), raw: new()
        {
            ["eps"] = new Packer().Double(0.1).ToArray(),     // rounded to the nearest float32
            ["momentum"] = Hex("d0fd"),                        // int8 −3
        }));
        Assert.Equal(0.1f, doc.Input.Eps);
        var bn = Assert.IsType<BatchNormLayerRecord>(doc.Layers[1]);
        Assert.Equal((0.1f, -3f), (bn.Eps, bn.Momentum));
        Assert.Equal(1f, ModelFile.Deserialize(With("eps", Hex("cf0000000000000001"))).Input.Eps);
        Assert.Matches(@"^m: input\.eps is malformed: offset \d+: expected float, found fixstr$", Error(With("eps", new Packer().Str("0.1").ToArray())));
    }

    [Fact]
    public void Strings_in_every_width_are_accepted_and_invalid_utf8_is_an_error()
    {
        byte[] Classes(params byte[][] names)
        {
            var p = new Packer().ArrayHeader(names.Length);
            foreach (byte[] name in names) p.Raw(name);
            return p.ToArray();
        }
        byte[] cat = Encoding.UTF8.GetBytes("cat"), dog = Encoding.UTF8.GetBytes("dog"), el = Encoding.UTF8.GetBytes("éléphant");
        byte[] classes = Classes([0xd9, 3, .. cat], [0xda, 0, 3, .. dog], [0xdb, 0, 0, 0, (byte)el.Length, .. el]);
        Assert.Equal(["cat", "dog", "éléphant"], ModelFile.Deserialize(With("classes", classes)).Classes);

        byte[] invalid = Classes([0xa3, .. cat], [0xa2, 0xc3, 0x28], [0xa3, .. dog]);
        Assert.Matches(@"^m: classes\[1\] is malformed: offset \d+: expected valid UTF-8 string, found invalid byte sequence$", Error(With("classes", invalid)));
        Assert.Matches(@"^m: classes\[0\] is malformed: offset \d+: expected string, found bin 8$", Error(With("classes", Classes([0xc4, 3, .. cat]))));
    }

    [Fact]
    public void Float_arrays_in_every_bin_width_are_accepted_and_must_hold_whole_float32s()
    {
        float[] mean = [0.5f, -1f, 2f, 0f];
        byte[] payload = Packer.LittleEndian(mean);
        foreach (byte[] header in new byte[][] { [0xc4, 16], [0xc5, 0, 16], [0xc6, 0, 0, 0, 16] })
            Assert.Equal(mean, ModelFile.Deserialize(With("mean", [.. header, .. payload])).Input.Mean);

        Assert.Matches(@"^m: input\.mean is malformed: offset \d+: expected bin of float32 \(length a multiple of 4\), found bin of 3 bytes$",
            Error(With("mean", Hex("c403010203"))));
        // The shape check still applies to a well-formed bin of the wrong length.
        Assert.Equal("m: input.mean holds 2 floats, expected features = 4", Error(With("mean", new Packer().Floats([1f, 2f]).ToArray())));
        // Cut right after the last "bias" key (layers[3]).
        byte[] sample = HandWrittenModel(SampleModel());
        int cut = sample.AsSpan().LastIndexOf(new Packer().Str("bias").ToArray()) + 5;
        Assert.Matches(@"^m: layers\[3\]\.bias is malformed: offset \d+: expected nil or bin, found end of input$", Error(sample[..cut]));
    }

    [Fact]
    public void Huge_declared_lengths_fail_fast_without_allocating()
    {
        (string Key, string Hex, string Message)[] lies =
        [
            ("weight", "c680000000" + "0102", @"layers\[0\]\.weight is malformed: offset \d+: expected bin 32 payload of 2147483648 bytes, found only \d+ bytes left"),
            ("weight", "c67ffffffc" + "01020304", @"layers\[0\]\.weight is malformed: offset \d+: expected bin 32 payload of 2147483644 bytes, found only \d+ bytes left"),
            ("classes", "ddffffffff" + "c0c0", @"classes is malformed: offset \d+: expected array of 4294967295 elements, found only \d+ bytes left"),
            ("classes", "91" + "dbffffffff" + "6162", @"classes\[0\] is malformed: offset \d+: expected str 32 payload of 4294967295 bytes, found only \d+ bytes left"),
            ("layers", "dd7fffffff" + "c0c0", @"layers is malformed: offset \d+: expected array of 2147483647 elements, found only \d+ bytes left"),
            ("input", "df7fffffff" + "c0c0", @"input is malformed: offset \d+: expected map of 2147483647 entries, found only \d+ bytes left"),
            ("training", "dfffffffff" + "c0c0", @"training is malformed: offset \d+: expected map of 4294967295 entries, found only \d+ bytes left"),
        ];
        foreach ((string key, string hex, string message) in lies)
        {
            byte[] model = With(key, Hex(hex));
            ModelDocument? doc = null;
            long before = GC.GetAllocatedBytesForCurrentThread();
            var e = Assert.Throws<ModelFileException>(() => doc = ModelFile.Deserialize(model, "m"));
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.Matches("^m: " + message + "$", e.Message);
            Assert.True(allocated < 64 * 1024, $"{key} = {hex}: allocated {allocated} bytes before failing");
        }

        // The same for values that are skipped: an unknown key's ext32 and bin32.
        byte[] sample = HandWrittenModel(SampleModel());
        Assert.Matches(@"^m: future is malformed: offset \d+: expected ext 32 payload of 4294967295 bytes, found only \d+ bytes left$",
            Error(WithExtraEntry(sample, "future", Hex("c9ffffffff05" + "00"))));
        Assert.Matches(@"^m: future is malformed: offset \d+: expected bin 32 payload of 2147483648 bytes, found only 2 bytes left$",
            Error(WithExtraEntry(sample, "future", Hex("c680000000" + "0102"))));
    }

    [Fact]
    public void Nesting_depth_is_limited_in_training_and_in_skipped_values()
    {
        byte[] Nested(int depth) => [.. Enumerable.Repeat((byte)0x91, depth), 0xc0]; // [[[…nil…]]]
        byte[] sample = HandWrittenModel(SampleModel());

        // The training map is level 1, so an entry may nest 63 more.
        byte[] Training(int depth) => [0x81, .. new Packer().Str("deep").ToArray(), .. Nested(depth)];
        Assert.True(ModelFile.Deserialize(With("training", Training(63))).Training.ContainsKey("deep"));
        Assert.Matches(@"^m: training is malformed: offset \d+: expected nesting depth at most 64, found depth 65$", Error(With("training", Training(64))));

        ModelFile.Deserialize(WithExtraEntry(sample, "future", Nested(64)));
        Assert.Matches(@"^m: future is malformed: offset \d+: expected nesting depth at most 64, found depth 65$", Error(WithExtraEntry(sample, "future", Nested(65))));
        Error(WithExtraEntry(sample, "future", Nested(100_000))); // fails cleanly rather than overflowing the stack
    }

    [Fact]
    public void Unknown_keys_holding_every_kind_of_value_are_skipped()
    {
        var p = new Packer().ArrayHeader(17)
            .Nil().Raw(0xc3).Int(-70000).Write((ref MessagePackWriter w) => w.Write(ulong.MaxValue))
            .Single(1f).Double(2.0).Str(new string('s', 300)).Str(new string('t', 70_000))
            .Write((ref MessagePackWriter w) => w.Write(new byte[70_000]))
            .Write((ref MessagePackWriter w) => w.WriteExtensionFormat(new ExtensionResult(9, new byte[3])))
            .Write((ref MessagePackWriter w) => w.WriteExtensionFormat(new ExtensionResult(9, new byte[16])))
            .Write((ref MessagePackWriter w) => w.Write(DateTime.UnixEpoch))
            .Value(new Dictionary<string, object?> { ["k"] = new List<object?> { 1, 2L } })
            .ArrayHeader(0).MapHeader(0)
            .Raw(0xdd, 0, 0, 0, 1, 0x01)                 // array32 of one
            .Raw(0xdf, 0, 0, 0, 1, 0xa1, 0x6b, 0xc0);    // map32 of one
        AssertSameModel(SampleModel(), ModelFile.Deserialize(WithExtraEntry(HandWrittenModel(SampleModel()), "future", p.ToArray())));

        Assert.Matches(@"^m: future is malformed: offset \d+: expected any value, found \(never used\)$",
            Error(WithExtraEntry(HandWrittenModel(SampleModel()), "future", Hex("92c0c1"))));
    }

    [Fact]
    public void Keys_must_be_unique_strings()
    {
        byte[] sample = HandWrittenModel(SampleModel());
        Assert.Matches(@"^m: version appears twice \(second at offset \d+\)$", Error(WithExtraEntry(sample, "version", Hex("01"))));
        byte[] input = new Packer().MapHeader(5).Str("features").Int(4).Str("mean").Floats(new float[4]).Str("var").Floats(new float[4])
            .Str("eps").Single(1e-5f).Str("eps").Single(1e-3f).ToArray();
        Assert.Matches(@"^m: input\.eps appears twice \(second at offset \d+\)$", Error(With("input", input)));
        Assert.Matches(@"^m: training is malformed: offset \d+: expected unique map key, found duplicate key ""a""$",
            Error(With("training", Hex("82a161" + "01" + "a161" + "02"))));
        Assert.Matches(@"^m: offset \d+: expected string map key, found positive fixint$", Error([0x81, 0x01, 0x01]));
        Assert.Matches(@"^m: training is malformed: offset \d+: expected string map key, found nil$", Error(With("training", Hex("81c0c0"))));
    }

    [Fact]
    public void Training_timestamps_and_extensions()
    {
        byte[] Training(string valueHex) => With("training", Hex("81a174" + valueHex));
        object? Read(string valueHex) => ModelFile.Deserialize(Training(valueHex)).Training["t"];

        Assert.Equal(new DateTimeOffset(2017, 7, 14, 2, 40, 0, TimeSpan.Zero), Read("d6ff59682f00"));                          // timestamp32
        Assert.Equal(DateTimeOffset.UnixEpoch.AddSeconds(1).AddTicks(5), Read("d7ff000007d000000001"));                             // timestamp64
        Assert.Equal(DateTimeOffset.UnixEpoch.AddTicks(-5_000_000), Read("c70cff1dcd6500ffffffffffffffff"));                       // timestamp96
        var ext = Assert.IsType<ExtensionResult>(Read("c70305010203"));
        Assert.Equal((sbyte)5, ext.TypeCode);
        Assert.Equal(new byte[] { 1, 2, 3 }, ext.Data.ToArray());

        Assert.Matches(@"expected timestamp of 4, 8 or 12 bytes, found 2 bytes$", Error(Training("d5ff0001")));
        Assert.Matches(@"expected timestamp nanoseconds below 10\^9, found 1000000000$", Error(Training("d7ff" + (1_000_000_000UL << 34).ToString("x16"))));
        Assert.Matches(@"expected timestamp within years 1\.\.9999, found 9223372036854775807 s since 1970$", Error(Training("c70cff00000001" + "7fffffffffffffff")));
    }

    [Fact]
    public void Strings_that_are_not_valid_unicode_are_refused_when_writing()
    {
        var e = Assert.Throws<ModelFileException>(() => ModelFile.Serialize(SampleModel() with { Classes = ["cat", "\ud800", "x"] }));
        Assert.StartsWith("<memory>: classes[1] is not valid Unicode", e.Message);
        var training = new Dictionary<string, object?> { ["note"] = "a\udc00b" };
        e = Assert.Throws<ModelFileException>(() => ModelFile.Serialize(SampleModel() with { Training = training }));
        Assert.StartsWith("<memory>: training ", e.Message);
        e = Assert.Throws<ModelFileException>(() => ModelFile.Serialize(SampleModel() with { Training = new Dictionary<string, object?> { ["x"] = new object() } }));
        Assert.Equal("<memory>: training cannot write a Object as MessagePack", e.Message);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Random_training_maps_round_trip(int seed)
    {
        var random = new Random(seed);
        for (int i = 0; i < 100; i++)
        {
            var training = new Dictionary<string, object?>();
            for (int k = random.Next(0, 12); k > 0; k--) training[$"k{k}_{RandomString(random)}"] = RandomValue(random, depth: 1);
            byte[] bytes = ModelFile.Serialize(SampleModel() with { Training = training });
            IReadOnlyDictionary<string, object?> back = ModelFile.Deserialize(bytes).Training;
            AssertSameValue(training, back, "training");

            // The writer is canonical: the decoded map encodes to the same bytes, unless a float32 came back as double.
            if (!ContainsFloat32(training))
                Assert.Equal(bytes, ModelFile.Serialize(SampleModel() with { Training = back }));
        }
    }

    private static object? RandomValue(Random random, int depth)
    {
        int kind = random.Next(depth >= 5 ? 12 : 14);
        return kind switch
        {
            0 => null,
            1 => random.Next(2) == 1,
            2 => (long)random.Next(-40, 140),
            3 => RandomInteger(random),
            4 => random.NextSingle() * 1e6f - 5e5f,
            5 => random.NextDouble() * Math.Pow(10, random.Next(-300, 300)) * (random.Next(2) == 0 ? -1 : 1),
            6 => RandomString(random),
            7 => RandomBytes(random),
            8 => new ExtensionResult((sbyte)random.Next(0, 128), RandomBytes(random)),
            9 => DateTimeOffset.UnixEpoch.AddTicks(random.NextInt64(-DateTimeOffset.UnixEpoch.UtcTicks, DateTimeOffset.MaxValue.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks)),
            10 => new[] { double.NaN, double.PositiveInfinity, double.NegativeInfinity, -0.0, double.Epsilon, double.MaxValue }[random.Next(6)],
            11 => ulong.MaxValue - (ulong)random.Next(1000),
            12 => Enumerable.Range(0, RandomCount(random)).Select(_ => RandomValue(random, depth + 1)).ToList(),
            _ => Enumerable.Range(0, RandomCount(random)).ToDictionary(k => $"k{k}_{RandomString(random)}", _ => RandomValue(random, depth + 1)),
        };
    }

    private static int RandomCount(Random random) => random.Next(10) == 0 ? random.Next(16, 40) : random.Next(0, 6);

    private static long RandomInteger(Random random)
    {
        int bits = random.Next(1, 64);
        long magnitude = random.NextInt64(0, long.MaxValue) >> (63 - bits);
        return random.Next(2) == 0 ? magnitude : -magnitude - 1;
    }

    private static string RandomString(Random random)
    {
        int length = random.Next(20) == 0 ? random.Next(200, 400) : random.Next(0, 40);
        var chars = new char[length];
        for (int i = 0; i < length; i++)
            chars[i] = random.Next(4) == 0 ? (char)random.Next(0x80, 0xd7ff) : (char)random.Next(0x20, 0x7f);
        return new string(chars);
    }

    private static byte[] RandomBytes(Random random)
    {
        var bytes = new byte[random.Next(20) == 0 ? random.Next(256, 300) : random.Next(0, 20)];
        random.NextBytes(bytes);
        return bytes;
    }

    private static bool ContainsFloat32(object? value) => value switch
    {
        float => true,
        List<object?> list => list.Any(ContainsFloat32),
        Dictionary<string, object?> map => map.Values.Any(ContainsFloat32),
        _ => false,
    };

    private static void AssertSameValue(object? expected, object? actual, string path)
    {
        switch (expected)
        {
            case null: Assert.Null(actual); break;
            case float f: Assert.Equal((double)f, Assert.IsType<double>(actual)); break;
            case double d: Assert.Equal(BitConverter.DoubleToInt64Bits(d), BitConverter.DoubleToInt64Bits(Assert.IsType<double>(actual))); break;
            case long l: Assert.Equal(l, Assert.IsType<long>(actual)); break;
            case ulong u: Assert.Equal(u, Assert.IsType<ulong>(actual)); break;
            case byte[] b: Assert.Equal(b, Assert.IsType<byte[]>(actual)); break;
            case ExtensionResult ext:
                var e2 = Assert.IsType<ExtensionResult>(actual);
                Assert.Equal(ext.TypeCode, e2.TypeCode);
                Assert.Equal(ext.Data.ToArray(), e2.Data.ToArray());
                break;
            case DateTimeOffset t: Assert.Equal(t.UtcTicks, Assert.IsType<DateTimeOffset>(actual).UtcTicks); break;
            case List<object?> list:
                var l2 = Assert.IsType<List<object?>>(actual);
                Assert.Equal(list.Count, l2.Count);
                for (int i = 0; i < list.Count; i++) AssertSameValue(list[i], l2[i], $"{path}[{i}]");
                break;
            case IReadOnlyDictionary<string, object?> map:
                var m2 = Assert.IsType<Dictionary<string, object?>>(actual);
                Assert.Equal(map.Keys, m2.Keys); // in the order written
                foreach ((string k, object? v) in map) AssertSameValue(v, m2[k], $"{path}.{k}");
                break;
            default: Assert.Equal(expected, actual); break;
        }
    }

    /// <summary>
    /// Encodes a model with MessagePack-CSharp, bypassing ModelFile's own checks; the training map goes through
    /// MessagePackSerializer (fixed-width ints). With <paramref name="alternative"/> it uses non-canonical but valid
    /// encodings, cycling through them: reversed key order, str8/str16/str32 keys, int64/uint32/int16/uint64 ints,
    /// float64 scalars, bin16/bin32 float arrays, map16/map32 and array16/array32 headers, and an unknown key with
    /// nested values in every map. <paramref name="raw"/> replaces the value of a key, wherever it occurs, by raw bytes.
    /// </summary>
    internal static byte[] HandWrittenModel(ModelDocument doc, bool alternative = false, string format = ModelFile.FormatName,
        int version = 1, string? skipKey = null, string? activationName = null, Dictionary<string, byte[]>? raw = null)
    {
        var p = new Packer();
        int variant = 0;

        void Key(string k)
        {
            if (!alternative) { p.Str(k); return; }
            byte[] utf8 = Encoding.UTF8.GetBytes(k);
            p.Raw((variant++ % 3) switch
            {
                0 => [0xd9, .. Packer.BigEndian(utf8.Length, 1)], // str8, even for short keys
                1 => [0xda, .. Packer.BigEndian(utf8.Length, 2)],
                _ => [0xdb, .. Packer.BigEndian(utf8.Length, 4)],
            }).Raw(utf8);
        }
        void Int(long v)
        {
            if (!alternative) { p.Int(v); return; }
            p.Raw((variant++ % 4) switch
            {
                0 => [0xd3, .. Packer.BigEndian(v, 8)],
                1 => [0xce, .. Packer.BigEndian(v, 4)],
                2 => [0xd1, .. Packer.BigEndian(v, 2)],
                _ => [0xcf, .. Packer.BigEndian(v, 8)],
            });
        }
        void Float(float v) { if (alternative) p.Double(v); else p.Single(v); }
        void Floats(float[] v)
        {
            if (!alternative) { p.Floats(v); return; }
            byte[] bytes = Packer.LittleEndian(v);
            p.Raw(variant++ % 2 == 0 ? [0xc5, .. Packer.BigEndian(bytes.Length, 2)] : [0xc6, .. Packer.BigEndian(bytes.Length, 4)]).Raw(bytes);
        }
        void Map(int n) { if (alternative) p.Raw(variant++ % 2 == 0 ? [0xde, .. Packer.BigEndian(n, 2)] : [0xdf, .. Packer.BigEndian(n, 4)]); else p.MapHeader(n); }
        void Array(int n) { if (alternative) p.Raw(variant++ % 2 == 0 ? [0xdc, .. Packer.BigEndian(n, 2)] : [0xdd, .. Packer.BigEndian(n, 4)]); else p.ArrayHeader(n); }
        void Unknown()
        {
            Key("future_field");
            p.Value(new Dictionary<string, object?> { ["a"] = new List<object?> { 1, new byte[3], DateTime.UnixEpoch, 2.5f, "s" } });
        }
        // Emits the entries in order (or reversed), minus skipKey, plus an unknown one when alternative.
        void Entries(params (string Key, Action Value)[] entries)
        {
            var list = entries.Where(e => e.Key != skipKey).ToList();
            if (alternative) list.Reverse();
            Map(list.Count + (alternative ? 1 : 0));
            if (alternative) Unknown();
            foreach ((string k, Action value) in list)
            {
                Key(k);
                if (raw is not null && raw.TryGetValue(k, out byte[]? bytes)) p.Raw(bytes);
                else value();
            }
        }

        Entries(
            ("format", () => p.Str(format)),
            ("version", () => Int(version)),
            ("input", () => Entries(
                ("features", () => Int(doc.Input.Features)),
                ("mean", () => Floats(doc.Input.Mean)),
                ("var", () => Floats(doc.Input.Var)),
                ("eps", () => Float(doc.Input.Eps)))),
            ("classes", () => { Array(doc.Classes.Count); foreach (string c in doc.Classes) p.Str(c); }),
            ("layers", () =>
            {
                Array(doc.Layers.Count);
                foreach (ModelLayer layer in doc.Layers)
                {
                    switch (layer)
                    {
                        case DenseLayerRecord d:
                            Entries(
                                ("type", () => p.Str("dense")),
                                ("in", () => Int(d.In)),
                                ("out", () => Int(d.Out)),
                                ("weight", () => Floats(d.Weight)),
                                ("bias", () => { if (d.Bias is null) p.Nil(); else Floats(d.Bias); }));
                            break;
                        case BatchNormLayerRecord b:
                            Entries(
                                ("type", () => p.Str("batchnorm")),
                                ("features", () => Int(b.Features)),
                                ("gamma", () => Floats(b.Gamma)),
                                ("beta", () => Floats(b.Beta)),
                                ("running_mean", () => Floats(b.RunningMean)),
                                ("running_var", () => Floats(b.RunningVar)),
                                ("eps", () => Float(b.Eps)),
                                ("momentum", () => Float(b.Momentum)));
                            break;
                        case ActivationLayerRecord a:
                            Entries(("type", () => p.Str(activationName ?? a.Type)));
                            break;
                    }
                }
            }),
            ("training", () => p.Value(doc.Training)));
        return p.ToArray();
    }
}
