namespace BnCluster.Node;

/// <summary>
/// training.svg: loss (left panel) and accuracy (right panel) per epoch, train solid blue, test dashed
/// orange, drawn by <see cref="LineChart"/>. Non-finite values are left out of a series; every point gets a
/// marker, so a one-epoch run still shows its values.
/// </summary>
public static class TrainingChart
{
    public const int Width = 900, Height = LineChart.Height;
    private const string TrainColor = "#1f77b4", TestColor = "#ff7f0e";

    public static string Render(IReadOnlyList<EpochMetrics> epochs, string title = "bncluster training") =>
        LineChart.Render(title,
        [
            Panel(epochs, "loss", m => m.TrainLoss, m => m.TestLoss, clampUnit: false),
            Panel(epochs, "accuracy", m => m.TrainAccuracy, m => m.TestAccuracy, clampUnit: true),
        ], Width);

    private static ChartPanel Panel(IReadOnlyList<EpochMetrics> epochs, string name,
        Func<EpochMetrics, double> train, Func<EpochMetrics, double> test, bool clampUnit) =>
        new(name, $"{name} per epoch", "epoch", name,
        [
            new ChartSeries($"train-{name}", "train", epochs.Select(e => new ChartPoint(e.Epoch, train(e))).ToList(), TrainColor),
            new ChartSeries($"test-{name}", "test", epochs.Select(e => new ChartPoint(e.Epoch, test(e))).ToList(), TestColor, Dashed: true),
        ], IntegerX: true, ClampUnit: clampUnit);

    /// <summary>Axis range and tick step on 1, 2, 5 × 10^k covering [lo, hi] with about maxTicks ticks.</summary>
    internal static (double Min, double Max, double Step) NiceRange(double lo, double hi, int maxTicks) => LineChart.NiceRange(lo, hi, maxTicks);
}
