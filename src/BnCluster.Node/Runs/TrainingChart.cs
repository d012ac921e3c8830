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

    /// <param name="subtitle">A line under the title: which dataset and settings the chart shows (empty: none).</param>
    /// <param name="steps">Steps' own losses, in step order (empty: no per-step line); those past the last epoch are left out.</param>
    public static string Render(IReadOnlyList<EpochMetrics> epochs, string title = "bncluster training", string subtitle = "",
        IReadOnlyList<StepLoss>? steps = null)
    {
        var stepPoints = StepPoints(epochs, steps ?? []);
        return LineChart.Render(title,
        [
            Panel(epochs, "loss", m => m.TrainLoss, m => m.TestLoss, clampUnit: false, stepPoints),
            Panel(epochs, "accuracy", m => m.TrainAccuracy, m => m.TestAccuracy, clampUnit: true, []),
        ], Width, subtitle);
    }

    /// <summary>Each step at x = its epoch − 1 + its fraction of that epoch's steps (epoch e ends at x = e), for the epochs recorded.</summary>
    private static List<ChartPoint> StepPoints(IReadOnlyList<EpochMetrics> epochs, IReadOnlyList<StepLoss> steps)
    {
        var points = new List<ChartPoint>();
        var ends = epochs.ToDictionary(e => e.Epoch, e => e.Step);
        foreach (var s in steps)
        {
            if (!double.IsFinite(s.Loss) || !ends.TryGetValue(s.Epoch, out long end)) continue;
            long start = ends.TryGetValue(s.Epoch - 1, out long previous) ? previous : 0;
            if (end <= start || s.Step <= start || s.Step > end) continue;
            points.Add(new ChartPoint(s.Epoch - 1 + (double)(s.Step - start) / (end - start), s.Loss));
        }
        return points;
    }

    private static ChartPanel Panel(IReadOnlyList<EpochMetrics> epochs, string name,
        Func<EpochMetrics, double> train, Func<EpochMetrics, double> test, bool clampUnit, List<ChartPoint> steps)
    {
        var series = new List<ChartSeries>();
        if (steps.Count > 0) series.Add(new ChartSeries($"step-{name}", "step", steps, TrainColor, Thin: true));
        series.Add(new ChartSeries($"train-{name}", "train", epochs.Select(e => new ChartPoint(e.Epoch, train(e))).ToList(), TrainColor));
        series.Add(new ChartSeries($"test-{name}", "test", epochs.Select(e => new ChartPoint(e.Epoch, test(e))).ToList(), TestColor, Dashed: true));
        return new(name, $"{name} per epoch{(steps.Count > 0 ? " (thin line: per step)" : "")}", "epoch", name, series,
            IntegerX: true, ClampUnit: clampUnit);
    }

    /// <summary>Axis range and tick step on 1, 2, 5 × 10^k covering [lo, hi] with about maxTicks ticks.</summary>
    internal static (double Min, double Max, double Step) NiceRange(double lo, double hi, int maxTicks) => LineChart.NiceRange(lo, hi, maxTicks);
}
