using System.Security.Cryptography;
using BnCluster.Core.Data;
using Xunit;
using Xunit.Abstractions;

namespace BnCluster.Core.Tests.Data;

public sealed class DatasetCatalogTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDirectory _dir = new();
    public void Dispose() => _dir.Dispose();

    private const string FashionDir = "/usr/share/datasets/fashion-mnist";

    /// <summary>SHA-256 of data/digits/digits.csv.gz as copied from python3-sklearn 1.2.1+dfsg-1.</summary>
    private const string DigitsSha256 = "46abec6b12486ad9e51943373abcf22bbea1b5a51a1619b361570d8893f1464a";

    [Fact]
    public void FashionMnistFromTheDebianPackageLoads()
    {
        // Not skipped when absent: CI installs dataset-fashion-mnist and must notice if it is gone.
        Assert.True(File.Exists(Path.Combine(FashionDir, "train-images-idx3-ubyte.gz")),
            $"{FashionDir} is missing: apt-get install dataset-fashion-mnist");
        var cpuBefore = System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var split = DatasetCatalog.LoadNamedIdx("fashion-mnist", DatasetCatalog.FashionMnistClassNames, [FashionDir]);
        var cpu = System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime - cpuBefore;
        output.WriteLine($"Fashion-MNIST load (read, SHA-256, gunzip, decode): {clock.ElapsedMilliseconds} ms wall, {cpu.TotalMilliseconds:F0} ms CPU");

        Assert.Equal(60000, split.Train.Count);
        Assert.Equal(10000, split.Test.Count);
        Assert.Equal(784, split.Train.FeatureCount);
        Assert.Equal(784, split.Test.FeatureCount);
        Assert.True(split.Train.StoresBytes); // one byte per pixel: 47 MB, not 188 MB of float32
        Assert.False(split.SplitDependsOnSeed); // the files fix the split: a worker never needs to load it again
        Assert.Equal(60000L * 784, split.Train.StorageBytes);
        Assert.Equal(10000L * 784, split.Test.StorageBytes);
        Assert.Equal(10, split.Train.ClassCount);
        Assert.Equal("Ankle boot", split.Train.ClassNames[9]);
        Assert.Equal(0, split.Train.Labels.Min());
        Assert.Equal(9, split.Train.Labels.Max());
        Assert.Equal(0, split.Test.Labels.Min());
        Assert.Equal(9, split.Test.Labels.Max());
        // Balanced: 6000 of each class in train, 1000 in test.
        Assert.All(split.Train.Labels.GroupBy(l => l), g => Assert.Equal(6000, g.Count()));
        Assert.All(split.Test.Labels.GroupBy(l => l), g => Assert.Equal(1000, g.Count()));
        var (min, max) = ValueRange(split.Train);
        Assert.Equal(0f, min);
        Assert.Equal(1f, max);

        // Hash: SHA-256 over the four files' bytes in order train images, train labels, test images, test labels.
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (string name in DatasetCatalog.IdxFileNames)
            sha.AppendData(File.ReadAllBytes(Path.Combine(FashionDir, name + ".gz")));
        Assert.Equal(Convert.ToHexStringLower(sha.GetHashAndReset()), split.Sha256);
    }

    [Fact]
    public void MissingNamedDatasetSaysHowToGetIt()
    {
        string home = Path.Combine(_dir.Path, "home-datasets");
        string system = Path.Combine(_dir.Path, "usr-share");
        var ex = Assert.Throws<DatasetException>(() =>
            DatasetCatalog.LoadNamedIdx("fashion-mnist", DatasetCatalog.FashionMnistClassNames, [home, system]));
        Assert.Contains("apt-get install dataset-fashion-mnist", ex.Message);
        Assert.Contains(home, ex.Message);
        Assert.Contains(system, ex.Message);
        Assert.Contains("train-images-idx3-ubyte", ex.Message);
        Assert.Contains("t10k-labels-idx1-ubyte", ex.Message);
    }

    [Fact]
    public void DefaultSearchDirectoriesAreHomeThenUsrShare()
    {
        var dirs = DatasetCatalog.DefaultSearchDirectories("fashion-mnist");
        Assert.EndsWith(Path.Combine(".bncluster", "datasets", "fashion-mnist"), dirs[0]);
        Assert.Equal(FashionDir, dirs[^1]);
    }

    [Fact]
    public void DigitsLoadWithADeterministicSeededSplit()
    {
        var a = DatasetCatalog.Load("digits", seed: 1);
        Assert.Equal(1797, a.Train.Count + a.Test.Count);
        Assert.Equal(360, a.Test.Count);
        Assert.Equal(64, a.Train.FeatureCount);
        Assert.Equal(10, a.Train.ClassCount);
        Assert.Equal(DigitsSha256, a.Sha256);
        Assert.True(a.SplitDependsOnSeed);
        Assert.Equal(0f, a.Train.Features.Min());
        Assert.Equal(1f, a.Train.Features.Max());
        Assert.All(a.Train.Features, v => Assert.Equal(0f, v * 16f - MathF.Round(v * 16f)));
        // Every class is present on both sides.
        Assert.Equal(10, a.Test.Labels.Distinct().Count());
        Assert.Equal(10, a.Train.Labels.Distinct().Count());

        var again = DatasetCatalog.Load("digits", seed: 1);
        Assert.Equal(a.Train.Labels, again.Train.Labels);
        Assert.Equal(a.Train.Features, again.Train.Features);
        Assert.Equal(a.Test.Features, again.Test.Features);
        Assert.Equal(a.Sha256, again.Sha256);

        var other = DatasetCatalog.Load("digits", seed: 2);
        Assert.Equal(360, other.Test.Count);
        Assert.NotEqual(a.Test.Features, other.Test.Features);
        Assert.Equal(a.Sha256, other.Sha256); // the hash covers the source file, not the split

        // Train and test are disjoint and together are the whole file: compare multisets of rows.
        var all = RowKeys(a.Train).Concat(RowKeys(a.Test)).Order().ToArray();
        var allOther = RowKeys(other.Train).Concat(RowKeys(other.Test)).Order().ToArray();
        Assert.Equal(all, allOther);
    }

    private static IEnumerable<string> RowKeys(Dataset d) =>
        Enumerable.Range(0, d.Count).Select(i => string.Join(",", d.RowToArray(i)) + ":" + d.Labels[i]);

    private static (float Min, float Max) ValueRange(Dataset d)
    {
        var row = new float[d.FeatureCount];
        float min = float.MaxValue, max = float.MinValue;
        for (int i = 0; i < d.Count; i++)
        {
            d.CopyRow(i, row);
            min = Math.Min(min, System.Numerics.Tensors.TensorPrimitives.Min(row));
            max = Math.Max(max, System.Numerics.Tensors.TensorPrimitives.Max(row));
        }
        return (min, max);
    }

    [Fact]
    public void SeededPermutationIsAPermutationAndSeedDependent()
    {
        var p = SeededSplit.Permutation(1000, 7);
        Assert.Equal(Enumerable.Range(0, 1000), p.Order());
        Assert.Equal(p, SeededSplit.Permutation(1000, 7));
        Assert.NotEqual(p, SeededSplit.Permutation(1000, 8));
        // Neighbouring seeds must not give shifted copies of one stream.
        Assert.NotEqual(p[1..], SeededSplit.Permutation(1000, 8)[..^1]);
    }

    [Fact]
    public void Test_images_of_another_shape_with_the_same_pixel_count_are_refused()
    {
        // 14×56 and 28×28 hold 784 pixels each, but they are other pictures.
        _dir.Write("train-images-idx3-ubyte", IdxFixture.Images(1, 28, 28, new byte[784]));
        _dir.Write("train-labels-idx1-ubyte", IdxFixture.Labels(1, [0]));
        _dir.Write("t10k-images-idx3-ubyte", IdxFixture.Images(1, 14, 56, new byte[784]));
        _dir.Write("t10k-labels-idx1-ubyte", IdxFixture.Labels(1, [0]));
        var ex = Assert.Throws<DatasetException>(() => DatasetCatalog.Load(_dir.Path));
        Assert.EndsWith("t10k-images-idx3-ubyte: images are 14×56 but " + Path.Combine(_dir.Path, "train-images-idx3-ubyte") + " has 28×28", ex.Message);
    }

    [Fact]
    public void IdxDirectoryWithMixedRawAndGzipFiles()
    {
        byte[] trainImages = IdxFixture.Images(4, 1, 2, [0, 255, 10, 20, 30, 40, 50, 60]);
        byte[] trainLabels = IdxFixture.Labels(4, [0, 1, 2, 1]);
        byte[] testImages = IdxFixture.Gzip(IdxFixture.Images(2, 1, 2, [1, 2, 3, 4]));
        byte[] testLabels = IdxFixture.Labels(2, [2, 0]);
        _dir.Write("train-images-idx3-ubyte", trainImages);
        _dir.Write("train-labels-idx1-ubyte.gz", IdxFixture.Gzip(trainLabels));
        _dir.Write("t10k-images-idx3-ubyte.gz", testImages);
        _dir.Write("t10k-labels-idx1-ubyte", testLabels);

        var split = DatasetCatalog.Load(_dir.Path);
        Assert.Equal(4, split.Train.Count);
        Assert.Equal(2, split.Test.Count);
        Assert.Equal(2, split.Train.FeatureCount);
        Assert.Equal(DatasetCatalog.DigitClassNames, split.Train.ClassNames);
        Assert.Equal([2, 0], split.Test.Labels);
        Assert.Equal(1f, split.Train.RowToArray(0)[1]);

        string hashBefore = split.Sha256;
        Assert.Equal(hashBefore, DatasetCatalog.Load(_dir.Path + Path.DirectorySeparatorChar).Sha256);
        Assert.Matches("^[0-9a-f]{64}$", hashBefore);

        // A names file changes the class names and the hash.
        _dir.WriteText(DatasetCatalog.ClassNamesFile, "cat\ndog\nbird\n");
        var named = DatasetCatalog.Load(_dir.Path);
        Assert.Equal(["cat", "dog", "bird"], named.Train.ClassNames);
        Assert.NotEqual(hashBefore, named.Sha256);

        // Labels beyond the names file are rejected, naming the file and index.
        _dir.WriteText(DatasetCatalog.ClassNamesFile, "cat\ndog\n");
        var ex = Assert.Throws<DatasetException>(() => DatasetCatalog.Load(_dir.Path));
        Assert.Contains("label 2 at index 2", ex.Message);
    }

    [Fact]
    public void IdxDirectoryMissingFilesIsNamed()
    {
        _dir.Write("train-images-idx3-ubyte", IdxFixture.Images(1, 1, 1, [0]));
        var ex = Assert.Throws<DatasetException>(() => DatasetCatalog.Load(_dir.Path));
        Assert.StartsWith(_dir.Path + ": ", ex.Message);
        Assert.Contains("missing train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte", ex.Message);
    }

    [Fact]
    public void CsvFileWithSeededSplitAndLabelColumn()
    {
        var lines = new List<string> { "f1,f2,class" };
        for (int i = 0; i < 10; i++) lines.Add($"{i},{i * 0.5},{i % 3}");
        string path = _dir.WriteText("table.csv", string.Join("\n", lines));

        var split = DatasetCatalog.Load(path, seed: 3, labelColumn: "class");
        Assert.Equal(8, split.Train.Count);
        Assert.Equal(2, split.Test.Count);
        Assert.Equal(["0", "1", "2"], split.Train.ClassNames);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path))), split.Sha256);
        // Label is f1 mod 3 on every row of either side.
        foreach (var d in new[] { split.Train, split.Test })
            for (int i = 0; i < d.Count; i++)
                Assert.Equal((int)d.RowToArray(i)[0] % 3, d.Labels[i]);

        var byIndex = DatasetCatalog.Load(path, seed: 3, labelColumn: "-1");
        Assert.Equal(split.Test.Features, byIndex.Test.Features);
        var byFirst = DatasetCatalog.Load(path, seed: 3, labelColumn: "0");
        Assert.Equal(10, byFirst.Train.ClassCount);
    }

    [Fact]
    public void BadSpecs()
    {
        var unknown = Assert.Throws<DatasetException>(() => DatasetCatalog.Load("cifar-99"));
        Assert.Contains("cifar-99", unknown.Message);
        Assert.Contains("digits, fashion-mnist", unknown.Message);

        string missingCsv = Path.Combine(_dir.Path, "absent.csv");
        Assert.StartsWith(missingCsv + ": ", Assert.Throws<DatasetException>(() => DatasetCatalog.Load(missingCsv)).Message);

        Assert.Contains("label column", Assert.Throws<DatasetException>(() => DatasetCatalog.Load("digits", 0, "3")).Message);

        string notData = _dir.WriteText("notes.txt", "hello");
        Assert.Contains("not a dataset", Assert.Throws<DatasetException>(() => DatasetCatalog.Load(notData)).Message);

        string tiny = _dir.WriteText("one.csv", "1,0\n");
        Assert.Contains("cannot be split", Assert.Throws<DatasetException>(() => DatasetCatalog.Load(tiny)).Message);
    }
}
