using System.Globalization;
using System.Security.Cryptography;
using BnCluster.Core.Model;

namespace BnCluster.Core.Data;

/// <summary>
/// Resolves the <c>--dataset</c> argument to a train/test split:
/// <list type="bullet">
/// <item><c>digits</c>: the UCI optical digits embedded in this assembly (1797 × 64, pixels ÷16), seeded 80/20 split (360 test rows).</item>
/// <item><c>fashion-mnist</c> / <c>mnist</c>: the four IDX files from ~/.bncluster/datasets/&lt;name&gt; or /usr/share/datasets/&lt;name&gt;.</item>
/// <item>a directory: the four IDX files in it (raw or .gz), class names from an optional classes.txt, else "0".."9".</item>
/// <item>a .csv (or .csv.gz) file: labelled CSV with a seeded split (ceil 20 % test).</item>
/// </list>
/// <see cref="DatasetSplit.Sha256"/> is the SHA-256 over the source files' on-disk bytes in a
/// fixed order (IDX: train images, train labels, test images, test labels, then classes.txt).
/// <see cref="DatasetSplit.Preprocessing"/> says how the loader scaled the file's values: IDX pixels ÷255, digits ÷16,
/// CSV files not at all.
/// </summary>
public static class DatasetCatalog
{
    public const string DigitsResourceName = "BnCluster.Core.Data.digits.csv.gz";
    public const string ClassNamesFile = "classes.txt";

    /// <summary>The digits' pixels are counts 0..16; the loader divides them by this (the model records it).</summary>
    public const float DigitsPixelDivisor = 16f;

    public static readonly IReadOnlyList<string> FashionMnistClassNames =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

    public static readonly IReadOnlyList<string> DigitClassNames =
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

    /// <summary>The four IDX files of a train/test pair, in hashing order.</summary>
    public static readonly IReadOnlyList<string> IdxFileNames =
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

    public static DatasetSplit Load(string spec, int seed = 0, string? labelColumn = null)
    {
        ArgumentNullException.ThrowIfNull(spec);
        string trimmed = spec.Trim();
        bool isCsv = trimmed.EndsWith(".csv", StringComparison.OrdinalIgnoreCase)
                     || trimmed.EndsWith(".csv.gz", StringComparison.OrdinalIgnoreCase);
        if (labelColumn is not null && !isCsv)
            throw new DatasetException($"{spec}: a label column applies only to a .csv dataset");

        switch (trimmed.ToLowerInvariant())
        {
            case "digits": return LoadDigits(seed);
            case "fashion-mnist": return LoadNamedIdx("fashion-mnist", FashionMnistClassNames, DefaultSearchDirectories("fashion-mnist"));
            case "mnist": return LoadNamedIdx("mnist", DigitClassNames, DefaultSearchDirectories("mnist"));
        }
        if (isCsv) return LoadCsv(trimmed, seed, labelColumn);
        if (Directory.Exists(trimmed)) return LoadIdxDirectory(trimmed, Path.GetFileName(Path.TrimEndingDirectorySeparator(trimmed)));
        if (File.Exists(trimmed))
            throw new DatasetException($"{spec}: not a dataset: expected a .csv file or a directory with the four IDX files");
        throw new DatasetException(
            $"{spec}: no such dataset: expected digits, fashion-mnist, mnist, a directory with the four IDX files, or a .csv file");
    }

    /// <summary>~/.bncluster/datasets/&lt;name&gt; then /usr/share/datasets/&lt;name&gt;.</summary>
    public static IReadOnlyList<string> DefaultSearchDirectories(string name)
    {
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        var dirs = new List<string>();
        if (!string.IsNullOrEmpty(home)) dirs.Add(Path.Combine(home, ".bncluster", "datasets", name));
        dirs.Add(Path.Combine("/usr/share/datasets", name));
        return dirs;
    }

    internal static DatasetSplit LoadNamedIdx(string name, IReadOnlyList<string> classNames, IReadOnlyList<string> searchDirectories)
    {
        foreach (string dir in searchDirectories)
            if (FindIdxFiles(dir) is { } files)
                return LoadIdxFiles(files, name, classNames);
        string debianHint = name == "fashion-mnist" ? "run `apt-get install dataset-fashion-mnist`, or " : "";
        throw new DatasetException(
            $"{name}: dataset not found in {string.Join(" or ", searchDirectories)}: {debianHint}put the four files " +
            $"{string.Join(", ", IdxFileNames)} (raw or .gz) in {searchDirectories[0]}");
    }

    internal static DatasetSplit LoadIdxDirectory(string dir, string name)
    {
        var files = FindIdxFiles(dir) ?? throw new DatasetException(
            $"{dir}: missing IDX files: needs {string.Join(", ", IdxFileNames)} (each raw or .gz); " +
            $"missing {string.Join(", ", IdxFileNames.Where(f => FindOne(dir, f) is null))}");
        string namesPath = Path.Combine(dir, ClassNamesFile);
        IReadOnlyList<string> classNames = DigitClassNames;
        byte[]? namesBytes = null;
        if (File.Exists(namesPath))
        {
            namesBytes = SourceFile.ReadAllBytes(namesPath);
            classNames = ParseClassNames(namesPath, namesBytes);
        }
        return LoadIdxFiles(files, name, classNames, namesBytes);
    }

    private static string? FindOne(string dir, string fileName)
    {
        string raw = Path.Combine(dir, fileName);
        if (File.Exists(raw)) return raw;
        string gz = raw + ".gz";
        return File.Exists(gz) ? gz : null;
    }

    private static string[]? FindIdxFiles(string dir)
    {
        var found = new string[IdxFileNames.Count];
        for (int i = 0; i < found.Length; i++)
        {
            if (FindOne(dir, IdxFileNames[i]) is not { } path) return null;
            found[i] = path;
        }
        return found;
    }

    private static DatasetSplit LoadIdxFiles(string[] files, string name, IReadOnlyList<string> classNames, byte[]? extraHashedBytes = null)
    {
        // One pass per file in hashing order: the on-disk bytes stream through the hash and the gunzip, so only the
        // content is ever held (not also the compressed file); the pixels are kept as they are, as bytes.
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        (Dataset, int Rows, int Columns) ReadPair(string imagesPath, string labelsPath)
        {
            var images = IdxReader.ParseImages(imagesPath, SourceFile.ReadContent(imagesPath, hash, out bool imagesGzip), imagesGzip);
            var labelsContent = SourceFile.ReadContent(labelsPath, hash, out bool labelsGzip);
            var labels = IdxReader.ParseLabels(labelsPath, labelsContent.Span, labelsGzip, classNames.Count);
            return (IdxReader.Combine(imagesPath, images, labelsPath, labels, name, classNames), images.Rows, images.Columns);
        }
        var (train, trainRows, trainColumns) = ReadPair(files[0], files[1]);
        var (test, testRows, testColumns) = ReadPair(files[2], files[3]);
        // Same pixel count is not enough: 14×56 test images against 28×28 training images are other pictures.
        if ((testRows, testColumns) != (trainRows, trainColumns))
            throw new DatasetException(
                $"{files[2]}: images are {testRows}×{testColumns} but {files[0]} has {trainRows}×{trainColumns}");
        if (extraHashedBytes is not null) hash.AppendData(extraHashedBytes);
        if (train.Count == 0) throw new DatasetException($"{files[0]}: holds no images");
        if (test.Count == 0) throw new DatasetException($"{files[2]}: holds no images");
        if (train.FeatureCount != test.FeatureCount)
            throw new DatasetException(
                $"{files[2]}: images have {test.FeatureCount} pixels but {files[0]} has {train.FeatureCount}");
        return new DatasetSplit(train, test, Convert.ToHexStringLower(hash.GetHashAndReset()), SplitDependsOnSeed: false)
        {
            Preprocessing = new InputPreprocessing(IdxReader.PixelDivisor),
            SampleShape = [trainRows, trainColumns],
        };
    }

    private static IReadOnlyList<string> ParseClassNames(string path, byte[] bytes)
    {
        var text = System.Text.Encoding.UTF8.GetString(bytes);
        var names = text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        if (names.Length == 0) throw new DatasetException($"{path}: no class names (one per line expected)");
        return names;
    }

    private static DatasetSplit LoadCsv(string path, int seed, string? labelColumn)
    {
        byte[] fileBytes = SourceFile.ReadAllBytes(path);
        var all = CsvDatasetReader.Parse(path, fileBytes, labelColumn, Path.GetFileName(path));
        var (train, test) = SeededSplit.Split(all, SeededSplit.TestCountFor(all.Count), seed);
        return new DatasetSplit(train, test, Convert.ToHexStringLower(SHA256.HashData(fileBytes)), SplitDependsOnSeed: true);
    }

    /// <summary>The embedded digits.csv.gz bytes (see data/digits/README.md).</summary>
    internal static byte[] ReadDigitsResource()
    {
        using var stream = typeof(DatasetCatalog).Assembly.GetManifestResourceStream(DigitsResourceName)
                           ?? throw new DatasetException($"digits: embedded resource {DigitsResourceName} is missing from BnCluster.Core");
        var bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        return bytes;
    }

    private static DatasetSplit LoadDigits(int seed)
    {
        const string source = "digits (embedded digits.csv.gz)";
        byte[] fileBytes = ReadDigitsResource();
        var raw = CsvDatasetReader.Parse(source, fileBytes, labelColumn: null, name: "digits");
        if (raw.FeatureCount != 64 || raw.ClassCount != 10)
            throw new DatasetException($"{source}: expected 64 pixels and labels 0..9, found {raw.FeatureCount} and 0..{raw.ClassCount - 1}");

        // Pixels are counts of on-bits in 4×4 blocks, 0..16; ÷16 puts them in [0, 1] like the IDX images.
        var pixels = raw.Features;
        for (int i = 0; i < pixels.Length; i++)
        {
            if (pixels[i] < 0 || pixels[i] > DigitsPixelDivisor)
                throw new DatasetException(
                    $"{source}: row {i / 64 + 1}, column {i % 64 + 1}: pixel {pixels[i].ToString(CultureInfo.InvariantCulture)} outside 0..16");
        }
        var preprocessing = new InputPreprocessing(DigitsPixelDivisor);
        preprocessing.Apply(pixels);
        var all = new Dataset("digits", pixels, raw.Labels, raw.FeatureCount, DigitClassNames);
        var (train, test) = SeededSplit.Split(all, SeededSplit.TestCountFor(all.Count), seed);
        return new DatasetSplit(train, test, Convert.ToHexStringLower(SHA256.HashData(fileBytes)), SplitDependsOnSeed: true)
        {
            Preprocessing = preprocessing,
            SampleShape = [8, 8],
        };
    }
}
