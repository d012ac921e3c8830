using System.Text.Json;
using System.Xml.Linq;

namespace BnCluster.Node.Tests;

public sealed class StepsLogTests
{
    [Fact]
    public void Each_line_is_one_step_as_json_with_the_steps_own_numbers_and_null_for_non_finite_ones()
    {
        using var dir = new TempDir();
        using (var log = new StepsLog(dir.File(StepsLog.FileName), every: 1))
        {
            log.Append(1, 1, 2.302585092994046, 0.125, 5012.25, 0.5);
            log.Append(2, 1, double.NaN, double.PositiveInfinity, 0, 1e-7);
        }
        var lines = File.ReadAllLines(dir.File(StepsLog.FileName));
        Assert.Equal(2, lines.Length);
        var first = JsonDocument.Parse(lines[0]).RootElement;
        Assert.Equal(["step", "epoch", "loss", "accuracy", "samples_per_second", "seconds"], first.EnumerateObject().Select(p => p.Name));
        Assert.Equal(1, first.GetProperty("step").GetInt64());
        Assert.Equal(2.302585092994046, first.GetProperty("loss").GetDouble()); // round-trips
        Assert.Equal(5012.25, first.GetProperty("samples_per_second").GetDouble());
        var second = JsonDocument.Parse(lines[1]).RootElement;
        Assert.Equal(JsonValueKind.Null, second.GetProperty("loss").ValueKind);
        Assert.Equal(JsonValueKind.Null, second.GetProperty("accuracy").ValueKind);
        Assert.Equal(1e-7, second.GetProperty("seconds").GetDouble());
    }

    [Fact]
    public void Every_n_keeps_the_steps_that_are_multiples_of_n()
    {
        using var dir = new TempDir();
        using (var log = new StepsLog(dir.File(StepsLog.FileName), every: 5))
            for (long step = 1; step <= 23; step++) log.Append(step, 1, 1, 1, 1, 1);
        var steps = File.ReadAllLines(dir.File(StepsLog.FileName)).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64());
        Assert.Equal([5L, 10, 15, 20], steps);
    }

    [Fact]
    public void Steps_are_buffered_and_the_file_only_ever_holds_whole_lines()
    {
        using var dir = new TempDir();
        string path = dir.File(StepsLog.FileName);
        using var log = new StepsLog(path, every: 1);
        log.Append(1, 1, 0.5, 0.5, 100, 1);
        Assert.Equal(0, new FileInfo(path).Length); // nothing written per step…
        log.Flush();
        Assert.Single(File.ReadAllLines(path)); // …until a flush (an epoch's end)

        // More lines than the buffer holds: it is written out as it fills, and every write ends with a whole line.
        long step = 2, length = new FileInfo(path).Length;
        int writes = 0;
        while (writes < 3)
        {
            log.Append(step++, 1, 1.0 / 3, 2.0 / 3, 123456.789, step / 7.0);
            if (new FileInfo(path).Length == length) continue;
            length = new FileInfo(path).Length;
            writes++;
            Assert.True(ReadShared(path).EndsWith('\n'), $"the file ends with a torn line after step {step - 1}");
        }
        foreach (var line in ReadShared(path).Split('\n', StringSplitOptions.RemoveEmptyEntries)) JsonDocument.Parse(line);
    }

    [Fact]
    public void Appending_a_step_allocates_nothing()
    {
        using var dir = new TempDir();
        using var log = new StepsLog(dir.File(StepsLog.FileName), every: 1);
        for (int i = 1; i <= 100; i++) log.Append(i, 1, 0.1 * i, 0.5, 1000.5 * i, i / 3.0); // (first calls: JIT)
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 101; i <= 5100; i++) log.Append(i, 2, 0.1 * i, 0.5, 1000.5 * i, i / 3.0); // (several buffers written out)
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void The_chart_says_which_dataset_and_settings_it_shows()
    {
        var doc = XDocument.Parse(TrainingChart.Render([new EpochMetrics(1, 10, 1, 0.5, 1, 0.5, 100, 1)], subtitle: "digits · hidden 16 · batch 32 & more"));
        XNamespace svg = "http://www.w3.org/2000/svg";
        var subtitle = doc.Descendants(svg + "text").Single(t => (string?)t.Attribute("class") == "subtitle");
        Assert.Equal("digits · hidden 16 · batch 32 & more", subtitle.Value);
        Assert.DoesNotContain(XDocument.Parse(TrainingChart.Render([])).Descendants(svg + "text"), t => (string?)t.Attribute("class") == "subtitle");
    }

    private static string ReadShared(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}

public sealed class StepLossChartTests
{
    private static readonly XNamespace Svg = "http://www.w3.org/2000/svg";

    [Fact]
    public void The_loss_panel_draws_each_steps_loss_within_its_epoch_and_nothing_past_the_last_epoch()
    {
        EpochMetrics[] epochs = [new(1, 4, 1.0, 0.5, 1.1, 0.5, 100, 1), new(2, 8, 0.5, 0.7, 0.6, 0.7, 100, 2)];
        var steps = Enumerable.Range(1, 10).Select(s => new StepLoss(s, (s - 1) / 4 + 1, 2.0 / s)).ToList(); // steps 9, 10: epoch 3, unfinished
        var doc = XDocument.Parse(TrainingChart.Render(epochs, steps: steps));
        var line = doc.Descendants(Svg + "polyline").Single(p => (string?)p.Attribute("id") == "step-loss");
        var points = line.Attribute("points")!.Value.Split(' ').Select(p => double.Parse(p.Split(',')[0], System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(8, points.Length);
        Assert.True(points.Zip(points.Skip(1)).All(p => p.First < p.Second));
        // Step 4 ends epoch 1 and step 8 epoch 2: at the x of those epochs' markers.
        double Marker(int i) => double.Parse(doc.Descendants(Svg + "polyline").Single(p => (string?)p.Attribute("id") == "train-loss")
            .Attribute("points")!.Value.Split(' ')[i].Split(',')[0], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(Marker(0), points[3], 1);
        Assert.Equal(Marker(1), points[7], 1);
        Assert.DoesNotContain(doc.Descendants(Svg + "polyline"), p => (string?)p.Attribute("id") == "step-accuracy");
        Assert.DoesNotContain(XDocument.Parse(TrainingChart.Render(epochs)).Descendants(Svg + "polyline"), p => (string?)p.Attribute("class") == "steps");
    }

    [Fact]
    public void The_chart_sample_keeps_every_step_while_it_fits_then_thins_evenly()
    {
        using var dir = new TempDir();
        using var log = new StepsLog(dir.File(StepsLog.FileName), every: 1000);
        for (long s = 1; s <= StepsLog.SampleCapacity; s++) log.Append(s, 1, s, 0, 0, 0);
        Assert.Equal(Enumerable.Range(1, StepsLog.SampleCapacity).Select(s => (long)s), log.Sampled.Select(p => p.Step));
        for (long s = StepsLog.SampleCapacity + 1; s <= 5 * StepsLog.SampleCapacity; s++) log.Append(s, 1, s, 0, 0, 0);
        var sampled = log.Sampled.Select(p => p.Step).ToList();
        Assert.InRange(sampled.Count, StepsLog.SampleCapacity / 2, StepsLog.SampleCapacity);
        long stride = sampled[1] - sampled[0];
        Assert.Equal(8, stride); // full at 2048, 4096 and 8192 steps: every 2nd, 4th, then 8th
        Assert.True(sampled.Zip(sampled.Skip(1)).All(p => p.Second - p.First == stride));
        Assert.Equal(5 * StepsLog.SampleCapacity, sampled[^1]);
    }
}
