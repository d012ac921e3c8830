using System.Globalization;
using System.Text;

namespace BnCluster.Node;

/// <summary>
/// training.svg: loss (left panel) and accuracy (right panel) per epoch, train solid blue, test dashed
/// orange, with axes, ticks, labels, a legend and a title. Hand-written standalone SVG. Non-finite
/// values are left out of a series (the line joins the points that exist); every point also gets a
/// marker, so a one-epoch run still shows its values. Given the steps' own losses (steps.jsonl's, sampled), the loss panel
/// also draws them as a thin line behind the epochs' (each step at its fraction of its epoch).
/// </summary>
public static class TrainingChart
{
    public const int Width = 900, Height = 420;
    private const double PlotTop = 70, PlotBottom = 350;
    private const string TrainColor = "#1f77b4", TestColor = "#ff7f0e";

    /// <param name="subtitle">A line under the title: which dataset and settings the chart shows (empty: none).</param>
    /// <param name="steps">Steps' own losses, in step order (empty: no per-step line); those past the last epoch are left out.</param>
    public static string Render(IReadOnlyList<EpochMetrics> epochs, string title = "bncluster training", string subtitle = "",
        IReadOnlyList<StepLoss>? steps = null)
    {
        var stepPoints = StepPoints(epochs, steps ?? []);
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture,
            $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" viewBox=\"0 0 {Width} {Height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        svg.Append($"<rect x=\"0\" y=\"0\" width=\"{Width}\" height=\"{Height}\" fill=\"white\"/>\n");
        svg.Append(CultureInfo.InvariantCulture,
            $"<text x=\"{Width / 2}\" y=\"26\" text-anchor=\"middle\" font-size=\"17\" font-weight=\"bold\">{Escape(title)}</text>\n");
        if (subtitle.Length > 0)
            svg.Append(CultureInfo.InvariantCulture,
                $"<text class=\"subtitle\" x=\"{Width / 2}\" y=\"44\" text-anchor=\"middle\" fill=\"#444\">{Escape(subtitle)}</text>\n");
        Legend(svg, Width - 200, subtitle.Length > 0 ? 20 : 48);
        Panel(svg, epochs, left: 75, right: 420, "loss", m => m.TrainLoss, m => m.TestLoss, clampUnit: false, stepPoints);
        Panel(svg, epochs, left: 525, right: 870, "accuracy", m => m.TrainAccuracy, m => m.TestAccuracy, clampUnit: true, []);
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    private static void Legend(StringBuilder svg, double x, double y)
    {
        svg.Append(CultureInfo.InvariantCulture, $"<g class=\"legend\">\n");
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{x}\" y1=\"{y}\" x2=\"{x + 30}\" y2=\"{y}\" stroke=\"{TrainColor}\" stroke-width=\"2.5\"/>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x + 36}\" y=\"{y + 4}\">train</text>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{x + 100}\" y1=\"{y}\" x2=\"{x + 130}\" y2=\"{y}\" stroke=\"{TestColor}\" stroke-width=\"2.5\" stroke-dasharray=\"6,4\"/>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x + 136}\" y=\"{y + 4}\">test</text>\n");
        svg.Append("</g>\n");
    }

    /// <summary>Each step at x = its epoch − 1 + its fraction of that epoch's steps (epoch e ends at x = e), for the epochs recorded.</summary>
    private static List<(double X, double Loss)> StepPoints(IReadOnlyList<EpochMetrics> epochs, IReadOnlyList<StepLoss> steps)
    {
        var points = new List<(double, double)>();
        var ends = epochs.ToDictionary(e => e.Epoch, e => e.Step);
        foreach (var s in steps)
        {
            if (!double.IsFinite(s.Loss) || !ends.TryGetValue(s.Epoch, out long end)) continue;
            long start = ends.TryGetValue(s.Epoch - 1, out long previous) ? previous : 0;
            if (end <= start || s.Step <= start || s.Step > end) continue;
            points.Add((s.Epoch - 1 + (double)(s.Step - start) / (end - start), s.Loss));
        }
        return points;
    }

    private static void Panel(StringBuilder svg, IReadOnlyList<EpochMetrics> epochs, double left, double right, string name,
        Func<EpochMetrics, double> train, Func<EpochMetrics, double> test, bool clampUnit, List<(double X, double Loss)> steps)
    {
        // X: epochs, with half an epoch of margin when there is only one; from the first epoch's start with steps drawn.
        double xMin = epochs.Count > 0 ? epochs.Min(e => e.Epoch) : 1, xMax = epochs.Count > 0 ? epochs.Max(e => e.Epoch) : 1;
        int firstEpoch = (int)xMin, lastEpoch = (int)xMax;
        if (steps.Count > 0) xMin = Math.Min(xMin, steps.Min(p => p.X));
        if (xMax - xMin < 1) { xMin -= 0.5; xMax += 0.5; }
        // A little room at both ends so the first and last markers do not sit on the axes.
        double xPad = 0.02 * (xMax - xMin);
        xMin -= xPad;
        xMax += xPad;

        // Y: nice ticks around the finite values.
        var values = epochs.SelectMany(e => new[] { train(e), test(e) }).Concat(steps.Select(p => p.Loss)).Where(double.IsFinite).ToList();
        double lo = values.Count > 0 ? values.Min() : 0, hi = values.Count > 0 ? values.Max() : 1;
        if (hi - lo < 1e-12) { double pad = Math.Max(Math.Abs(lo) * 0.05, 0.05); lo -= pad; hi += pad; }
        var (yMin, yMax, yStep) = NiceRange(lo, hi, 6);
        // Accuracy axis stays inside [0, 1] — unless a (buggy) value lies outside, which must still be drawn.
        if (clampUnit && lo >= 0) yMin = Math.Max(yMin, 0);
        if (clampUnit && hi <= 1) yMax = Math.Min(yMax, 1);

        double X(double epoch) => left + (epoch - xMin) / (xMax - xMin) * (right - left);
        double Y(double v) => PlotBottom - (v - yMin) / (yMax - yMin) * (PlotBottom - PlotTop);

        svg.Append(CultureInfo.InvariantCulture, $"<g class=\"panel\" id=\"{name}\">\n");
        svg.Append(CultureInfo.InvariantCulture,
            $"<text x=\"{F((left + right) / 2)}\" y=\"{F(PlotTop - 8)}\" text-anchor=\"middle\" font-size=\"14\">{name} per epoch{(steps.Count > 0 ? " (thin line: per step)" : "")}</text>\n");

        // Grid and Y ticks.
        int decimals = Math.Max(0, (int)-Math.Floor(Math.Log10(yStep) + 1e-9));
        for (int i = 0; ; i++)
        {
            double v = yMin + i * yStep;
            if (v > yMax + yStep * 1e-6) break;
            double y = Y(v);
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{F(left)}\" y1=\"{F(y)}\" x2=\"{F(right)}\" y2=\"{F(y)}\" stroke=\"#e5e5e5\"/>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{F(left - 5)}\" y1=\"{F(y)}\" x2=\"{F(left)}\" y2=\"{F(y)}\" stroke=\"black\"/>\n");
            svg.Append(CultureInfo.InvariantCulture,
                $"<text x=\"{F(left - 8)}\" y=\"{F(y + 4)}\" text-anchor=\"end\">{v.ToString("F" + decimals, CultureInfo.InvariantCulture)}</text>\n");
        }

        // X ticks: every epoch when few, else a nice integer step.
        int xStep = Math.Max(1, (int)NiceRange(firstEpoch, lastEpoch, 10).Step);
        for (int e = firstEpoch; e <= lastEpoch; e += xStep)
        {
            double x = X(e);
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{F(x)}\" y1=\"{F(PlotBottom)}\" x2=\"{F(x)}\" y2=\"{F(PlotBottom + 5)}\" stroke=\"black\"/>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(x)}\" y=\"{F(PlotBottom + 19)}\" text-anchor=\"middle\">{e}</text>\n");
        }

        // Axes and labels.
        svg.Append(CultureInfo.InvariantCulture,
            $"<polyline class=\"axes\" points=\"{F(left)},{F(PlotTop)} {F(left)},{F(PlotBottom)} {F(right)},{F(PlotBottom)}\" fill=\"none\" stroke=\"black\"/>\n");
        svg.Append(CultureInfo.InvariantCulture,
            $"<text x=\"{F((left + right) / 2)}\" y=\"{F(PlotBottom + 40)}\" text-anchor=\"middle\">epoch</text>\n");
        double labelX = left - 52, labelY = (PlotTop + PlotBottom) / 2;
        svg.Append(CultureInfo.InvariantCulture,
            $"<text x=\"{F(labelX)}\" y=\"{F(labelY)}\" text-anchor=\"middle\" transform=\"rotate(-90 {F(labelX)} {F(labelY)})\">{name}</text>\n");

        if (steps.Count > 0)
            svg.Append(CultureInfo.InvariantCulture,
                $"<polyline class=\"steps\" id=\"step-{name}\" points=\"{string.Join(' ', steps.Select(p => F(X(p.X)) + "," + F(Y(p.Loss))))}\" fill=\"none\" stroke=\"{TrainColor}\" stroke-opacity=\"0.35\" stroke-width=\"1\"/>\n");
        Series(svg, epochs, train, X, Y, $"train-{name}", TrainColor, dashed: false);
        Series(svg, epochs, test, X, Y, $"test-{name}", TestColor, dashed: true);
        svg.Append("</g>\n");
    }

    private static void Series(StringBuilder svg, IReadOnlyList<EpochMetrics> epochs, Func<EpochMetrics, double> value,
        Func<double, double> x, Func<double, double> y, string id, string color, bool dashed)
    {
        var points = epochs.Where(e => double.IsFinite(value(e))).Select(e => (X: x(e.Epoch), Y: y(value(e)))).ToList();
        if (points.Count == 0) return;
        string dash = dashed ? " stroke-dasharray=\"6,4\"" : "";
        svg.Append(CultureInfo.InvariantCulture,
            $"<polyline class=\"series\" id=\"{id}\" points=\"{string.Join(' ', points.Select(p => F(p.X) + "," + F(p.Y)))}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2.5\"{dash}/>\n");
        foreach (var p in points)
            svg.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{F(p.X)}\" cy=\"{F(p.Y)}\" r=\"3\" fill=\"{color}\"/>\n");
    }

    /// <summary>Axis range and tick step on 1, 2, 5 × 10^k covering [lo, hi] with about maxTicks ticks.</summary>
    internal static (double Min, double Max, double Step) NiceRange(double lo, double hi, int maxTicks)
    {
        double span = Math.Max(hi - lo, 1e-12);
        double raw = span / Math.Max(1, maxTicks - 1);
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double fraction = raw / magnitude;
        double step = (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * magnitude;
        return (Math.Floor(lo / step) * step, Math.Ceiling(hi / step) * step, step);
    }

    private static string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);

    private static string Escape(string s) => System.Security.SecurityElement.Escape(s) ?? "";
}
