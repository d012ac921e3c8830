using System.Text.Json;
using System.Xml.Linq;
using Xunit;

namespace BnCluster.IntegrationTests;

/// <summary>`train` writes steps.jsonl (each step's own loss) next to metrics.jsonl, and training.svg names its dataset and settings.</summary>
public sealed class StepsFileTests
{
    [Theory]
    [InlineData(1)] // the single-node trainer
    [InlineData(2)] // the in-process cluster's coordinator
    public void Train_writes_one_line_per_step_whose_losses_average_to_the_epochs_train_loss(int workers)
    {
        using var temp = new TempFolder();
        // digits: 1437 training rows, 12 steps an epoch at batch 128 (the last one 29 rows).
        var run = CliHarness.Run("train", "--dataset", "digits", "--hidden", "16", "--batch", "128", "--epochs", "2", "--seed", "3",
            "--workers", workers.ToString(), "--threads", "1", "--out", temp["run"]);
        Assert.True(run.Exit == 0, run.Error);
        var steps = File.ReadAllLines(Path.Combine(temp["run"], "steps.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(Enumerable.Range(1, 24).Select(i => (long)i), steps.Select(s => s.GetProperty("step").GetInt64()));
        Assert.Equal(Enumerable.Repeat(1, 12).Concat(Enumerable.Repeat(2, 12)), steps.Select(s => s.GetProperty("epoch").GetInt32()));
        Assert.All(steps, s => Assert.True(s.GetProperty("samples_per_second").GetDouble() > 0));
        Assert.True(steps.Zip(steps.Skip(1)).All(p => p.First.GetProperty("seconds").GetDouble() <= p.Second.GetProperty("seconds").GetDouble()));

        // Each line is its step's own batch: weighted by rows, epoch 1's lines give metrics.jsonl's train loss of epoch 1.
        var metrics = JsonDocument.Parse(File.ReadLines(Path.Combine(temp["run"], "metrics.jsonl")).First()).RootElement;
        double[] rows = [.. Enumerable.Repeat(128.0, 11), 1437 - 11 * 128];
        double mean = steps.Take(12).Select((s, i) => s.GetProperty("loss").GetDouble() * rows[i]).Sum() / 1437;
        Assert.Equal(metrics.GetProperty("train_loss").GetDouble(), mean, 1e-9);
        Assert.NotEqual(steps[0].GetProperty("loss").GetDouble(), steps[1].GetProperty("loss").GetDouble());

        XNamespace svg = "http://www.w3.org/2000/svg";
        var subtitle = XDocument.Load(Path.Combine(temp["run"], "training.svg")).Descendants(svg + "text").Single(t => (string?)t.Attribute("class") == "subtitle").Value;
        Assert.Equal($"digits (1437 train rows) · hidden 16 relu · bn before · batch 128 · adam lr 0.001 · {workers} worker(s) · seed 3", subtitle);
    }

    [Fact]
    public void Steps_every_n_writes_every_nth_step_and_0_writes_no_file()
    {
        using var temp = new TempFolder();
        var every = CliHarness.Run("train", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--workers", "1", "--steps-every", "5", "--out", temp["five"]);
        Assert.True(every.Exit == 0, every.Error);
        Assert.Equal([5L, 10], File.ReadAllLines(Path.Combine(temp["five"], "steps.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64()));
        var none = CliHarness.Run("train", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--workers", "1", "--steps-every", "0", "--out", temp["none"]);
        Assert.True(none.Exit == 0, none.Error);
        Assert.False(File.Exists(Path.Combine(temp["none"], "steps.jsonl")));
        var bad = CliHarness.Run("train", "--steps-every", "-1");
        Assert.Equal(2, bad.Exit);
        Assert.Equal("bncluster: --steps-every: -1 is less than 0", Assert.Single(bad.ErrorLines));
    }
}
