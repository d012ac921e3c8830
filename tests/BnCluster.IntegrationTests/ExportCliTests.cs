using System.Globalization;
using System.Text;
using System.Text.Json;
using BnCluster.Core.Data;
using BnCluster.Core.Export;
using BnCluster.Core.Model;
using Microsoft.ML.OnnxRuntime;
using Xunit;

namespace BnCluster.IntegrationTests;

/// <summary>
/// `bncluster export` through the real backends: the file next to the model (or at --out) holds the bytes of the
/// exporter (whose numbers Core's ModelExportTests check in ONNX Runtime, numpy and torch); bad input is one line, exit 2,
/// and leaves no file.
/// </summary>
public sealed class ExportCliTests : IClassFixture<ExportCliTests.TrainedRun>
{
    /// <summary>One short digits run shared by the tests of this class.</summary>
    public sealed class TrainedRun : IDisposable
    {
        public TrainedRun()
        {
            var train = CliHarness.Run("train", "--dataset", "digits", "--epochs", "1", "--workers", "1", "--hidden", "16", "--out", Folder["run"]);
            Assert.True(train.Exit == 0, train.Error);
        }

        public TempFolder Folder { get; } = new();
        public string Model => Path.Combine(Folder["run"], "model.bnc");
        public void Dispose() => Folder.Dispose();
    }

    private readonly TrainedRun _run;

    public ExportCliTests(TrainedRun run) => _run = run;

    [Theory]
    [InlineData("onnx", ExportFormat.Onnx, "model.onnx")]
    [InlineData("safetensors", ExportFormat.Safetensors, "model.safetensors")]
    public void Export_writes_the_format_next_to_the_model(string flag, ExportFormat format, string fileName)
    {
        var export = CliHarness.Run("export", "--model", _run.Model, "--format", flag);
        Assert.True(export.Exit == 0, export.Error);
        string written = Path.Combine(Path.GetDirectoryName(_run.Model)!, fileName);
        Assert.Equal(ModelExport.Serialize(ModelFile.Read(_run.Model), format), File.ReadAllBytes(written));
        Assert.Contains(written, export.Out);
        Assert.DoesNotContain(Directory.EnumerateFiles(Path.GetDirectoryName(_run.Model)!), f => f.EndsWith(".tmp", StringComparison.Ordinal));
    }

    /// <summary>The exported ONNX graph on raw digits rows (0..16) against `predict --proba --json` on the same CSV.</summary>
    [Fact]
    public void Onnx_in_onnx_runtime_agrees_with_predict_proba_on_raw_rows()
    {
        using var tmp = new TempFolder();
        var test = DatasetCatalog.Load("digits", 1).Test;
        const int Rows = 40;
        int f = test.FeatureCount;
        var raw = new float[Rows * f];
        var csv = new StringBuilder();
        for (int r = 0; r < Rows; r++)
        {
            var row = test.RowToArray(r).Select(v => v * 16f).ToArray(); // the file's own counts: the loader divided them by 16
            row.CopyTo(raw, r * f);
            csv.AppendLine(string.Join(',', row.Select(v => v.ToString("R", CultureInfo.InvariantCulture))));
        }
        File.WriteAllText(tmp["rows.csv"], csv.ToString());
        var predict = CliHarness.Run("predict", "--model", _run.Model, "--input", tmp["rows.csv"], "--proba", "--json");
        Assert.True(predict.Exit == 0, predict.Error);
        var export = CliHarness.Run("export", "--model", _run.Model, "--format", "onnx", "--out", tmp["model.onnx"]);
        Assert.True(export.Exit == 0, export.Error);

        using var session = new InferenceSession(tmp["model.onnx"]);
        using var input = OrtValue.CreateTensorValueFromMemory(raw, [Rows, f]);
        using var runOptions = new RunOptions();
        using var outputs = session.Run(runOptions, [OnnxExport.InputName], [input], [OnnxExport.ProbabilitiesName, OnnxExport.LabelName]);
        var probabilities = outputs[0].GetTensorDataAsSpan<float>().ToArray();
        var labels = outputs[1].GetTensorDataAsSpan<long>().ToArray();
        var document = ModelFile.Read(_run.Model);
        Assert.Equal(16f, document.Preprocessing?.Divisor); // so the graph's Div is what makes the rows right
        var classes = document.Classes;
        int k = classes.Count;

        Assert.Equal(Rows, predict.OutLines.Length);
        for (int r = 0; r < Rows; r++)
        {
            var line = JsonDocument.Parse(predict.OutLines[r]).RootElement;
            Assert.Equal(line.GetProperty("class").GetString(), classes[(int)labels[r]]);
            var expected = line.GetProperty("probabilities").EnumerateObject().Select(p => p.Value.GetDouble()).ToArray();
            Assert.Equal(k, expected.Length);
            for (int c = 0; c < k; c++)
                Assert.True(Math.Abs(expected[c] - probabilities[r * k + c]) <= 1e-5, $"row {r}, class {c}: predict {expected[c]}, ONNX {probabilities[r * k + c]}");
        }
    }

    [Fact]
    public void Export_to_out_replaces_an_existing_file()
    {
        using var tmp = new TempFolder();
        string target = tmp["exported.bin"];
        File.WriteAllText(target, "old content");
        var export = CliHarness.Run("export", "--model", _run.Model, "--format", "safetensors", "--out", target);
        Assert.True(export.Exit == 0, export.Error);
        Assert.Equal(ModelExport.Serialize(ModelFile.Read(_run.Model), ExportFormat.Safetensors), File.ReadAllBytes(target));
        Assert.Equal([target], Directory.EnumerateFileSystemEntries(tmp.Path));
    }

    [Theory]
    [InlineData("--format: required option is missing", "--model", "{model}")]
    [InlineData("--format: \"xml\" is not one of onnx, safetensors", "--model", "{model}", "--format", "xml")]
    [InlineData("--model: file \"{tmp}/nope.bnc\" does not exist", "--model", "{tmp}/nope.bnc", "--format", "onnx")]
    [InlineData("--out: \"{tmp}\" is a folder, not a file", "--model", "{model}", "--format", "onnx", "--out", "{tmp}")]
    [InlineData("--out: folder \"{tmp}/missing\" does not exist", "--model", "{model}", "--format", "onnx", "--out", "{tmp}/missing/m.onnx")]
    [InlineData("--out: \"{model}\" is the model file itself", "--model", "{model}", "--format", "onnx", "--out", "{model}")]
    [InlineData("--out: empty path", "--model", "{model}", "--format", "onnx", "--out", "")]
    [InlineData("{tmp}/notes.txt: offset 0: expected map", "--model", "{tmp}/notes.txt", "--format", "safetensors")]
    public void Bad_input_is_one_line_with_exit_2_and_writes_nothing(string expected, params string[] args)
    {
        using var tmp = new TempFolder();
        File.WriteAllText(tmp["notes.txt"], "not a model");
        string Fill(string s) => s.Replace("{model}", _run.Model).Replace("{tmp}", tmp.Path);
        var modelFolderBefore = Directory.EnumerateFiles(Path.GetDirectoryName(_run.Model)!).Order().ToList();

        var r = CliHarness.Run(["export", .. args.Select(Fill)]);

        Assert.Equal(2, r.Exit);
        Assert.Equal("", r.Out);
        Assert.StartsWith("bncluster: " + Fill(expected), Assert.Single(r.ErrorLines));
        Assert.Equal([tmp["notes.txt"]], Directory.EnumerateFileSystemEntries(tmp.Path));
        Assert.Equal(modelFolderBefore, Directory.EnumerateFiles(Path.GetDirectoryName(_run.Model)!).Order());
    }
}
