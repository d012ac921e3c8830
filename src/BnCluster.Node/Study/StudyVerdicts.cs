using System.Globalization;

namespace BnCluster.Node.Study;

public enum Outcome { Reproduced, NotReproduced, Mixed }

/// <summary>A claim's verdict and the numbers behind it, one line.</summary>
public sealed record Verdict(Outcome Outcome, string Text)
{
    public string Label => Outcome switch
    {
        Outcome.Reproduced => "reproduced",
        Outcome.NotReproduced => "not reproduced",
        _ => "mixed",
    };

    public override string ToString() => $"{Label}: {Text}";
}

/// <summary>Mean of the repeats (seeds) of one setting, its standard error (0 for one repeat) and how many there were.</summary>
public readonly record struct Measure(double Mean, double StdErr, int Count)
{
    public static Measure Of(IEnumerable<double> values)
    {
        var v = values.ToList();
        if (v.Count == 0) return new(double.NaN, double.NaN, 0);
        double mean = v.Average();
        double se = v.Count > 1 ? Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Count - 1) / v.Count) : 0;
        return new(mean, se, v.Count);
    }
}

/// <summary>One variant of the learning-rate sweep: its best rate and the contiguous range of rates within 1 point of it.</summary>
public sealed record LearningRateRange(string Optimizer, string Bn, double BestLr, double BestAccuracy, double Low, double High)
{
    /// <summary>log10(High / Low): 0 when only the best rate is within 1 point.</summary>
    public double Decades => Math.Log10(High / Low);
}

/// <summary>
/// The tables and verdicts of the study as pure functions of its results. A verdict compares an effect (in the direction
/// the claim predicts) with the bar the claim sets: reproduced when the effect minus two standard errors clears the bar,
/// not reproduced when the effect plus two standard errors stays below it, mixed in between or when parts disagree.
/// </summary>
public static class StudyVerdicts
{
    /// <summary>Points of accuracy within which a learning rate counts as working as well as the best.</summary>
    public const double LearningRateTolerance = 0.01;
    /// <summary>"Much deeper": at the deepest network, BN must be at least this much more accurate.</summary>
    public const double DepthBar = 0.01;
    /// <summary>"After is possible": BN after the activation must come within this of BN before.</summary>
    public const double PlacementBar = 0.01;
    /// <summary>"The running averages stand in": within this of the whole-training-set statistics.</summary>
    public const double RunningAverageBar = 0.005;

    public static Outcome Judge(double effect, double stdErr, double bar)
    {
        if (!double.IsFinite(effect)) return Outcome.Mixed;
        double se = double.IsFinite(stdErr) ? stdErr : 0;
        if (effect - 2 * se > bar) return Outcome.Reproduced;
        if (effect + 2 * se < bar) return Outcome.NotReproduced;
        return Outcome.Mixed;
    }

    public static Outcome Combine(IEnumerable<Outcome> parts)
    {
        var list = parts.ToList();
        if (list.Count > 0 && list.All(o => o == Outcome.Reproduced)) return Outcome.Reproduced;
        if (list.Count > 0 && list.All(o => o == Outcome.NotReproduced)) return Outcome.NotReproduced;
        return Outcome.Mixed;
    }

    /// <summary>Test accuracy, a diverged run counting as 0.</summary>
    public static double Accuracy(StudyResult r) => r.Diverged || !double.IsFinite(r.TestAccuracy) ? 0 : r.TestAccuracy;

    private static IEnumerable<StudyResult> Of(IEnumerable<StudyResult> results, string experiment) =>
        results.Where(r => r.Experiment == experiment);

    // ---- 1. Learning rate -------------------------------------------------------------------------------------------

    /// <summary>Per optimizer and placement: the best rate and the contiguous range of rates around it within 1 point.</summary>
    public static IReadOnlyList<LearningRateRange> LearningRateRanges(IEnumerable<StudyResult> results) =>
        Of(results, Experiments.LearningRate)
            .GroupBy(r => (r.Optimizer, r.Bn))
            .Select(g =>
            {
                var curve = g.GroupBy(r => r.Lr).OrderBy(x => x.Key).Select(x => (Lr: x.Key, Acc: x.Average(Accuracy))).ToList();
                int best = 0;
                for (int i = 1; i < curve.Count; i++) if (curve[i].Acc > curve[best].Acc) best = i;
                double bar = curve[best].Acc - LearningRateTolerance;
                int lo = best, hi = best;
                while (lo > 0 && curve[lo - 1].Acc >= bar) lo--;
                while (hi < curve.Count - 1 && curve[hi + 1].Acc >= bar) hi++;
                return new LearningRateRange(g.Key.Optimizer, g.Key.Bn, curve[best].Lr, curve[best].Acc, curve[lo].Lr, curve[hi].Lr);
            })
            .OrderBy(r => r.Optimizer).ThenBy(r => BnOrder(r.Bn)).ToList();

    /// <summary>Claim 1: with BN (before) the range of good learning rates is wider than without, for each optimizer.</summary>
    public static Verdict LearningRate(IEnumerable<StudyResult> results)
    {
        var ranges = LearningRateRanges(results);
        var parts = new List<(Outcome Outcome, string Text)>();
        foreach (var byOptimizer in ranges.GroupBy(r => r.Optimizer))
        {
            var bn = byOptimizer.FirstOrDefault(r => r.Bn == "before");
            var none = byOptimizer.FirstOrDefault(r => r.Bn == "none");
            if (bn is null || none is null) continue;
            double margin = bn.Decades - none.Decades;
            parts.Add((Judge(margin, 0, 0), $"{byOptimizer.Key}: {D(bn.Decades)} decades with BN vs {D(none.Decades)} without ({Signed(margin, "F2")})"));
        }
        if (parts.Count == 0) return NotMeasured("learning-rate sweep");
        return new Verdict(Combine(parts.Select(p => p.Outcome)),
            "width of the learning-rate range within 1 point of the best: " + string.Join("; ", parts.Select(p => p.Text)));
    }

    // ---- 2. Depth -----------------------------------------------------------------------------------------------------

    /// <summary>Test accuracy per (optimizer, placement, hidden layers) over the seeds.</summary>
    public static IReadOnlyList<(string Optimizer, string Bn, int Depth, Measure Accuracy)> DepthTable(IEnumerable<StudyResult> results) =>
        Of(results, Experiments.Depth).GroupBy(r => (r.Optimizer, r.Bn, r.HiddenLayers))
            .Select(g => (g.Key.Optimizer, g.Key.Bn, g.Key.HiddenLayers, Measure.Of(g.Select(Accuracy))))
            .OrderBy(x => x.Optimizer).ThenBy(x => BnOrder(x.Bn)).ThenBy(x => x.HiddenLayers).ToList();

    /// <summary>Claim 2: at the deepest network, BN is more accurate than no BN by at least <see cref="DepthBar"/>, with each optimizer.</summary>
    public static Verdict Depth(IEnumerable<StudyResult> results)
    {
        var table = DepthTable(results);
        if (table.Count == 0) return NotMeasured("depth sweep");
        int deepest = table.Max(x => x.Depth);
        var parts = new List<(Outcome Outcome, string Text)>();
        foreach (var optimizer in table.Select(x => x.Optimizer).Distinct())
        {
            var bn = table.FirstOrDefault(x => x.Optimizer == optimizer && x.Bn == "before" && x.Depth == deepest).Accuracy;
            var none = table.FirstOrDefault(x => x.Optimizer == optimizer && x.Bn == "none" && x.Depth == deepest).Accuracy;
            if (bn.Count == 0 || none.Count == 0) continue;
            double effect = bn.Mean - none.Mean, se = Hypot(bn.StdErr, none.StdErr);
            parts.Add((Judge(effect, se, DepthBar), $"{optimizer}: {Pct(bn.Mean)} with BN vs {Pct(none.Mean)} without ({Pts(effect, se)})"));
        }
        if (parts.Count == 0) return NotMeasured("depth sweep at its deepest network");
        return new Verdict(Combine(parts.Select(p => p.Outcome)),
            $"at {deepest} hidden layers " + string.Join("; ", parts.Select(p => p.Text)) + $"; the claim needs ≥ {DepthBar * 100:0.#} point");
    }

    // ---- 3. Covariate shift -------------------------------------------------------------------------------------------

    /// <summary>Final mean and variance drift of the probed layer's inputs, per placement, over the seeds.</summary>
    public static IReadOnlyList<(string Bn, Measure MeanDrift, Measure VarianceDrift)> ShiftTable(IEnumerable<StudyResult> results) =>
        Of(results, Experiments.CovariateShift).Where(r => r.MeanDrift is not null && r.VarianceDrift is not null)
            .GroupBy(r => r.Bn)
            .Select(g => (g.Key, Measure.Of(g.Select(r => r.MeanDrift!.Value)), Measure.Of(g.Select(r => r.VarianceDrift!.Value))))
            .OrderBy(x => BnOrder(x.Key)).ToList();

    /// <summary>Claim 3: with BN, both the mean and the variance of a deep layer's inputs drift less over training.</summary>
    public static Verdict CovariateShift(IEnumerable<StudyResult> results)
    {
        var table = ShiftTable(results);
        var bn = table.FirstOrDefault(x => x.Bn == "before");
        var none = table.FirstOrDefault(x => x.Bn == "none");
        if (bn.Bn is null || none.Bn is null) return NotMeasured("covariate-shift runs");
        var parts = new[] { ("mean", bn.MeanDrift, none.MeanDrift), ("variance", bn.VarianceDrift, none.VarianceDrift) }
            .Select(x =>
            {
                var (name, with, without) = x;
                // The effect is the log ratio (how many times less BN drifts); its standard error by the delta method.
                double effect = Math.Log(without.Mean / with.Mean);
                double se = Hypot(without.StdErr / without.Mean, with.StdErr / with.Mean);
                return (Outcome: Judge(effect, se, 0), Text: $"{name} drift {F(with.Mean)} with BN vs {F(without.Mean)} without ({Ratio(without.Mean / with.Mean)} less with BN)");
            }).ToList();
        return new Verdict(Combine(parts.Select(p => p.Outcome)), string.Join("; ", parts.Select(p => p.Text)));
    }

    // ---- 4. Regularization and batch size -----------------------------------------------------------------------------

    /// <summary>Per batch size: the train − test gap with and without BN, and the noise of the BN runs' mini-batch moments.</summary>
    public static IReadOnlyList<(int Batch, Measure GapBn, Measure GapNone, Measure NoiseMean, Measure NoiseVariance)> BatchTable(IEnumerable<StudyResult> results)
    {
        static double Gap(StudyResult r) => r.Diverged ? double.NaN : r.TrainAccuracy - r.TestAccuracy;
        return Of(results, Experiments.BatchSize).GroupBy(r => r.Batch).OrderBy(g => g.Key)
            .Select(g => (g.Key,
                Measure.Of(g.Where(r => r.Bn != "none").Select(Gap).Where(double.IsFinite)),
                Measure.Of(g.Where(r => r.Bn == "none").Select(Gap).Where(double.IsFinite)),
                Measure.Of(g.Where(r => r.NoiseMean is { } v && double.IsFinite(v)).Select(r => r.NoiseMean!.Value)),
                Measure.Of(g.Where(r => r.NoiseVariance is { } v && double.IsFinite(v)).Select(r => r.NoiseVariance!.Value))))
            .ToList();
    }

    /// <summary>Least-squares slope of ln y against ln x (NaN with fewer than two positive points).</summary>
    public static double LogLogSlope(IEnumerable<(double X, double Y)> points)
    {
        var p = points.Where(q => q.X > 0 && q.Y > 0 && double.IsFinite(q.Y)).Select(q => (X: Math.Log(q.X), Y: Math.Log(q.Y))).ToList();
        if (p.Count < 2) return double.NaN;
        double mx = p.Average(q => q.X), my = p.Average(q => q.Y);
        double sxx = p.Sum(q => (q.X - mx) * (q.X - mx));
        return sxx > 0 ? p.Sum(q => (q.X - mx) * (q.Y - my)) / sxx : double.NaN;
    }

    /// <summary>
    /// Claim 4: the mini-batch μ and σ² are noisier in small batches (both fall with the batch size), BN narrows the
    /// train − test gap at the smallest batch, and that effect is smaller at the largest batch.
    /// </summary>
    public static Verdict Regularization(IEnumerable<StudyResult> results)
    {
        var table = BatchTable(results);
        if (table.Count < 2) return NotMeasured("batch-size sweep");
        double slopeMean = LogLogSlope(table.Select(x => ((double)x.Batch, x.NoiseMean.Mean)));
        double slopeVar = LogLogSlope(table.Select(x => ((double)x.Batch, x.NoiseVariance.Mean)));
        var small = table[0];
        var large = table[^1];
        double regSmall = small.GapNone.Mean - small.GapBn.Mean, seSmall = Hypot(small.GapNone.StdErr, small.GapBn.StdErr);
        double regLarge = large.GapNone.Mean - large.GapBn.Mean, seLarge = Hypot(large.GapNone.StdErr, large.GapBn.StdErr);
        var outcomes = new[]
        {
            Judge(-slopeMean, 0, 0),
            Judge(-slopeVar, 0, 0),
            Judge(regSmall, seSmall, 0),
            Judge(regSmall - regLarge, Hypot(seSmall, seLarge), 0),
        };
        return new Verdict(Combine(outcomes),
            $"batch-to-batch noise ∝ batch^{slopeMean.ToString("F2", CultureInfo.InvariantCulture)} (μ) and ^{slopeVar.ToString("F2", CultureInfo.InvariantCulture)} (σ²); " +
            $"BN narrows the train−test gap by {Pts(regSmall, seSmall)} at batch {small.Batch} and {Pts(regLarge, seLarge)} at batch {large.Batch}");
    }

    // ---- 5. Before vs after the activation ----------------------------------------------------------------------------

    /// <summary>Test accuracy per placement over the seeds.</summary>
    public static IReadOnlyList<(string Bn, Measure Accuracy)> PlacementTable(IEnumerable<StudyResult> results) =>
        Of(results, Experiments.Placement).GroupBy(r => r.Bn).Select(g => (g.Key, Measure.Of(g.Select(Accuracy))))
            .OrderBy(x => BnOrder(x.Key)).ToList();

    /// <summary>Claim 5: BN after the activation also works: within <see cref="PlacementBar"/> of BN before.</summary>
    public static Verdict Placement(IEnumerable<StudyResult> results)
    {
        var table = PlacementTable(results);
        var before = table.FirstOrDefault(x => x.Bn == "before").Accuracy;
        var after = table.FirstOrDefault(x => x.Bn == "after").Accuracy;
        if (before.Count == 0 || after.Count == 0) return NotMeasured("before/after runs");
        double effect = after.Mean - before.Mean, se = Hypot(after.StdErr, before.StdErr);
        return new Verdict(Judge(effect, se, -PlacementBar),
            $"BN after the activation {Pct(after.Mean)} vs before {Pct(before.Mean)} ({Pts(effect, se)}; the claim needs after ≥ before − {PlacementBar * 100:0.#} point)");
    }

    // ---- 6. Running averages vs whole-training-set statistics ---------------------------------------------------------

    /// <summary>Per momentum: test accuracy with the running averages, with whole-set statistics, their paired difference, and the distance of the means.</summary>
    public static IReadOnlyList<(double Momentum, Measure Running, Measure Whole, Measure Difference, Measure Distance)> MomentumTable(IEnumerable<StudyResult> results) =>
        Of(results, Experiments.Momentum).Where(r => r.WholeSetTestAccuracy is not null)
            .GroupBy(r => r.Momentum).OrderBy(g => g.Key)
            .Select(g => (g.Key, Measure.Of(g.Select(Accuracy)), Measure.Of(g.Select(r => r.WholeSetTestAccuracy!.Value)),
                Measure.Of(g.Select(r => Accuracy(r) - r.WholeSetTestAccuracy!.Value)),
                Measure.Of(g.Select(r => r.RunningMeanDistance ?? double.NaN).Where(double.IsFinite))))
            .ToList();

    /// <summary>Claim 6: at the default momentum the running averages give the test accuracy of whole-training-set statistics, within <see cref="RunningAverageBar"/>.</summary>
    public static Verdict RunningAverages(IEnumerable<StudyResult> results, double momentum = StudySettings.DefaultMomentum)
    {
        var table = MomentumTable(results);
        var row = table.FirstOrDefault(x => Math.Abs(x.Momentum - momentum) < 1e-12);
        if (row.Running.Count == 0) return NotMeasured($"runs at momentum {momentum}");
        double diff = row.Difference.Mean;
        return new Verdict(Judge(-Math.Abs(diff), row.Difference.StdErr, -RunningAverageBar),
            $"at momentum {momentum.ToString(CultureInfo.InvariantCulture)} {Pct(row.Running.Mean)} with the running averages vs {Pct(row.Whole.Mean)} with whole-training-set statistics ({Pts(diff, row.Difference.StdErr)}; the claim needs within {RunningAverageBar * 100:0.#} point)");
    }

    /// <summary>Every claim's verdict, in the order of the report.</summary>
    public static IReadOnlyList<(string Experiment, Verdict Verdict)> All(IReadOnlyList<StudyResult> results) =>
    [
        (Experiments.LearningRate, LearningRate(results)),
        (Experiments.Depth, Depth(results)),
        (Experiments.CovariateShift, CovariateShift(results)),
        (Experiments.BatchSize, Regularization(results)),
        (Experiments.Placement, Placement(results)),
        (Experiments.Momentum, RunningAverages(results)),
    ];

    private static Verdict NotMeasured(string what) => new(Outcome.Mixed, $"not measured: no {what} in the results");

    internal static int BnOrder(string bn) => bn switch { "before" => 0, "after" => 1, _ => 2 };
    private static double Hypot(double a, double b) => Math.Sqrt(a * a + b * b);
    internal static string Pct(double x) => double.IsFinite(x) ? (100 * x).ToString("F1", CultureInfo.InvariantCulture) + "%" : "n/a";
    internal static string Pts(double d, double se) =>
        Signed(100 * d, "F1") + (se > 0 ? " ± " + (100 * se).ToString("F1", CultureInfo.InvariantCulture) : "") + " points";
    internal static string Signed(double x, string format) => (x >= 0 ? "+" : "") + x.ToString(format, CultureInfo.InvariantCulture);
    internal static string D(double x) => x.ToString("F2", CultureInfo.InvariantCulture);
    internal static string F(double x) => x.ToString("G3", CultureInfo.InvariantCulture);
    private static string Ratio(double x) => double.IsFinite(x) ? x.ToString("F1", CultureInfo.InvariantCulture) + "×" : "n/a";
}
