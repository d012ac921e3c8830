using System.Buffers;
using System.Security.Cryptography;
using BnCluster.Core.Model;
using MessagePack;
using Xunit;

namespace BnCluster.Core.Tests.Model;

/// <summary>
/// Model/Fixtures/v1-small.bnc was written by ModelFile with the hand-written MessagePack writer (before the move
/// to MessagePack-CSharp): a 4→3→2 network with batchnorm, and a training map holding one value of every kind
/// that writer could encode (every int width, float32/float64 scalars, NaN, str8/str16, bin, timestamp, ext,
/// map16, array16). Such files must keep loading, value for value.
/// </summary>
public sealed class ModelFileFixtureTests
{
    private static string FixturePath => Path.Combine(AppContext.BaseDirectory, "Model", "Fixtures", "v1-small.bnc");

    private static int[] Bits(IEnumerable<float> values) => values.Select(BitConverter.SingleToInt32Bits).ToArray();

    private static void AssertFloats(float[] expected, float[]? actual)
    {
        Assert.NotNull(actual);
        Assert.Equal(Bits(expected), Bits(actual));
    }

    /// <summary>The document the fixture was written from (the ext value was then the old reader's own record type).</summary>
    private static ModelDocument FixtureDocument() => new(
        new InputNormalization(4, [0.5f, -1.25f, 3.1415927f, 0f], [1f, 0.0625f, 2.5f, 1e-8f], 1e-5f),
        ["no", "sí"],
        [
            new DenseLayerRecord(4, 3, Enumerable.Range(0, 12).Select(i => i * 0.1f - 0.6f).ToArray(), [0.1f, -0.2f, 0.3f]),
            new BatchNormLayerRecord(3, [1f, 1.5f, 0.75f], [0f, -0.1f, 0.2f], [0.01f, -0.02f, 0.03f], [1.1f, 0.9f, 2f], 1e-5f, 0.1f),
            new ActivationLayerRecord("relu"),
            new DenseLayerRecord(3, 2, [0.25f, -0.5f, 0.125f, 1f, -1f, 0.333f], null),
        ],
        new Dictionary<string, object?>
        {
            ["dataset"] = "digits",
            ["dataset_sha256"] = new string('f', 64),
            ["hidden"] = new List<object?> { 3L },
            ["optimizer"] = "adam",
            ["lr"] = 0.001,
            ["batch"] = 32L,
            ["steps"] = 5_000_000_000L,
            ["seed"] = -200L,
            ["test_accuracy"] = double.NaN,
            ["bn_eps"] = 1e-5f,
            ["shuffle"] = true,
            ["resumed_from"] = null,
            ["big"] = ulong.MaxValue,
            ["ints"] = new List<object?> { 0, 127, 128, 255, 256, 65535, 65536, 4294967295L, 4294967296L, -1, -32, -33, -128, -129, -32768, -32769, int.MinValue, int.MinValue - 1L },
            ["note"] = new string('x', 300),
            ["blob"] = new byte[] { 1, 2, 3 },
            ["started"] = new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero).AddTicks(6),
            ["ext"] = new ExtensionResult(7, new byte[] { 9, 8 }),
            ["nested"] = new Dictionary<string, object?> { ["a"] = 1, ["b"] = new List<object?>() },
        });

    [Fact]
    public void The_writer_reproduces_the_fixture_byte_for_byte_as_version_2()
    {
        // Same choices as the old writer: smallest int, str, bin, array, map and ext encodings, float32 for float,
        // float64 for double, one bin per float array, keys in order. Version 2 adds to version 1's bytes: two entries
        // in the top map, version 2, "preprocessing" (nil: none) after "input", and the checksum entry at the end,
        // the SHA-256 of every byte before it.
        byte[] v1 = File.ReadAllBytes(FixturePath);
        int versionAt = v1.AsSpan().IndexOf((byte[])[0xa7, .. "version"u8]) + 8;
        int classesAt = v1.AsSpan().IndexOf((byte[])[0xa7, .. "classes"u8]);
        Assert.Equal((byte)0x86, v1[0]);
        Assert.Equal((byte)0x01, v1[versionAt]);
        byte[] covered = [0x88, .. v1[1..versionAt], 0x02, .. v1[(versionAt + 1)..classesAt], 0xad, .. "preprocessing"u8, 0xc0, .. v1[classesAt..]];
        byte[] expected = [.. covered, 0xa8, .. "checksum"u8, 0xc4, 0x20, .. SHA256.HashData(covered)];

        Assert.Equal(Convert.ToHexString(expected), Convert.ToHexString(ModelFile.Serialize(FixtureDocument())));
    }

    [Fact]
    public void The_v1_fixture_has_no_preprocessing()
    {
        Assert.Null(ModelFile.Read(FixturePath).Preprocessing);
    }

    [Fact]
    public void The_fixture_cut_or_corrupted_only_ever_fails_with_ModelFileException()
    {
        byte[] full = File.ReadAllBytes(FixturePath);
        for (int cut = 0; cut < full.Length; cut++)
        {
            var e = Assert.Throws<ModelFileException>(() => ModelFile.Deserialize(full.AsMemory(0, cut), "cut.bnc"));
            Assert.StartsWith("cut.bnc: ", e.Message);
        }
        var random = new Random(7);
        for (int i = 0; i < 5_000; i++)
        {
            byte[] input = (byte[])full.Clone();
            for (int flips = random.Next(1, 4); flips > 0; flips--) input[random.Next(input.Length)] = (byte)random.Next(256);
            try { ModelFile.Deserialize(input, "f.bnc"); }
            catch (ModelFileException e) { Assert.StartsWith("f.bnc: ", e.Message); }
            catch (Exception e) { Assert.Fail($"{Convert.ToHexString(input)}: {e.GetType().Name}: {e.Message}"); }
        }
    }

    [Fact]
    public void The_v1_fixture_loads_with_every_value()
    {
        ModelDocument doc = ModelFile.Read(FixturePath);

        Assert.Equal(4, doc.Input.Features);
        AssertFloats([0.5f, -1.25f, 3.1415927f, 0f], doc.Input.Mean);
        AssertFloats([1f, 0.0625f, 2.5f, 1e-8f], doc.Input.Var);
        Assert.Equal(BitConverter.SingleToInt32Bits(1e-5f), BitConverter.SingleToInt32Bits(doc.Input.Eps));
        Assert.Equal(["no", "sí"], doc.Classes);

        Assert.Equal(4, doc.Layers.Count);
        var d0 = Assert.IsType<DenseLayerRecord>(doc.Layers[0]);
        Assert.Equal((4, 3), (d0.In, d0.Out));
        AssertFloats(Enumerable.Range(0, 12).Select(i => i * 0.1f - 0.6f).ToArray(), d0.Weight);
        AssertFloats([0.1f, -0.2f, 0.3f], d0.Bias);
        var bn = Assert.IsType<BatchNormLayerRecord>(doc.Layers[1]);
        Assert.Equal(3, bn.Features);
        AssertFloats([1f, 1.5f, 0.75f], bn.Gamma);
        AssertFloats([0f, -0.1f, 0.2f], bn.Beta);
        AssertFloats([0.01f, -0.02f, 0.03f], bn.RunningMean);
        AssertFloats([1.1f, 0.9f, 2f], bn.RunningVar);
        Assert.Equal((1e-5f, 0.1f), (bn.Eps, bn.Momentum));
        Assert.Equal(new ActivationLayerRecord("relu"), doc.Layers[2]);
        var d3 = Assert.IsType<DenseLayerRecord>(doc.Layers[3]);
        Assert.Equal((3, 2), (d3.In, d3.Out));
        AssertFloats([0.25f, -0.5f, 0.125f, 1f, -1f, 0.333f], d3.Weight);
        Assert.Null(d3.Bias);

        IReadOnlyDictionary<string, object?> t = doc.Training;
        Assert.Equal(
            ["dataset", "dataset_sha256", "hidden", "optimizer", "lr", "batch", "steps", "seed", "test_accuracy", "bn_eps",
             "shuffle", "resumed_from", "big", "ints", "note", "blob", "started", "ext", "nested"],
            t.Keys);
        Assert.Equal("digits", t["dataset"]);
        Assert.Equal(new string('f', 64), t["dataset_sha256"]);
        Assert.Equal(new object?[] { 3L }, Assert.IsAssignableFrom<IReadOnlyList<object?>>(t["hidden"]));
        Assert.Equal("adam", t["optimizer"]);
        Assert.Equal(0.001, Assert.IsType<double>(t["lr"]));
        Assert.Equal(32L, Assert.IsType<long>(t["batch"]));
        Assert.Equal(5_000_000_000L, Assert.IsType<long>(t["steps"]));
        Assert.Equal(-200L, Assert.IsType<long>(t["seed"]));
        Assert.Equal(BitConverter.DoubleToInt64Bits(double.NaN), BitConverter.DoubleToInt64Bits(Assert.IsType<double>(t["test_accuracy"])));
        Assert.Equal((double)1e-5f, Assert.IsType<double>(t["bn_eps"])); // float32 on disk, widened exactly
        Assert.Equal(true, t["shuffle"]);
        Assert.True(t.ContainsKey("resumed_from"));
        Assert.Null(t["resumed_from"]);
        Assert.Equal(ulong.MaxValue, Assert.IsType<ulong>(t["big"]));
        Assert.Equal(
            new object?[] { 0L, 127L, 128L, 255L, 256L, 65535L, 65536L, 4294967295L, 4294967296L, -1L, -32L, -33L, -128L, -129L, -32768L, -32769L, (long)int.MinValue, int.MinValue - 1L },
            Assert.IsAssignableFrom<IReadOnlyList<object?>>(t["ints"]));
        Assert.Equal(new string('x', 300), t["note"]);
        Assert.Equal(new byte[] { 1, 2, 3 }, Assert.IsType<byte[]>(t["blob"]));
        DateTimeOffset started = Assert.IsType<DateTimeOffset>(t["started"]);
        Assert.Equal(new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero).AddTicks(6).UtcTicks, started.UtcTicks);
        var ext = Assert.IsType<ExtensionResult>(t["ext"]);
        Assert.Equal((sbyte)7, ext.TypeCode);
        Assert.Equal(new byte[] { 9, 8 }, ext.Data.ToArray());
        var nested = Assert.IsAssignableFrom<IReadOnlyDictionary<string, object?>>(t["nested"]);
        Assert.Equal(2, nested.Count);
        Assert.Equal(1L, nested["a"]);
        Assert.Empty(Assert.IsAssignableFrom<IReadOnlyList<object?>>(nested["b"]));
    }
}
