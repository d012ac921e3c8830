using System.Globalization;
using System.Text;
using System.Text.Json;
using BnCluster.Core.Data;
using BnCluster.Core.Model;
using BnCluster.Node.Commands;
using Xunit;

namespace BnCluster.IntegrationTests;

/// <summary>One small digits model, trained once for the tests of <see cref="ModelCommandsTests"/>.</summary>
public sealed class DigitsModel : IDisposable
{
    private readonly TempFolder _folder = new();

    public DigitsModel()
    {
        var train = CliHarness.Run("train", "--dataset", "digits", "--epochs", "5", "--workers", "1", "--out", _folder["run"]);
        if (train.Exit != 0) throw new InvalidOperationException("training the test model failed: " + train.Error);
    }

    public string ModelPath => Path.Combine(_folder["run"], "model.bnc");

    /// <summary>A new file in a temp folder of its own.</summary>
    public string File(string name) => _folder[name];

    public void Dispose() => _folder.Dispose();
}

/// <summary>
/// `eval` and `predict` on model.bnc version 2: refusing damaged or mismatched models, warning on another dataset file,
/// predicting raw rows in the training file's own format, probabilities.
/// </summary>
public sealed class ModelCommandsTests(DigitsModel model) : IClassFixture<DigitsModel>
{
    /// <summary>The shipped digits file, found from the test's folder up to the repository.</summary>
    private static string DigitsFile()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "data", "digits", "digits.csv.gz");
            if (System.IO.File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException("data/digits/digits.csv.gz not found above " + AppContext.BaseDirectory);
    }

    /// <summary>The test split of the model's seed as raw rows of the shipped file (pixels 0..16) and their labels.</summary>
    private static (string[] Rows, int[] Labels) RawTestRows(int seed)
    {
        var all = CsvDatasetReader.Read(DigitsFile(), name: "digits"); // raw values: no ÷16
        var (_, test) = SeededSplit.Split(all, SeededSplit.TestCountFor(all.Count), seed);
        var rows = Enumerable.Range(0, test.Count)
            .Select(r => string.Join(',', test.RowToArray(r).Select(v => v.ToString(CultureInfo.InvariantCulture)))).ToArray();
        return (rows, test.Labels);
    }

    private string WriteRows(string name, IEnumerable<string> rows)
    {
        string path = model.File(name);
        System.IO.File.WriteAllLines(path, rows);
        return path;
    }

    private string DamagedCopy(string name, int at)
    {
        byte[] bytes = System.IO.File.ReadAllBytes(model.ModelPath);
        bytes[at] ^= 0x10;
        string path = model.File(name);
        System.IO.File.WriteAllBytes(path, bytes);
        return path;
    }

    [Fact]
    public void Predict_on_raw_digits_rows_gives_evals_accuracy()
    {
        var eval = CliHarness.Run("eval", "--model", model.ModelPath, "--dataset", "digits", "--json");
        Assert.True(eval.Exit == 0, eval.Error);
        Assert.Equal("", eval.Error); // the same dataset file: no warning
        double accuracy = JsonDocument.Parse(eval.Out).RootElement.GetProperty("accuracy").GetDouble();
        Assert.True(accuracy >= 0.9, $"accuracy {accuracy}");

        var (rows, labels) = RawTestRows(seed: 1);
        Assert.All(rows, r => Assert.DoesNotContain('.', r)); // the file's own integers 0..16
        var predict = CliHarness.Run("predict", "--model", model.ModelPath, "--input", WriteRows("raw.csv", rows));

        Assert.True(predict.Exit == 0, predict.Error);
        Assert.Equal(rows.Length, predict.OutLines.Length);
        int correct = predict.OutLines.Where((name, r) => name == labels[r].ToString(CultureInfo.InvariantCulture)).Count();
        Assert.Equal(accuracy, (double)correct / rows.Length, 12); // the same rows, the same answers as eval's
    }

    [Fact]
    public void Predict_proba_prints_a_table_and_json_lines_agree_with_it()
    {
        var (rows, _) = RawTestRows(seed: 1);
        string input = WriteRows("five.csv", rows[..5]);
        var classes = CliHarness.Run("predict", "--model", model.ModelPath, "--input", input);
        var table = CliHarness.Run("predict", "--model", model.ModelPath, "--input", input, "--proba");
        var json = CliHarness.Run("predict", "--model", model.ModelPath, "--input", input, "--json");
        var jsonProba = CliHarness.Run("predict", "--model", model.ModelPath, "--input", input, "--json", "--proba");
        foreach (var run in new[] { classes, table, json, jsonProba }) Assert.True(run.Exit == 0, run.Error);

        string[] names = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
        string[] lines = table.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(6, lines.Length);
        Assert.Equal("class\t" + string.Join('\t', names), lines[0]);
        for (int r = 0; r < 5; r++)
        {
            string[] cells = lines[r + 1].Split('\t');
            Assert.Equal(11, cells.Length);
            Assert.Equal(classes.OutLines[r], cells[0]);
            double[] p = cells[1..].Select(c => double.Parse(c, CultureInfo.InvariantCulture)).ToArray();
            Assert.Equal(1.0, p.Sum(), 4);
            Assert.Equal(cells[0], names[Array.IndexOf(p, p.Max())]);

            using var plain = JsonDocument.Parse(json.OutLines[r]);
            Assert.Equal(classes.OutLines[r], plain.RootElement.GetProperty("class").GetString());
            Assert.Single(plain.RootElement.EnumerateObject());

            using var withProba = JsonDocument.Parse(jsonProba.OutLines[r]);
            Assert.Equal(classes.OutLines[r], withProba.RootElement.GetProperty("class").GetString());
            var probabilities = withProba.RootElement.GetProperty("probabilities").EnumerateObject().ToArray();
            Assert.Equal(names, probabilities.Select(e => e.Name));
            for (int c = 0; c < 10; c++) Assert.Equal(p[c], probabilities[c].Value.GetDouble(), 6);
        }
        Assert.Equal(5, json.OutLines.Length);
        Assert.Equal(5, jsonProba.OutLines.Length);
    }

    [Fact]
    public void Eval_and_predict_refuse_a_damaged_model_naming_it()
    {
        var (rows, _) = RawTestRows(seed: 1);
        string input = WriteRows("rows.csv", rows[..3]);
        long length = new FileInfo(model.ModelPath).Length;
        foreach (int at in new[] { 20, (int)(length / 2), (int)length - 1 })
        {
            string damaged = DamagedCopy($"damaged-{at}.bnc", at);
            foreach (var run in new[]
                     {
                         CliHarness.Run("eval", "--model", damaged, "--dataset", "digits"),
                         CliHarness.Run("predict", "--model", damaged, "--input", input),
                     })
            {
                Assert.Equal(Cli.ExitUsage, run.Exit);
                Assert.Equal("", run.Out);
                string line = Assert.Single(run.ErrorLines);
                Assert.StartsWith($"bncluster: {damaged}: checksum ", line);
            }
        }
    }

    [Fact]
    public void Predict_refuses_rows_of_another_width()
    {
        string input = WriteRows("narrow.csv", ["1,2,3", "4,5,6"]);
        var run = CliHarness.Run("predict", "--model", model.ModelPath, "--input", input);
        Assert.Equal(Cli.ExitUsage, run.Exit);
        Assert.Equal("", run.Out);
        Assert.Equal($"bncluster: {input}: line 1: has 3 columns, expected 64 features", Assert.Single(run.ErrorLines));
    }

    [Fact]
    public void Eval_on_another_dataset_file_of_the_same_shape_warns_once_and_runs()
    {
        // The digits' own rows, ÷16 and labelled, as a CSV: same shape, another file.
        var digits = DatasetCatalog.Load("digits", 1);
        var csv = new StringBuilder();
        for (int r = 0; r < 200; r++)
            csv.Append(string.Join(',', digits.Train.RowToArray(r).Select(v => v.ToString("R", CultureInfo.InvariantCulture))))
               .Append(',').Append(digits.Train.Labels[r]).Append('\n');
        for (int k = 0; k < 10; k++) csv.Append(string.Join(',', Enumerable.Repeat("0", 64))).Append(',').Append(k).Append('\n'); // every class
        string other = model.File("other.csv");
        System.IO.File.WriteAllText(other, csv.ToString());
        string otherSha = DatasetCatalog.Load(other, 1).Sha256;

        var run = CliHarness.Run("eval", "--model", model.ModelPath, "--dataset", other);

        Assert.True(run.Exit == 0, run.Error);
        Assert.StartsWith("test loss ", run.Out);
        string warning = Assert.Single(run.ErrorLines);
        Assert.StartsWith($"bncluster: warning: dataset {other} (sha256 {otherSha}) is not the one {model.ModelPath} was trained on (digits, sha256 {digits.Sha256})", warning);
    }

    /// <summary>4×4 and 2×8 images have 16 pixels each, but they are other pictures: eval refuses the model's data of another shape.</summary>
    [Fact]
    public void Eval_refuses_images_of_another_shape_with_the_same_pixel_count()
    {
        string square = model.File("idx-4x4"), wide = model.File("idx-2x8");
        IdxFiles.WriteSet(square);
        IdxFiles.WriteSet(wide, rows: 2, columns: 8);
        var train = CliHarness.Run("train", "--dataset", square, "--epochs", "1", "--hidden", "8", "--workers", "1", "--batch", "8", "--out", model.File("idx-run"));
        Assert.True(train.Exit == 0, train.Error);
        string modelPath = Path.Combine(model.File("idx-run"), "model.bnc");
        Assert.Equal(new List<object?> { 4L, 4L }, ModelFile.Read(modelPath).Training["input_shape"]);

        var refused = CliHarness.Run("eval", "--model", modelPath, "--dataset", wide);
        Assert.Equal(2, refused.Exit);
        Assert.Equal($"bncluster: {modelPath}: the model was trained on samples of 4×4 but dataset {wide} has 2×8", Assert.Single(refused.ErrorLines));
        var same = CliHarness.Run("eval", "--model", modelPath, "--dataset", square);
        Assert.True(same.Exit == 0, same.Error);
    }

    [Fact]
    public void The_model_records_the_loaders_preprocessing_and_the_dataset()
    {
        var doc = ModelFile.Read(model.ModelPath);
        Assert.Equal(new InputPreprocessing(16f), doc.Preprocessing);
        Assert.Equal(64, doc.Input.Features);
        Assert.Equal("digits", doc.Training["dataset"]);
        Assert.Equal(DatasetCatalog.Load("digits", 1).Sha256, doc.Training["dataset_sha256"]);
    }

    [Fact]
    public void The_cluster_and_a_csv_record_their_preprocessing_too()
    {
        // The in-process cluster (a coordinator and worker actors) writes the model through the coordinator's result.
        var cluster = CliHarness.Run("train", "--dataset", "digits", "--epochs", "1", "--max-steps", "2", "--hidden", "8", "--workers", "2", "--out", model.File("cluster"));
        Assert.True(cluster.Exit == 0, cluster.Error);
        Assert.Equal(new InputPreprocessing(16f), ModelFile.Read(Path.Combine(model.File("cluster"), "model.bnc")).Preprocessing);

        // A CSV file's values are used as they are: none, and predict leaves the rows alone.
        string csv = model.File("xor.csv");
        System.IO.File.WriteAllText(csv, "a,b,label\n" + string.Concat(Enumerable.Range(0, 40).Select(i => $"{i % 2 * 8},{i / 2 % 2 * 8},{(i % 2) ^ (i / 2 % 2)}\n")));
        var train = CliHarness.Run("train", "--dataset", csv, "--epochs", "1", "--max-steps", "2", "--hidden", "8", "--workers", "1", "--out", model.File("csv"));
        Assert.True(train.Exit == 0, train.Error);
        Assert.Null(ModelFile.Read(Path.Combine(model.File("csv"), "model.bnc")).Preprocessing);
    }
}
