using System.Security.Cryptography;
using BnCluster.Core.Data;
using BnCluster.Core.Model;
using BnCluster.Core.Tests.Data;
using Xunit;

namespace BnCluster.Core.Tests.Model;

/// <summary>
/// Version 2 of model.bnc: the checksum entry that ends the file (SHA-256 of every byte before it) and the recorded
/// preprocessing. A damaged version 2 file must never load.
/// </summary>
public sealed class ModelFileChecksumTests
{
    private static ModelDocument Sample() => ModelFileTests.SampleModel() with { Preprocessing = new InputPreprocessing(16f) };

    private static ModelFileException Refused(byte[] bytes, string source = "m.bnc")
    {
        try
        {
            ModelFile.Deserialize(bytes, source);
        }
        catch (ModelFileException e)
        {
            return e;
        }
        catch (Exception e)
        {
            Assert.Fail($"{Convert.ToHexString(bytes)}: {e.GetType().Name}: {e.Message}");
        }
        Assert.Fail($"accepted a damaged model: {Convert.ToHexString(bytes)}");
        return null!;
    }

    [Fact]
    public void Every_byte_changed_anywhere_is_refused_naming_the_file()
    {
        byte[] valid = ModelFile.Serialize(Sample());
        ModelFile.Deserialize(valid, "flip.bnc");
        foreach (byte mask in new byte[] { 0x01, 0x80, 0xff })
            for (int at = 0; at < valid.Length; at++)
            {
                byte[] damaged = (byte[])valid.Clone();
                damaged[at] ^= mask;
                Assert.StartsWith("flip.bnc: ", Refused(damaged, "flip.bnc").Message);
            }
    }

    [Fact]
    public void Forty_random_bytes_are_always_refused()
    {
        byte[] valid = ModelFile.Serialize(Sample());
        var random = new Random(40);
        for (int trial = 0; trial < 2_000; trial++)
        {
            byte[] damaged = (byte[])valid.Clone();
            for (int i = 0; i < 40; i++) damaged[random.Next(damaged.Length)] = (byte)random.Next(256);
            if (damaged.AsSpan().SequenceEqual(valid)) continue;
            Assert.StartsWith("r.bnc: ", Refused(damaged, "r.bnc").Message);
        }
    }

    [Fact]
    public void A_changed_weight_is_a_checksum_mismatch_naming_the_file()
    {
        using var dir = new TempDirectory();
        byte[] bytes = ModelFile.Serialize(Sample());
        bytes[bytes.Length / 2] ^= 0x04; // inside a float array: still a well-formed model without the checksum
        string path = dir.Write("model.bnc", bytes);

        var e = Assert.Throws<ModelFileException>(() => ModelFile.Read(path));

        Assert.Equal(path, e.FileName);
        Assert.Equal("checksum", e.Field);
        Assert.StartsWith($"{path}: checksum does not match: the SHA-256 of the first {bytes.Length - ModelFile.ChecksumEntryBytes} bytes is ", e.Message);
        Assert.EndsWith("(the file is damaged or was modified)", e.Message);
    }

    [Fact]
    public void A_version_lowered_to_1_does_not_turn_the_check_off()
    {
        byte[] bytes = ModelFile.Serialize(Sample());
        int versionAt = bytes.AsSpan().IndexOf((byte[])[0xa7, .. "version"u8]) + 8;
        Assert.Equal((byte)2, bytes[versionAt]);
        bytes[versionAt] = 1;
        Assert.Equal("checksum", Refused(bytes).Field);
    }

    [Fact]
    public void A_version_2_file_without_its_checksum_entry_is_refused()
    {
        byte[] bytes = ModelFile.Serialize(Sample());
        byte[] cut = [(byte)(bytes[0] - 1), .. bytes[1..^ModelFile.ChecksumEntryBytes]]; // a well-formed map of the other entries
        Assert.Equal("m.bnc: checksum is missing: a version 2 file ends with its SHA-256 (the file was cut or damaged)", Refused(cut).Message);
    }

    [Fact]
    public void A_checksum_entry_that_does_not_end_the_file_is_refused()
    {
        byte[] v1 = ModelFileTests.HandWrittenModel(Sample());
        byte[] bin = [0xc4, 0x20, .. SHA256.HashData(v1)];
        // checksum first, then the rest: a v1 map whose checksum entry is not the last one.
        byte[] bytes = [(byte)(v1[0] + 1), 0xa8, .. "checksum"u8, .. bin, .. v1[1..]];
        Assert.Matches(@"^m\.bnc: checksum at offset 1 must be the model map's last entry, a bin8 of 32 bytes ending the file$", Refused(bytes).Message);
    }

    [Fact]
    public void Preprocessing_round_trips_and_none_is_nil()
    {
        Assert.Equal(new InputPreprocessing(16f), ModelFile.Deserialize(ModelFile.Serialize(Sample())).Preprocessing);
        Assert.Equal(new InputPreprocessing(255f), ModelFile.Deserialize(ModelFile.Serialize(Sample() with { Preprocessing = new(255f) })).Preprocessing);
        Assert.Null(ModelFile.Deserialize(ModelFile.Serialize(Sample() with { Preprocessing = null })).Preprocessing);
        // A version 1 file has none.
        Assert.Null(ModelFile.Deserialize(ModelFileTests.HandWrittenModel(Sample())).Preprocessing);
    }

    [Theory]
    [InlineData(0f)]
    [InlineData(-16f)]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    public void A_divisor_that_is_not_positive_and_finite_is_refused(float divisor)
    {
        var e = Assert.Throws<ModelFileException>(() => ModelFile.Serialize(Sample() with { Preprocessing = new(divisor) }));
        Assert.Equal("preprocessing.divisor", e.Field);
    }

    [Fact]
    public void The_loaders_say_what_they_divided_by()
    {
        var digits = DatasetCatalog.Load("digits", seed: 1);
        Assert.Equal(new InputPreprocessing(16f), digits.Preprocessing);
        // The digits' raw rows divided by the recorded divisor are the loader's rows, bit for bit.
        byte[] csv = DatasetCatalog.ReadDigitsResource();
        var raw = CsvDatasetReader.Parse("digits", csv, null, "digits");
        float[] row = raw.Features[..64];
        digits.Preprocessing!.Apply(row);
        var rows = Enumerable.Range(0, digits.Train.Count).Select(digits.Train.RowToArray)
            .Concat(Enumerable.Range(0, digits.Test.Count).Select(digits.Test.RowToArray));
        Assert.Contains(rows, r => r.AsSpan().SequenceEqual(row));

        using var dir = new TempDirectory();
        Assert.Null(DatasetCatalog.Load(dir.WriteText("t.csv", "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")).Preprocessing);

        byte[] pixels = [0, 51, 255, 7];
        dir.Write("train-images-idx3-ubyte", IdxFixture.Images(1, 2, 2, pixels));
        dir.Write("train-labels-idx1-ubyte", IdxFixture.Labels(1, [3]));
        dir.Write("t10k-images-idx3-ubyte", IdxFixture.Images(1, 2, 2, pixels));
        dir.Write("t10k-labels-idx1-ubyte", IdxFixture.Labels(1, [3]));
        var idx = DatasetCatalog.Load(dir.Path);
        Assert.Equal(new InputPreprocessing(255f), idx.Preprocessing);
        float[] rawPixels = pixels.Select(b => (float)b).ToArray();
        idx.Preprocessing!.Apply(rawPixels);
        Assert.Equal(idx.Test.RowToArray(0), rawPixels);
    }
}
