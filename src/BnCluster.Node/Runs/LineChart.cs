using System.Globalization;
using System.Text;

namespace BnCluster.Node;

/// <summary>One point of a series; <see cref="Error"/> (when positive) draws a vertical bar ± Error.</summary>
public readonly record struct ChartPoint(double X, double Y, double Error = 0);

/// <summary>
/// A line with markers; <see cref="Id"/> is the polyline's id, <see cref="Label"/> its legend text. A <see cref="Thin"/>
/// series (many points, such as every step's loss) is a faint line without markers and without a legend entry.
/// </summary>
public sealed record ChartSeries(string Id, string Label, IReadOnlyList<ChartPoint> Points, string Color, bool Dashed = false,
    bool Thin = false);

/// <summary>
/// One panel: its title, axis labels and series. <see cref="LogX"/>: the x axis in decades (positive x only);
/// <see cref="IntegerX"/>: ticks on whole numbers (epochs, layer counts); <see cref="ClampUnit"/>: the y axis stays
/// inside [0, 1] when the values do (accuracies); <see cref="XTicks"/>: ticks at these x values instead (batch sizes).
/// </summary>
public sealed record ChartPanel(string Name, string Title, string XLabel, string YLabel, IReadOnlyList<ChartSeries> Series,
    bool LogX = false, bool IntegerX = false, bool ClampUnit = false, IReadOnlyList<double>? XTicks = null);

/// <summary>
/// A hand-written standalone SVG of one or more line-chart panels side by side, with axes, ticks, labels, a legend
/// (one entry per distinct series label) and a title. Non-finite values are left out of a series (the line joins the
/// points that exist); every point gets a marker, so a one-point series still shows. training.svg and the study's
/// plots are drawn by it.
/// </summary>
public static class LineChart
{
    public const int Height = 420;
    private const double PlotTop = 84, PlotBottom = 350, PanelLeftMargin = 75, PanelRightMargin = 30, PanelGap = 75;

    /// <summary>A qualitative palette (matplotlib's tab10) for series that need distinct colours.</summary>
    public static readonly IReadOnlyList<string> Palette =
        ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

    /// <param name="subtitle">A line under the title (which data and settings the chart shows); empty: none.</param>
    public static string Render(string title, IReadOnlyList<ChartPanel> panels, int width = 900, string subtitle = "")
    {
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture,
            $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{Height}\" viewBox=\"0 0 {width} {Height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{Height}\" fill=\"white\"/>\n");
        svg.Append(CultureInfo.InvariantCulture,
            $"<text x=\"{width / 2}\" y=\"26\" text-anchor=\"middle\" font-size=\"17\" font-weight=\"bold\">{Escape(title)}</text>\n");
        if (subtitle.Length > 0)
            svg.Append(CultureInfo.InvariantCulture,
                $"<text class=\"subtitle\" x=\"{width / 2}\" y=\"44\" text-anchor=\"middle\" fill=\"#444\">{Escape(subtitle)}</text>\n");
        Legend(svg, panels, width, besideTitle: subtitle.Length > 0);
        int count = Math.Max(1, panels.Count);
        double panelWidth = (width - PanelLeftMargin - PanelRightMargin - (count - 1) * PanelGap) / count;
        for (int i = 0; i < panels.Count; i++)
        {
            double left = PanelLeftMargin + i * (panelWidth + PanelGap);
            Panel(svg, panels[i], left, left + panelWidth);
        }
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    // One entry per distinct label, centred under the title; with a subtitle there, at the right end of the title's line.
    private static void Legend(StringBuilder svg, IReadOnlyList<ChartPanel> panels, int width, bool besideTitle)
    {
        var entries = panels.SelectMany(p => p.Series).Where(s => !s.Thin).GroupBy(s => s.Label).Select(g => g.First()).ToList();
        if (entries.Count == 0) return;
        var widths = entries.Select(e => 44 + 7.0 * e.Label.Length + 20).ToList();
        double x = besideTitle ? Math.Max(5, width - widths.Sum()) : Math.Max(5, (width - widths.Sum()) / 2);
        double y = besideTitle ? 21 : 46;
        svg.Append("<g class=\"legend\">\n");
        for (int i = 0; i < entries.Count; i++)
        {
            var e = entries[i];
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{F(x)}\" y1=\"{y}\" x2=\"{F(x + 30)}\" y2=\"{y}\" stroke=\"{e.Color}\" stroke-width=\"2.5\"{Dash(e.Dashed)}/>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(x + 36)}\" y=\"{y + 4}\">{Escape(e.Label)}</text>\n");
            x += widths[i];
        }
        svg.Append("</g>\n");
    }

    private static void Panel(StringBuilder svg, ChartPanel panel, double left, double right)
    {
        var finite = panel.Series.SelectMany(s => s.Points)
            .Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y) && (!panel.LogX || p.X > 0)).ToList();
        double Tx(double x) => panel.LogX ? Math.Log10(x) : x;

        // X range, with room at both ends so the first and last markers do not sit on the axes.
        double xMin = finite.Count > 0 ? finite.Min(p => Tx(p.X)) : 1, xMax = finite.Count > 0 ? finite.Max(p => Tx(p.X)) : 1;
        int firstInt = (int)Math.Ceiling(xMin), lastInt = (int)Math.Floor(xMax);
        if (xMax - xMin < 1) { xMin -= 0.5; xMax += 0.5; }
        double xPad = 0.02 * (xMax - xMin);
        xMin -= xPad;
        xMax += xPad;

        // Y: nice ticks around the finite values and their error bars.
        double lo = finite.Count > 0 ? finite.Min(p => p.Y - Math.Max(0, p.Error)) : 0;
        double hi = finite.Count > 0 ? finite.Max(p => p.Y + Math.Max(0, p.Error)) : 1;
        if (hi - lo < 1e-12) { double pad = Math.Max(Math.Abs(lo) * 0.05, 0.05); lo -= pad; hi += pad; }
        var (yMin, yMax, yStep) = NiceRange(lo, hi, 6);
        // A unit axis stays inside [0, 1] — unless a (buggy) value lies outside, which must still be drawn.
        if (panel.ClampUnit && lo >= 0) yMin = Math.Max(yMin, 0);
        if (panel.ClampUnit && hi <= 1) yMax = Math.Min(yMax, 1);

        double X(double x) => left + (Tx(x) - xMin) / (xMax - xMin) * (right - left);
        double Y(double v) => PlotBottom - (v - yMin) / (yMax - yMin) * (PlotBottom - PlotTop);

        svg.Append(CultureInfo.InvariantCulture, $"<g class=\"panel\" id=\"{Escape(panel.Name)}\">\n");
        svg.Append(CultureInfo.InvariantCulture,
            $"<text x=\"{F((left + right) / 2)}\" y=\"{F(PlotTop - 8)}\" text-anchor=\"middle\" font-size=\"14\">{Escape(panel.Title)}</text>\n");

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

        // X ticks: decades on a log axis; whole numbers (every one when few) on an integer axis; else nice steps.
        foreach (var (at, label) in XTicks(panel, firstInt, lastInt, xMin + xPad, xMax - xPad))
        {
            double x = left + (at - xMin) / (xMax - xMin) * (right - left);
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{F(x)}\" y1=\"{F(PlotBottom)}\" x2=\"{F(x)}\" y2=\"{F(PlotBottom + 5)}\" stroke=\"black\"/>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(x)}\" y=\"{F(PlotBottom + 19)}\" text-anchor=\"middle\">{Escape(label)}</text>\n");
        }

        // Axes and labels.
        svg.Append(CultureInfo.InvariantCulture,
            $"<polyline class=\"axes\" points=\"{F(left)},{F(PlotTop)} {F(left)},{F(PlotBottom)} {F(right)},{F(PlotBottom)}\" fill=\"none\" stroke=\"black\"/>\n");
        svg.Append(CultureInfo.InvariantCulture,
            $"<text x=\"{F((left + right) / 2)}\" y=\"{F(PlotBottom + 40)}\" text-anchor=\"middle\">{Escape(panel.XLabel)}</text>\n");
        double labelX = left - 52, labelY = (PlotTop + PlotBottom) / 2;
        svg.Append(CultureInfo.InvariantCulture,
            $"<text x=\"{F(labelX)}\" y=\"{F(labelY)}\" text-anchor=\"middle\" transform=\"rotate(-90 {F(labelX)} {F(labelY)})\">{Escape(panel.YLabel)}</text>\n");

        foreach (var series in panel.Series) Series(svg, series, panel.LogX, X, Y);
        svg.Append("</g>\n");
    }

    // Tick positions in axis units (log10 x on a log axis) and their labels.
    private static IEnumerable<(double At, string Label)> XTicks(ChartPanel panel, int firstInt, int lastInt, double lo, double hi)
    {
        if (panel.XTicks is { } given)
        {
            foreach (double v in given.Where(v => double.IsFinite(v) && (!panel.LogX || v > 0)))
                yield return (panel.LogX ? Math.Log10(v) : v, v.ToString("G4", CultureInfo.InvariantCulture));
            yield break;
        }
        if (panel.LogX || panel.IntegerX)
        {
            if (lastInt < firstInt) yield break;
            int step = Math.Max(1, (int)NiceRange(firstInt, lastInt, 10).Step);
            for (int v = firstInt; v <= lastInt; v += step)
                yield return (v, panel.LogX ? DecadeLabel(v) : v.ToString(CultureInfo.InvariantCulture));
            yield break;
        }
        var (min, max, s) = NiceRange(lo, hi, 8);
        int decimals = Math.Max(0, (int)-Math.Floor(Math.Log10(s) + 1e-9));
        for (double v = min; v <= max + s * 1e-6; v += s)
            if (v >= lo - s * 1e-6 && v <= hi + s * 1e-6)
                yield return (v, v.ToString("F" + decimals, CultureInfo.InvariantCulture));
    }

    private static string DecadeLabel(int exponent) => exponent switch
    {
        0 => "1",
        1 => "10",
        2 => "100",
        3 => "1000",
        _ => "1e" + exponent.ToString(CultureInfo.InvariantCulture),
    };

    private static void Series(StringBuilder svg, ChartSeries series, bool logX, Func<double, double> x, Func<double, double> y)
    {
        var points = series.Points.Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y) && (!logX || p.X > 0)).ToList();
        if (points.Count == 0) return;
        if (series.Thin)
        {
            svg.Append(CultureInfo.InvariantCulture,
                $"<polyline class=\"steps\" id=\"{Escape(series.Id)}\" points=\"{string.Join(' ', points.Select(p => F(x(p.X)) + "," + F(y(p.Y))))}\" fill=\"none\" stroke=\"{series.Color}\" stroke-opacity=\"0.35\" stroke-width=\"1\"/>\n");
            return;
        }
        svg.Append(CultureInfo.InvariantCulture,
            $"<polyline class=\"series\" id=\"{Escape(series.Id)}\" points=\"{string.Join(' ', points.Select(p => F(x(p.X)) + "," + F(y(p.Y))))}\" fill=\"none\" stroke=\"{series.Color}\" stroke-width=\"2.5\"{Dash(series.Dashed)}/>\n");
        foreach (var p in points)
        {
            svg.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{F(x(p.X))}\" cy=\"{F(y(p.Y))}\" r=\"3\" fill=\"{series.Color}\"/>\n");
            if (p.Error > 0 && double.IsFinite(p.Error))
                svg.Append(CultureInfo.InvariantCulture,
                    $"<line class=\"error-bar\" x1=\"{F(x(p.X))}\" y1=\"{F(y(p.Y - p.Error))}\" x2=\"{F(x(p.X))}\" y2=\"{F(y(p.Y + p.Error))}\" stroke=\"{series.Color}\" stroke-width=\"1.5\"/>\n");
        }
    }

    private static string Dash(bool dashed) => dashed ? " stroke-dasharray=\"6,4\"" : "";

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
