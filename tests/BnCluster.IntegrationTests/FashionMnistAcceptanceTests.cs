using System.Text.Json;
using Xunit;
using Xunit.Abstractions;

namespace BnCluster.IntegrationTests;

/// <summary>
/// Issue 2's acceptance on real data: fashion-mnist (from ~/.bncluster/datasets or /usr/share/datasets),
/// 784-512-256-10, batch 256, adam 1e-3, 2 epochs, one worker with 2 threads. Both runs record their accuracy
/// in the test output. Measured with the SIMD kernels (seed 1, 2 threads, 2 shared cores): --bn before
/// 0.8701, --bn none 0.8645; each run takes 6–8 s here, also with other work on the machine, so CI can afford
/// the real data every time. (PyTorch 1.13 with the same network reaches 0.875.)
/// The issue asks ≥ 0.86 with BN; the no-BN bound is only that it trains comparably.
/// </summary>
public sealed class FashionMnistAcceptanceTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("before", 0.86)]
    [InlineData("none", 0.84)]
    public void Fashion_mnist_two_epochs_reach_the_issue_accuracy(string bn, double minimum)
    {
        using var tmp = new TempFolder();
        var run = CliHarness.Run("train", "--dataset", "fashion-mnist", "--hidden", "512,256", "--batch", "256", "--optimizer", "adam",
            "--lr", "1e-3", "--epochs", "2", "--workers", "1", "--threads", "2", "--bn", bn, "--out", tmp["run"]);
        Assert.True(run.Exit == 0, run.Error);

        var lines = File.ReadAllLines(Path.Combine(tmp["run"], "metrics.jsonl"));
        Assert.Equal(2, lines.Length);
        using var last = JsonDocument.Parse(lines[^1]);
        double accuracy = last.RootElement.GetProperty("test_accuracy").GetDouble();
        output.WriteLine($"fashion-mnist --bn {bn}: test accuracy {accuracy:F4} after 2 epochs ({last.RootElement.GetProperty("seconds").GetDouble():F0} s)");
        Assert.True(accuracy >= minimum, $"--bn {bn}: test accuracy {accuracy:F4} < {minimum}");
    }
}
