using System.Globalization;
using System.Text;
using BnCluster.Core.Model;
using BnCluster.Node.Commands;
using static BnCluster.Node.Study.StudyVerdicts;

namespace BnCluster.Node.Study;

/// <summary>What the report says about how the study ran.</summary>
public sealed record StudyContext(string Dataset, int TrainRows, int TrainRowsAvailable, int TestRows, StudySettings Settings,
    int Parallel, double WallSeconds);

/// <summary>
/// report.md, one SVG per experiment (drawn by <see cref="LineChart"/>) and results.jsonl, from the results alone:
/// every table and verdict is computed by <see cref="StudyVerdicts"/>.
/// </summary>
public static class StudyReport
{
    public const string ReportFileName = "report.md", ResultsFileName = "results.jsonl";

    /// <summary>The SVG of each experiment, by <see cref="Experiments"/> name.</summary>
    public static string ChartFileName(string experiment) => experiment + ".svg";

    private static readonly Dictionary<string, string> BnColor = new()
    {
        ["before"] = LineChart.Palette[0], ["after"] = LineChart.Palette[2], ["none"] = LineChart.Palette[1],
    };

    private static string BnLabel(string bn) => bn switch { "before" => "BN before", "after" => "BN after", _ => "no BN" };

    /// <summary>Writes every file into <paramref name="folder"/>, each atomically (a temporary name, then moved over).</summary>
    public static void Write(string folder, StudyContext context, IReadOnlyList<StudyResult> results)
    {
        Directory.CreateDirectory(folder);
        var files = new List<(string Name, string Text)>
        {
            (ResultsFileName, string.Concat(results.Select(r => r.ToJsonLine() + "\n"))),
            (ChartFileName(Experiments.LearningRate), LearningRateChart(results)),
            (ChartFileName(Experiments.Depth), DepthChart(results)),
            (ChartFileName(Experiments.CovariateShift), ShiftChart(results)),
            (ChartFileName(Experiments.BatchSize), BatchChart(results)),
            (ChartFileName(Experiments.Placement), PlacementChart(results)),
            (ChartFileName(Experiments.Momentum), MomentumChart(results)),
            (ReportFileName, Markdown(context, results)),
        };
        foreach (var (name, text) in files)
            AtomicFile.Write(Path.Combine(folder, name), Encoding.UTF8.GetBytes(text));
    }

    /// <summary>Creates the report folder and checks that a file can be written in it (wrong → CliInputException, exit 2).</summary>
    public static void Prepare(string folder)
    {
        try
        {
            Directory.CreateDirectory(folder);
            AtomicFile.Write(Path.Combine(folder, ResultsFileName), []);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliInputException($"--out: cannot write to \"{folder}\": {e.Message}");
        }
    }

    // ---- Markdown ---------------------------------------------------------------------------------------------------

    public static string Markdown(StudyContext c, IReadOnlyList<StudyResult> results)
    {
        var s = c.Settings;
        var md = new StringBuilder();
        var verdicts = All(results).ToDictionary(v => v.Experiment, v => v.Verdict);
        md.AppendLine(CultureInfo.InvariantCulture, $"# Batch norm study: {c.Dataset}");
        md.AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture,
            $"`bncluster study --dataset {c.Dataset}{(s.IsQuick ? " --quick" : "")}`: {results.Count} training runs in {c.WallSeconds:F0} s, {c.Parallel} at a time with one thread each. " +
            $"Every run is the single-node trainer of `train --workers 1`, seeded; accuracies are measured in eval mode (running averages) on the parameters it returns, those `train` writes to model.bnc.");
        md.AppendLine();
        string subset = c.TrainRows < c.TrainRowsAvailable ? $"a seeded subset of {c.TrainRows} of the {c.TrainRowsAvailable} training rows (to fit the time budget)" : $"all {c.TrainRows} training rows";
        md.AppendLine(CultureInfo.InvariantCulture,
            $"Budget: {subset} ({BatchRows(c)} in section 4), the whole test split ({c.TestRows} rows); " +
            $"unless a section says otherwise: {s.HiddenLayers} hidden layers of {s.Width} ReLU units, batch {s.Batch}, {s.Steps} steps, Adam α = {StudySettings.DefaultLearningRate.ToString(CultureInfo.InvariantCulture)}, BN momentum {StudySettings.DefaultMomentum}.");
        md.AppendLine();
        md.AppendLine("| Claim | Verdict |");
        md.AppendLine("|---|---|");
        foreach (var (experiment, title) in Titles)
            md.AppendLine(CultureInfo.InvariantCulture, $"| [{title}](#{Anchor(title)}) | **{verdicts[experiment].Label}**: {verdicts[experiment].Text} |");
        md.AppendLine();

        Section(md, Experiments.LearningRate, verdicts,
            $"Claim: with batch norm the network is far more robust to the learning rate. Setup: {s.LearningRates.Count} learning rates from {s.LearningRates[0].ToString(CultureInfo.InvariantCulture)} to {s.LearningRates[^1].ToString(CultureInfo.InvariantCulture)}, " +
            $"plain gradient descent and Adam, BN before the activation, after it, and none; seeds {Seeds(s, 2)} (the table and plot show their mean). Measured: the contiguous range of rates whose test accuracy is within 1 point of the variant's best (a diverged run counts as 0).",
            LearningRateTables(results));
        Section(md, Experiments.Depth, verdicts,
            $"Claim: batch norm lets you train much deeper networks. Setup: {string.Join(", ", s.Depths)} hidden layers of {s.Width}, with BN before the activation and without, the same {s.Steps} steps each, " +
            $"Adam α = {StudySettings.DefaultLearningRate.ToString(CultureInfo.InvariantCulture)} and plain gradient descent α = {StudySettings.GdLearningRate.ToString(CultureInfo.InvariantCulture)}, He initialization, seeds {Seeds(s, s.Seeds.Count)}; mean ± standard error.",
            DepthTableMd(results));
        Section(md, Experiments.CovariateShift, verdicts,
            $"Claim: batch norm reduces covariate shift: the inputs a later layer sees move less while the earlier layers learn. Setup: {s.ShiftDepth} hidden layers; the probe reads the inputs of hidden layer {s.ShiftDepth} (the outputs of layer {s.ShiftDepth - 1}) in every mini-batch, " +
            $"averages their per-unit mean and variance over windows of {s.Steps / s.Checkpoints} steps, and compares each window with the first: mean drift = RMS of the change of the unit means in units of the first window's standard deviation; " +
            $"variance drift = mean |ln(σ²/σ²₀)| over units. Seeds {Seeds(s, s.Seeds.Count)}.",
            ShiftTableMd(results));
        Section(md, Experiments.BatchSize, verdicts,
            $"Claim: batch norm regularizes slightly, because each mini-batch is scaled by the noisy μ and σ² of just that batch, and the effect shrinks as the batch grows. Setup: batch sizes {string.Join(", ", s.BatchSizes)}, " +
            $"the same {s.Steps * s.Batch} samples each (steps = samples / batch), with BN before and without, seeds {string.Join(", ", s.BatchSeeds)}, " +
            $"on {BatchRows(c)} training rows (fewer than the other sections, so that the network overfits and a regularizer has something to do). Gap = train accuracy (eval mode, on the training subset) − test accuracy. " +
            "Noise: over the second half of training, the batch-to-batch standard deviation of hidden layer 1's mini-batch μ (its inputs are the data rows: a deeper layer's inputs come out of a BN layer, which takes most of the batch-to-batch variation of their means out) (in units of the unit's σ) and of σ² (relative to its mean), averaged over units; sampling noise alone predicts batch^−0.5.",
            BatchTableMd(results));
        Section(md, Experiments.Placement, verdicts,
            $"Claim: normalizing z before the activation is the usual choice; after the activation is possible. Setup: the default network with BN before, after, and none, seeds {Seeds(s, s.Seeds.Count)}; the plot is the test accuracy on {s.CurveTestRows} test rows during training.",
            PlacementTableMd(results));
        Section(md, Experiments.Momentum, verdicts,
            $"Claim: at test time the running averages (exponentially weighted over mini-batches) stand in for the mini-batch statistics. Setup: the default network with BN momentum m ∈ {{{string.Join(", ", s.Momenta.Select(m => m.ToString(CultureInfo.InvariantCulture)))}}} (r ← (1−m)·r + m·batch), seeds {Seeds(s, s.Seeds.Count)}; " +
            "after training, the test accuracy with the running averages and with every BN layer's mean and variance over the whole training subset (computed layer by layer in eval mode); distance = mean over units of |r_μ − μ_whole| / σ_whole.",
            MomentumTableMd(results));
        md.AppendLine("Raw results: `results.jsonl` (one line per run). Verdicts: reproduced when the effect minus two standard errors clears the claim's bar, not reproduced when the effect plus two standard errors stays below it, mixed otherwise or when the parts of a claim disagree.");
        return md.ToString();
    }

    private static readonly (string Experiment, string Title)[] Titles =
    [
        (Experiments.LearningRate, "1. Learning-rate robustness"),
        (Experiments.Depth, "2. Depth"),
        (Experiments.CovariateShift, "3. Covariate shift"),
        (Experiments.BatchSize, "4. Regularization and batch size"),
        (Experiments.Placement, "5. Before vs after the activation"),
        (Experiments.Momentum, "6. Running averages vs whole-training-set statistics"),
    ];

    private static string BatchRows(StudyContext c) => Math.Min(c.Settings.BatchTrainRows, c.TrainRows).ToString(CultureInfo.InvariantCulture);

    private static string Seeds(StudySettings s, int count) => string.Join(", ", s.Seeds.Take(count));

    private static string Anchor(string title) =>
        new string(title.ToLowerInvariant().Where(ch => char.IsLetterOrDigit(ch) || ch == ' ' || ch == '-').ToArray()).Replace(' ', '-');

    private static void Section(StringBuilder md, string experiment, Dictionary<string, Verdict> verdicts, string setup, string table)
    {
        string title = Titles.First(t => t.Experiment == experiment).Title;
        md.AppendLine(CultureInfo.InvariantCulture, $"## {title}");
        md.AppendLine();
        md.AppendLine(setup);
        md.AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"![{title}]({ChartFileName(experiment)})");
        md.AppendLine();
        md.Append(table);
        md.AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"**Verdict: {verdicts[experiment].Label}**: {verdicts[experiment].Text}.");
        md.AppendLine();
    }

    private static string M(Measure m) => m.Count == 0 ? "n/a" : Pct(m.Mean) + (m.StdErr > 0 ? " ± " + (100 * m.StdErr).ToString("F1", CultureInfo.InvariantCulture) : "");
    private static string G(Measure m) => m.Count == 0 ? "n/a" : F(m.Mean) + (m.StdErr > 0 ? " ± " + F(m.StdErr) : "");
    private static string Lr(double lr) => lr.ToString("G3", CultureInfo.InvariantCulture);

    private static string LearningRateTables(IReadOnlyList<StudyResult> results)
    {
        var md = new StringBuilder();
        var runs = results.Where(r => r.Experiment == Experiments.LearningRate).ToList();
        var rates = runs.Select(r => r.Lr).Distinct().Order().ToList();
        md.AppendLine("| Optimizer | Variant | " + string.Join(" | ", rates.Select(Lr)) + " | best | range within 1 point | width (decades) |");
        md.AppendLine("|---|---|" + string.Concat(rates.Select(_ => "---|")) + "---|---|---|");
        foreach (var range in LearningRateRanges(results))
        {
            var cells = rates.Select(lr =>
            {
                var at = runs.Where(r => r.Optimizer == range.Optimizer && r.Bn == range.Bn && r.Lr == lr).ToList();
                if (at.Count == 0) return "";
                return at.All(r => r.Diverged) ? "diverged" : Pct(at.Average(Accuracy));
            });
            md.AppendLine(CultureInfo.InvariantCulture,
                $"| {range.Optimizer} | {BnLabel(range.Bn)} | {string.Join(" | ", cells)} | {Pct(range.BestAccuracy)} at {Lr(range.BestLr)} | {Lr(range.Low)} … {Lr(range.High)} | {D(range.Decades)} |");
        }
        return md.ToString();
    }

    private static string DepthTableMd(IReadOnlyList<StudyResult> results)
    {
        var table = DepthTable(results);
        var depths = table.Select(x => x.Depth).Distinct().Order().ToList();
        var md = new StringBuilder();
        md.AppendLine("| Optimizer | Variant | " + string.Join(" | ", depths.Select(d => d + " layers")) + " |");
        md.AppendLine("|---|---|" + string.Concat(depths.Select(_ => "---|")));
        foreach (var (optimizer, bn) in table.Select(x => (x.Optimizer, x.Bn)).Distinct())
            md.AppendLine($"| {optimizer} | {BnLabel(bn)} | " + string.Join(" | ",
                depths.Select(d => M(table.FirstOrDefault(x => x.Optimizer == optimizer && x.Bn == bn && x.Depth == d).Accuracy))) + " |");
        return md.ToString();
    }

    private static string ShiftTableMd(IReadOnlyList<StudyResult> results)
    {
        var md = new StringBuilder();
        md.AppendLine("| Variant | mean drift at the end | variance drift at the end | test accuracy |");
        md.AppendLine("|---|---|---|---|");
        foreach (var (bn, mean, variance) in ShiftTable(results))
        {
            var acc = Measure.Of(results.Where(r => r.Experiment == Experiments.CovariateShift && r.Bn == bn).Select(Accuracy));
            md.AppendLine($"| {BnLabel(bn)} | {G(mean)} | {G(variance)} | {M(acc)} |");
        }
        return md.ToString();
    }

    private static string BatchTableMd(IReadOnlyList<StudyResult> results)
    {
        var md = new StringBuilder();
        md.AppendLine("| Batch | gap with BN | gap without BN | gap narrowed by BN | noise of μ | noise of σ² |");
        md.AppendLine("|---|---|---|---|---|---|");
        foreach (var (batch, gapBn, gapNone, noiseMean, noiseVar) in BatchTable(results))
            md.AppendLine(CultureInfo.InvariantCulture,
                $"| {batch} | {M(gapBn)} | {M(gapNone)} | {Pts(gapNone.Mean - gapBn.Mean, Math.Sqrt(gapNone.StdErr * gapNone.StdErr + gapBn.StdErr * gapBn.StdErr))} | {G(noiseMean)} | {G(noiseVar)} |");
        return md.ToString();
    }

    private static string PlacementTableMd(IReadOnlyList<StudyResult> results)
    {
        var md = new StringBuilder();
        md.AppendLine("| Variant | test accuracy | train accuracy |");
        md.AppendLine("|---|---|---|");
        foreach (var (bn, acc) in PlacementTable(results))
        {
            var train = Measure.Of(results.Where(r => r.Experiment == Experiments.Placement && r.Bn == bn && !r.Diverged).Select(r => r.TrainAccuracy));
            md.AppendLine($"| {BnLabel(bn)} | {M(acc)} | {M(train)} |");
        }
        return md.ToString();
    }

    private static string MomentumTableMd(IReadOnlyList<StudyResult> results)
    {
        var md = new StringBuilder();
        md.AppendLine("| Momentum | running averages | whole-set statistics | difference | distance of the means |");
        md.AppendLine("|---|---|---|---|---|");
        foreach (var (m, running, whole, diff, distance) in MomentumTable(results))
            md.AppendLine(CultureInfo.InvariantCulture, $"| {m} | {M(running)} | {M(whole)} | {Pts(diff.Mean, diff.StdErr)} | {G(distance)} |");
        return md.ToString();
    }

    // ---- Charts -----------------------------------------------------------------------------------------------------

    private static ChartSeries Series(string id, string bn, IEnumerable<ChartPoint> points, bool dashed = false, string? label = null) =>
        new(id, label ?? BnLabel(bn), points.ToList(), BnColor.GetValueOrDefault(bn, LineChart.Palette[7]), dashed);

    public static string LearningRateChart(IReadOnlyList<StudyResult> results)
    {
        var runs = results.Where(r => r.Experiment == Experiments.LearningRate).ToList();
        var panels = runs.Select(r => r.Optimizer).Distinct().Order().Select(optimizer => new ChartPanel(optimizer, OptimizerTitle(optimizer),
            "learning rate", "test accuracy",
            runs.Where(r => r.Optimizer == optimizer).Select(r => r.Bn).Distinct().OrderBy(BnOrder).Select(bn => Series($"{optimizer}-{bn}", bn,
                runs.Where(r => r.Optimizer == optimizer && r.Bn == bn).GroupBy(r => r.Lr).OrderBy(g => g.Key)
                    .Select(g => new ChartPoint(g.Key, g.All(r => r.Diverged) ? double.NaN : g.Average(Accuracy))))).ToList(),
            LogX: true, ClampUnit: true)).ToList();
        return LineChart.Render("Test accuracy against the learning rate", panels);
    }

    public static string DepthChart(IReadOnlyList<StudyResult> results)
    {
        var table = DepthTable(results);
        var panels = table.Select(x => x.Optimizer).Distinct().Select(optimizer => new ChartPanel(optimizer, OptimizerTitle(optimizer),
            "hidden layers", "test accuracy",
            table.Where(x => x.Optimizer == optimizer).Select(x => x.Bn).Distinct().Select(bn => Series($"depth-{optimizer}-{bn}", bn,
                table.Where(x => x.Optimizer == optimizer && x.Bn == bn).Select(x => new ChartPoint(x.Depth, x.Accuracy.Mean, x.Accuracy.StdErr)))).ToList(),
            IntegerX: true, ClampUnit: true)).ToList();
        return LineChart.Render("Test accuracy against depth (same steps)", panels);
    }

    private static string OptimizerTitle(string optimizer) => optimizer == "gd" ? "gradient descent" : optimizer;

    public static string ShiftChart(IReadOnlyList<StudyResult> results)
    {
        var runs = results.Where(r => r.Experiment == Experiments.CovariateShift && r.Shift is { Count: > 0 }).ToList();
        ChartPanel Panel(string name, string title, Func<ShiftPoint, double> value) => new(name, title, "step", title,
            runs.GroupBy(r => r.Bn).OrderBy(g => BnOrder(g.Key)).Select(g =>
                Series($"{name}-{g.Key}", g.Key, g.First().Shift!.Select((p, i) =>
                {
                    var m = Measure.Of(g.Where(r => r.Shift!.Count > i).Select(r => value(r.Shift![i])));
                    return new ChartPoint(p.Step, m.Mean, m.StdErr);
                }))).ToList());
        return LineChart.Render("Drift of a deep layer's inputs during training",
            [Panel("mean-drift", "mean drift", p => p.MeanDrift), Panel("variance-drift", "variance drift", p => p.VarianceDrift)]);
    }

    public static string BatchChart(IReadOnlyList<StudyResult> results)
    {
        var table = BatchTable(results);
        var gap = new ChartPanel("gap", "train − test gap", "batch size", "train − test accuracy",
        [
            Series("gap-before", "before", table.Select(x => new ChartPoint(x.Batch, x.GapBn.Mean, x.GapBn.StdErr))),
            Series("gap-none", "none", table.Select(x => new ChartPoint(x.Batch, x.GapNone.Mean, x.GapNone.StdErr))),
        ], LogX: true, XTicks: table.Select(x => (double)x.Batch).ToList());
        var noise = new ChartPanel("noise", "batch-to-batch noise (BN runs)", "batch size", "relative std",
        [
            new ChartSeries("noise-mean", "noise of μ", table.Select(x => new ChartPoint(x.Batch, x.NoiseMean.Mean, x.NoiseMean.StdErr)).ToList(), LineChart.Palette[3]),
            new ChartSeries("noise-variance", "noise of σ²", table.Select(x => new ChartPoint(x.Batch, x.NoiseVariance.Mean, x.NoiseVariance.StdErr)).ToList(), LineChart.Palette[4], Dashed: true),
        ], LogX: true, XTicks: table.Select(x => (double)x.Batch).ToList());
        return LineChart.Render("Regularization and batch size (same samples)", [gap, noise]);
    }

    public static string PlacementChart(IReadOnlyList<StudyResult> results)
    {
        var runs = results.Where(r => r.Experiment == Experiments.Placement && r.Curve is { Count: > 0 }).ToList();
        var series = runs.GroupBy(r => r.Bn).OrderBy(g => BnOrder(g.Key)).Select(g => Series($"curve-{g.Key}", g.Key,
            g.First().Curve!.Select((p, i) =>
            {
                var m = Measure.Of(g.Where(r => r.Curve!.Count > i).Select(r => r.Curve![i].TestAccuracy));
                return new ChartPoint(p.Step, m.Mean, m.StdErr);
            }))).ToList();
        return LineChart.Render("Test accuracy during training: BN before vs after the activation",
            [new ChartPanel("curve", "test accuracy", "step", "test accuracy", series, ClampUnit: true)]);
    }

    public static string MomentumChart(IReadOnlyList<StudyResult> results)
    {
        var table = MomentumTable(results);
        var accuracy = new ChartPanel("accuracy", "test accuracy", "BN momentum", "test accuracy",
        [
            new ChartSeries("running", "running averages", table.Select(x => new ChartPoint(x.Momentum, x.Running.Mean, x.Running.StdErr)).ToList(), LineChart.Palette[0]),
            new ChartSeries("whole", "whole-set statistics", table.Select(x => new ChartPoint(x.Momentum, x.Whole.Mean, x.Whole.StdErr)).ToList(), LineChart.Palette[1], Dashed: true),
        ], LogX: true, ClampUnit: true, XTicks: table.Select(x => x.Momentum).ToList());
        var distance = new ChartPanel("distance", "running μ vs whole-set μ", "BN momentum", "mean |r_μ − μ| / σ",
        [
            new ChartSeries("distance", "distance", table.Select(x => new ChartPoint(x.Momentum, x.Distance.Mean, x.Distance.StdErr)).ToList(), LineChart.Palette[3]),
        ], LogX: true, XTicks: table.Select(x => x.Momentum).ToList());
        return LineChart.Render("Running averages vs whole-training-set statistics", [accuracy, distance]);
    }
}
