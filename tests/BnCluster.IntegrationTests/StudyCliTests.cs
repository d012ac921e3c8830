using System.Xml.Linq;
using Xunit;
using BnCluster.Node.Study;

namespace BnCluster.IntegrationTests;

public sealed class StudyCliTests
{
    [Fact]
    public void Quick_study_on_digits_writes_every_section_chart_and_result()
    {
        using var folder = new TempFolder();
        string outDir = folder["study"];
        var run = CliHarness.Run("study", "--quick", "--dataset", "digits", "--out", outDir);
        Assert.True(run.Exit == 0, run.Error);

        // One verdict line per claim on stdout, computed (one of the three outcomes), then the summary.
        Assert.Equal(Experiments.All.Count + 1, run.OutLines.Length);
        foreach (var (experiment, line) in Experiments.All.Zip(run.OutLines))
            Assert.Matches($"^{experiment}: (reproduced|not reproduced|mixed): ", line);

        string report = File.ReadAllText(Path.Combine(outDir, StudyReport.ReportFileName));
        var headings = report.Split('\n').Where(l => l.StartsWith("## ", StringComparison.Ordinal)).ToList();
        Assert.Equal(["## 1. Learning-rate robustness", "## 2. Depth", "## 3. Covariate shift", "## 4. Regularization and batch size",
            "## 5. Before vs after the activation", "## 6. Running averages vs whole-training-set statistics"], headings);
        Assert.Equal(Experiments.All.Count, report.Split('\n').Count(l => l.StartsWith("**Verdict: ", StringComparison.Ordinal)));

        XNamespace svg = "http://www.w3.org/2000/svg";
        foreach (string experiment in Experiments.All)
        {
            string chart = StudyReport.ChartFileName(experiment);
            Assert.Contains($"]({chart})", report);
            var doc = XDocument.Parse(File.ReadAllText(Path.Combine(outDir, chart)));
            Assert.Contains(doc.Descendants(svg + "polyline"), p => (string?)p.Attribute("class") == "series");
        }

        var lines = File.ReadAllLines(Path.Combine(outDir, StudyReport.ResultsFileName));
        var results = lines.Select(StudyResult.FromJsonLine).ToList();
        Assert.Equal(StudySettings.Quick.Runs().Count, results.Count);
        Assert.Equal(Experiments.All, results.Select(r => r.Experiment).Distinct());
        Assert.All(results.Where(r => !r.Diverged), r => Assert.InRange(r.TestAccuracy, 0, 1));
        // The probes measured: drift series, batch noise, whole-set accuracies, learning curves.
        Assert.All(results.Where(r => r.Experiment == Experiments.CovariateShift), r => Assert.NotEmpty(r.Shift!));
        Assert.All(results.Where(r => r.Experiment == Experiments.BatchSize && r.Bn == "before"), r => Assert.True(r.NoiseMean > 0));
        Assert.All(results.Where(r => r.Experiment == Experiments.Momentum), r => Assert.InRange(r.WholeSetTestAccuracy!.Value, 0, 1));
        Assert.All(results.Where(r => r.Experiment == Experiments.Placement), r => Assert.NotEmpty(r.Curve!));
        // The report's verdicts are those of the raw results.
        foreach (var (_, verdict) in StudyVerdicts.All(results))
            Assert.Contains($"**Verdict: {verdict.Label}**: {verdict.Text}.", report);
        Assert.Empty(Directory.GetFiles(outDir, "*.tmp"));
    }

    [Fact]
    public void Study_refuses_a_missing_out_and_an_out_that_is_a_file_with_one_line()
    {
        using var folder = new TempFolder();
        var missing = CliHarness.Run("study", "--quick");
        Assert.Equal(2, missing.Exit);
        Assert.Equal(["bncluster: --out: required option is missing"], missing.ErrorLines);

        string file = folder["file"];
        File.WriteAllText(file, "x");
        var onFile = CliHarness.Run("study", "--quick", "--out", file);
        Assert.Equal(2, onFile.Exit);
        Assert.Single(onFile.ErrorLines);
        Assert.Contains("is a file, not a folder", onFile.Error);
    }
}
