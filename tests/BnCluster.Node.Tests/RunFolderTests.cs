using System.Text.Json;
using System.Xml.Linq;

namespace BnCluster.Node.Tests;

public sealed class RunFolderTests
{
    private static EpochMetrics Epoch(int e) =>
        new(e, e * 100L, 1.0 / e, 1 - 0.4 / e, 1.1 / e, 1 - 0.5 / e, 12345.5, 2.25 * e);

    [Fact]
    public void Metrics_lines_have_exactly_the_contract_keys_in_order()
    {
        using var dir = new TempDir();
        var run = RunFolder.Create(dir.File("run"));
        run.AppendEpoch(Epoch(1));
        run.AppendEpoch(Epoch(2) with { TestLoss = double.NaN });

        var lines = File.ReadAllLines(run.MetricsPath);
        Assert.Equal(2, lines.Length);
        string[] keys = ["epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "samples_per_second", "seconds"];
        foreach (var line in lines)
        {
            using var doc = JsonDocument.Parse(line);
            Assert.Equal(keys, doc.RootElement.EnumerateObject().Select(p => p.Name).ToArray());
        }
        using var first = JsonDocument.Parse(lines[0]);
        Assert.Equal(1, first.RootElement.GetProperty("epoch").GetInt32());
        Assert.Equal(100, first.RootElement.GetProperty("step").GetInt64());
        Assert.Equal(0.6, first.RootElement.GetProperty("train_accuracy").GetDouble(), 12);
        Assert.Equal(0.5, first.RootElement.GetProperty("test_accuracy").GetDouble(), 12);
        Assert.Equal(12345.5, first.RootElement.GetProperty("samples_per_second").GetDouble());
        using var second = JsonDocument.Parse(lines[1]);
        Assert.Equal(JsonValueKind.Null, second.RootElement.GetProperty("test_loss").ValueKind); // NaN → null
        Assert.Equal(4.5, second.RootElement.GetProperty("seconds").GetDouble());
    }

    [Fact]
    public void Metrics_use_invariant_number_format()
    {
        var line = RunFolder.FormatMetricsLine(new EpochMetrics(3, 7, 0.25, 0.5, 1.5, 0.75, 1000, 0.125));
        Assert.Equal("{\"epoch\":3,\"step\":7,\"train_loss\":0.25,\"train_accuracy\":0.5,\"test_loss\":1.5,\"test_accuracy\":0.75,\"samples_per_second\":1000,\"seconds\":0.125}", line);
    }

    [Fact]
    public void Atomic_write_leaves_only_the_target()
    {
        using var dir = new TempDir();
        var run = RunFolder.Create(dir.File("nested/run"));
        run.WriteTextAtomic("a.txt", "first");
        run.WriteTextAtomic("a.txt", "second");
        run.WriteBytesAtomic(RunFolder.ModelFileName, new byte[] { 1, 2, 3 });
        run.AppendEpoch(Epoch(1));
        Assert.Equal("second", File.ReadAllText(Path.Combine(run.Path, "a.txt")));
        Assert.Equal(new byte[] { 1, 2, 3 }, File.ReadAllBytes(run.ModelPath));
        Assert.Equal(new[] { "a.txt", "metrics.jsonl", "model.bnc", "training.svg" },
            Directory.GetFiles(run.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray());
    }

    [Fact]
    public void Failed_write_keeps_the_old_file_and_removes_the_temporary()
    {
        using var dir = new TempDir();
        var run = RunFolder.Create(dir.Path);
        run.WriteTextAtomic("model.bnc", "good");
        var ex = Assert.Throws<InvalidOperationException>(() => run.WriteAtomic("model.bnc", stream =>
        {
            stream.Write(new byte[] { 9, 9 });
            throw new InvalidOperationException("writer failed half way");
        }));
        Assert.Equal("writer failed half way", ex.Message);
        Assert.Equal("good", File.ReadAllText(dir.File("model.bnc")));
        Assert.Equal(new[] { "model.bnc" }, Directory.GetFiles(dir.Path).Select(Path.GetFileName).ToArray());
    }

    [Fact]
    public void File_names_must_be_plain()
    {
        using var dir = new TempDir();
        var run = RunFolder.Create(dir.Path);
        Assert.Throws<ArgumentException>(() => run.WriteTextAtomic("../escape.txt", "x"));
        Assert.Throws<ArgumentException>(() => run.WriteTextAtomic("", "x"));
    }

    [Fact]
    public void Run_folder_over_a_file_is_refused()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("f"), "");
        var ex = Assert.Throws<IOException>(() => RunFolder.Create(dir.File("f")));
        Assert.Contains("is a file", ex.Message);
    }

    private static readonly XNamespace Svg = "http://www.w3.org/2000/svg";

    private static XElement Series(XDocument doc, string id) =>
        doc.Descendants(Svg + "polyline").Single(p => (string?)p.Attribute("id") == id);

    private static (double X, double Y)[] Points(XElement polyline) =>
        polyline.Attribute("points")!.Value.Split(' ')
            .Select(p => p.Split(','))
            .Select(xy => (double.Parse(xy[0], System.Globalization.CultureInfo.InvariantCulture), double.Parse(xy[1], System.Globalization.CultureInfo.InvariantCulture)))
            .ToArray();

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(37)]
    public void Chart_is_well_formed_svg_with_one_point_per_epoch(int epochs)
    {
        var metrics = Enumerable.Range(1, epochs).Select(Epoch).ToList();
        var doc = XDocument.Parse(TrainingChart.Render(metrics));
        Assert.Equal(Svg + "svg", doc.Root!.Name);
        foreach (var id in new[] { "train-loss", "test-loss", "train-accuracy", "test-accuracy" })
        {
            var points = Points(Series(doc, id));
            Assert.Equal(epochs, points.Length);
            Assert.All(points, p => Assert.True(double.IsFinite(p.X) && double.IsFinite(p.Y)));
            Assert.All(points, p => Assert.InRange(p.X, 0, TrainingChart.Width));
            Assert.All(points, p => Assert.InRange(p.Y, 0, TrainingChart.Height));
            // epochs go left to right
            Assert.True(points.Zip(points.Skip(1)).All(pair => pair.First.X < pair.Second.X));
        }
        // loss falls with these metrics, so its polyline goes down the page (SVG y grows downwards)
        var loss = Points(Series(doc, "train-loss"));
        if (epochs > 1) Assert.True(loss[^1].Y > loss[0].Y);
        var texts = doc.Descendants(Svg + "text").Select(t => t.Value).ToList();
        Assert.Contains("bncluster training", texts);
        Assert.Contains("train", texts);
        Assert.Contains("test", texts);
        Assert.Equal(2, texts.Count(t => t == "epoch"));
    }

    [Fact]
    public void Chart_skips_non_finite_values_and_survives_all_nan()
    {
        var metrics = Enumerable.Range(1, 4).Select(Epoch).ToList();
        metrics[2] = metrics[2] with { TestLoss = double.NaN, TestAccuracy = double.PositiveInfinity };
        var doc = XDocument.Parse(TrainingChart.Render(metrics));
        Assert.Equal(4, Points(Series(doc, "train-loss")).Length);
        Assert.Equal(3, Points(Series(doc, "test-loss")).Length);
        Assert.Equal(3, Points(Series(doc, "test-accuracy")).Length);

        var allNan = new[] { new EpochMetrics(1, 10, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN) };
        var empty = XDocument.Parse(TrainingChart.Render(allNan));
        Assert.DoesNotContain(empty.Descendants(Svg + "polyline"), p => (string?)p.Attribute("class") == "series");
        Assert.NotEmpty(XDocument.Parse(TrainingChart.Render([])).Descendants(Svg + "text"));
    }

    [Fact]
    public void Chart_keeps_out_of_range_values_inside_the_picture()
    {
        var metrics = new[] { Epoch(1), Epoch(2) with { TrainAccuracy = 1.5, TestAccuracy = -0.25 } };
        var doc = XDocument.Parse(TrainingChart.Render(metrics));
        foreach (var id in new[] { "train-accuracy", "test-accuracy" })
            Assert.All(Points(Series(doc, id)), p => Assert.InRange(p.Y, 60, 360));
    }

    [Fact]
    public void Nice_range_covers_the_data_with_round_steps()
    {
        var (min, max, step) = TrainingChart.NiceRange(0.23, 2.71, 6);
        Assert.Equal(0.5, step);
        Assert.Equal(0, min);
        Assert.Equal(3, max);
    }
}

public sealed class RunSessionTests
{
    [Fact]
    public void Record_epoch_writes_metrics_chart_and_log_and_the_plain_progress_leaves_the_epoch_line_to_the_log()
    {
        using var dir = new TempDir();
        var folder = RunFolder.Create(dir.File("run"));
        var console = new StringWriter();
        var progressOut = new StringWriter();
        using (var session = new RunSession(folder, Logging.RunLogging.Create(folder.LogPath, "coordinator", console),
                   new TrainingProgress(progressOut, interactive: false, epochs: 2)))
        {
            session.RecordEpoch(new EpochMetrics(1, 10, 0.5, 0.8, 0.6, 0.75, 1000, 1));
            session.SaveModel(s => s.WriteByte(42));
        }
        Assert.Single(File.ReadAllLines(folder.MetricsPath));
        Assert.Equal(new byte[] { 42 }, File.ReadAllBytes(folder.ModelPath));
        Assert.True(File.Exists(folder.ChartPath));
        var log = Logging.LogSummary.Read(folder.LogPath);
        Assert.Equal(1, log.Events);
        // log.jsonl is CLEF: the epoch event's properties at the top level, no @l for Information.
        using (var epoch = JsonDocument.Parse(Assert.Single(File.ReadAllLines(folder.LogPath))))
        {
            Assert.Equal(Logging.LogEvents.Phases.EpochEnd, epoch.RootElement.GetProperty("Phase").GetString());
            Assert.Equal("coordinator", epoch.RootElement.GetProperty("Node").GetString());
            Assert.Equal(1, epoch.RootElement.GetProperty("Epoch").GetInt32());
            Assert.False(epoch.RootElement.TryGetProperty("@l", out _));
        }
        Assert.Contains("Epoch 1 done at step 10", console.ToString());
        Assert.Equal("", progressOut.ToString()); // redirected, the log's line is the epoch's only line

    }

    [Fact]
    public void Train_options_map_to_network_spec()
    {
        var o = new Commands.TrainOptions { Dataset = "digits", HiddenSizes = [32, 16], OutDirectory = "x",
            Activation = Core.Model.Activation.Tanh, BatchNorm = Core.Model.BatchNormPlacement.None, BnEpsilon = 1e-3, BnMomentum = 0.25 };
        var spec = o.ToNetworkSpec(64, 10);
        Assert.Equal((64, 10), (spec.Inputs, spec.Classes));
        Assert.Equal(new[] { 32, 16 }, spec.Hidden);
        Assert.Equal((Core.Model.Activation.Tanh, Core.Model.BatchNormPlacement.None, 1e-3f, 0.25f),
            (spec.Activation, spec.BatchNorm, spec.BnEpsilon, spec.BnMomentum));
    }
}
