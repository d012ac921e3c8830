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
