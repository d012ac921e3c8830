using BnCluster.Core.Export;
using BnCluster.Core.Model;
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
