using System.Globalization;
using System.Xml.Linq;

namespace BnCluster.Node.Tests;

public sealed class LineChartTests
{
    private static readonly XNamespace Svg = "http://www.w3.org/2000/svg";

    [Fact]
    public void Log_axis_panels_put_points_in_order_with_error_bars_ticks_and_one_legend_entry_per_label()
    {
        var points = new[] { new ChartPoint(1e-4, 0.2, 0.05), new ChartPoint(1e-2, 0.8), new ChartPoint(1, double.NaN), new ChartPoint(0, 0.5) };
        var panel = new ChartPanel("a", "panel a", "learning rate", "accuracy",
            [new ChartSeries("s1", "BN", points, LineChart.Palette[0]), new ChartSeries("s2", "BN", points, LineChart.Palette[0], Dashed: true)],
            LogX: true, ClampUnit: true);
        var batch = new ChartPanel("b", "panel b", "batch", "gap", [new ChartSeries("s3", "no BN", [new ChartPoint(32, 1), new ChartPoint(1024, 2)], "#000")],
            LogX: true, XTicks: [32, 1024]);
        var doc = XDocument.Parse(LineChart.Render("title", [panel, batch], width: 1000));

        Assert.Equal("1000", doc.Root!.Attribute("width")!.Value);
        var s1 = doc.Descendants(Svg + "polyline").Single(p => (string?)p.Attribute("id") == "s1");
        var xs = s1.Attribute("points")!.Value.Split(' ').Select(p => double.Parse(p.Split(',')[0], CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(2, xs.Count); // NaN and x = 0 (no logarithm) are left out
        Assert.True(xs[0] < xs[1]);
        Assert.Equal(2, doc.Descendants(Svg + "line").Count(l => (string?)l.Attribute("class") == "error-bar")); // one per series with an error
        var texts = doc.Descendants(Svg + "text").Select(t => t.Value).ToList();
        Assert.Contains("1e-4", texts);
        Assert.Contains("1e-2", texts);
        Assert.Contains("1024", texts);
        Assert.Single(texts, t => t == "BN");
        Assert.Single(texts, t => t == "no BN");
        Assert.Equal(2, doc.Descendants(Svg + "g").Count(g => (string?)g.Attribute("class") == "panel"));
    }
}
