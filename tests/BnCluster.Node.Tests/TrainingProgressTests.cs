namespace BnCluster.Node.Tests;

public sealed class TrainingProgressTests
{
    [Fact]
    public void Plain_mode_prints_one_line_per_epoch_and_occasional_batch_lines()
    {
        var output = new StringWriter();
        var now = TimeSpan.Zero;
        using (var progress = new TrainingProgress(output, interactive: false, epochs: 2, TimeSpan.FromSeconds(10), () => now))
        {
            for (int b = 1; b <= 5; b++)
            {
                now += TimeSpan.FromSeconds(3); // a batch line at 12 s (b = 4), none before
                progress.OnBatch(1, b, b, 5, 1.0 / b, 0.5, 2000);
            }
            progress.OnEpoch(new EpochMetrics(1, 5, 0.25, 0.9, double.NaN, 0.875, 1234.4, 15));
        }
        var lines = output.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(new[]
        {
            "epoch 1/2 step 4 (4/5): loss 0.2500 accuracy 50.00% 2000 samples/s",
            "epoch 1/2 step 5: train loss 0.2500 accuracy 90.00%, test loss n/a accuracy 87.50%, 1234 samples/s, 15.0 s",
        }, lines);
    }

    [Fact]
    public void Interactive_mode_renders_and_stops()
    {
        var output = new StringWriter();
        using (var progress = new TrainingProgress(output, interactive: true, epochs: 1))
        {
            Assert.True(progress.Interactive);
            progress.OnBatch(1, 1, 1, 2, 0.5, 0.75, 100);
            progress.OnBatch(1, 2, 2, 2, 0.4, 0.8, 110);
            progress.OnEpoch(new EpochMetrics(1, 2, 0.4, 0.8, 0.45, 0.78, 105, 0.1));
        }
        Assert.Contains("epoch 1/1  loss 0.4000 acc 80.00%  test 0.4500 acc 78.00%", output.ToString());
    }
}
