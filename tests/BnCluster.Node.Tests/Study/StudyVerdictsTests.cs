using BnCluster.Node.Study;

namespace BnCluster.Node.Tests.Study;

/// <summary>
/// Each verdict is computed from the results: made-up results that bear a claim out give "reproduced", results that
/// contradict it give "not reproduced".
/// </summary>
public sealed class StudyVerdictsTests
{
    private static StudyResult R(string experiment, string bn, double accuracy, ulong seed = 1, string optimizer = "adam",
        double lr = 1e-3, int layers = 3, int batch = 128, double momentum = 0.1) => new()
    {
        Experiment = experiment, Variant = bn, Bn = bn, Optimizer = optimizer, Lr = lr, HiddenLayers = layers, Batch = batch,
        Momentum = momentum, Seed = seed, TestAccuracy = accuracy, TrainAccuracy = accuracy,
    };

    private static readonly ulong[] Seeds = [1, 2, 3];

    // A little spread between seeds, so the standard errors are not zero.
    private static double Jitter(ulong seed) => ((double)seed - 2) * 0.001;

    // ---- 1. Learning rate

    private static List<StudyResult> LearningRates(Func<string, double, double> accuracy)
    {
        var rates = StudySettings.LogSpace(-4, 0, 9);
        return (from optimizer in new[] { "gd", "adam" }
                from bn in new[] { "before", "after", "none" }
                from lr in rates
                select R(Experiments.LearningRate, bn, accuracy(bn, lr), optimizer: optimizer, lr: lr)).ToList();
    }

    // Good (0.90) over [lo, hi], poor (0.50) elsewhere.
    private static double Plateau(double lr, double lo, double hi) => lr >= lo * 0.999 && lr <= hi * 1.001 ? 0.90 : 0.50;

    [Fact]
    public void Learning_rate_verdict_follows_the_width_of_the_good_range()
    {
        var wideWithBn = LearningRates((bn, lr) => bn == "none" ? Plateau(lr, 1e-2, 1e-2) : Plateau(lr, 1e-3, 1e-1));
        var verdict = StudyVerdicts.LearningRate(wideWithBn);
        Assert.Equal(Outcome.Reproduced, verdict.Outcome);
        Assert.Contains("2.00 decades with BN vs 0.00 without", verdict.Text);

        var wideWithout = LearningRates((bn, lr) => bn == "none" ? Plateau(lr, 1e-3, 1e-1) : Plateau(lr, 1e-2, 1e-2));
        Assert.Equal(Outcome.NotReproduced, StudyVerdicts.LearningRate(wideWithout).Outcome);

        // A rate within 1 point of the best counts; 1.5 points below does not; a diverged run counts as 0.
        var ranges = StudyVerdicts.LearningRateRanges(LearningRates((bn, lr) => lr switch { 1e-2 => 0.90, 1e-1 => 0.891, 1 => 0.95, _ => 0.885 }));
        Assert.All(ranges, r => Assert.Equal(1, r.BestLr));
        var diverged = LearningRates((bn, lr) => 0.9).Select(r => r.Lr == 1 ? r with { Diverged = true, TestAccuracy = double.NaN } : r).ToList();
        Assert.All(StudyVerdicts.LearningRateRanges(diverged), r => Assert.True(r.High < 1));
    }

    // ---- 2. Depth

    private static List<StudyResult> Depths(double deepWithBn, double deepWithout, double? gdDeepWithout = null) =>
        (from optimizer in new[] { "adam", "gd" }
         from depth in new[] { 2, 6, 10 }
         from bn in new[] { "before", "none" }
         from seed in Seeds
         let without = optimizer == "gd" ? gdDeepWithout ?? deepWithout : deepWithout
         select R(Experiments.Depth, bn, (depth < 10 ? 0.88 : bn == "none" ? without : deepWithBn) + Jitter(seed), seed, optimizer, layers: depth)).ToList();

    [Fact]
    public void Depth_verdict_compares_the_deepest_networks()
    {
        Assert.Equal(Outcome.Reproduced, StudyVerdicts.Depth(Depths(deepWithBn: 0.87, deepWithout: 0.70)).Outcome);
        Assert.Equal(Outcome.NotReproduced, StudyVerdicts.Depth(Depths(deepWithBn: 0.86, deepWithout: 0.87)).Outcome);
        // Better, but by less than the bar of 1 point, beyond noise: not "much deeper".
        Assert.Equal(Outcome.NotReproduced, StudyVerdicts.Depth(Depths(deepWithBn: 0.874, deepWithout: 0.870)).Outcome);
        Assert.Contains("at 10 hidden layers", StudyVerdicts.Depth(Depths(0.87, 0.70)).Text);
        // Borne out with one optimizer only: mixed.
        Assert.Equal(Outcome.Mixed, StudyVerdicts.Depth(Depths(deepWithBn: 0.87, deepWithout: 0.87, gdDeepWithout: 0.60)).Outcome);
    }

    // ---- 3. Covariate shift

    private static List<StudyResult> Shift(double withBn, double without) =>
        (from bn in new[] { "before", "none" }
         from seed in Seeds
         let drift = (bn == "none" ? without : withBn) * (1 + 10 * Jitter(seed))
         select R(Experiments.CovariateShift, bn, 0.88, seed) with { MeanDrift = drift, VarianceDrift = 2 * drift }).ToList();

    [Fact]
    public void Covariate_shift_verdict_follows_the_drift()
    {
        Assert.Equal(Outcome.Reproduced, StudyVerdicts.CovariateShift(Shift(withBn: 0.1, without: 1.0)).Outcome);
        Assert.Equal(Outcome.NotReproduced, StudyVerdicts.CovariateShift(Shift(withBn: 1.0, without: 0.1)).Outcome);
        var mixed = Shift(0.1, 1.0).Select(r => r.Bn == "before" ? r with { VarianceDrift = 50 } : r).ToList();
        Assert.Equal(Outcome.Mixed, StudyVerdicts.CovariateShift(mixed).Outcome);
    }

    // ---- 4. Regularization and batch size

    private static List<StudyResult> Batches(Func<int, double> noise, Func<int, string, double> gap) =>
        (from batch in new[] { 32, 128, 1024 }
         from bn in new[] { "before", "none" }
         from seed in Seeds
         select R(Experiments.BatchSize, bn, 0.85, seed, batch: batch) with
         {
             TrainAccuracy = 0.85 + gap(batch, bn) + Jitter(seed),
             NoiseMean = bn == "none" ? null : noise(batch),
             NoiseVariance = bn == "none" ? null : 2 * noise(batch),
         }).ToList();

    [Fact]
    public void Regularization_verdict_needs_noise_falling_with_the_batch_and_a_narrower_gap_that_shrinks()
    {
        static double Sampling(int batch) => 1 / Math.Sqrt(batch);
        static double Regularized(int batch, string bn) => bn == "none" ? 0.06 : batch <= 32 ? 0.03 : 0.055;
        var claim = Batches(Sampling, Regularized);
        var verdict = StudyVerdicts.Regularization(claim);
        Assert.Equal(Outcome.Reproduced, verdict.Outcome);
        Assert.Contains("batch^-0.50", verdict.Text);

        var contrary = Batches(batch => Math.Sqrt(batch), (batch, bn) => bn == "none" ? 0.03 : batch <= 32 ? 0.06 : 0.035);
        Assert.Equal(Outcome.NotReproduced, StudyVerdicts.Regularization(contrary).Outcome);

        // The noise falls as predicted but BN does not narrow the gap: mixed.
        Assert.Equal(Outcome.Mixed, StudyVerdicts.Regularization(Batches(Sampling, (_, _) => 0.05)).Outcome);
    }

    [Fact]
    public void Log_log_slope_of_a_power_law_is_its_exponent()
    {
        Assert.Equal(-0.5, StudyVerdicts.LogLogSlope(new[] { 32, 64, 256, 1024 }.Select(b => ((double)b, 3 / Math.Sqrt(b)))), 9);
        Assert.True(double.IsNaN(StudyVerdicts.LogLogSlope([(32.0, 1.0)])));
    }

    // ---- 5. Before vs after

    private static List<StudyResult> Placements(double after) =>
        (from bn in new[] { "before", "after", "none" }
         from seed in Seeds
         select R(Experiments.Placement, bn, (bn == "after" ? after : 0.88) + Jitter(seed), seed)).ToList();

    [Fact]
    public void Placement_verdict_needs_bn_after_within_a_point_of_bn_before()
    {
        Assert.Equal(Outcome.Reproduced, StudyVerdicts.Placement(Placements(after: 0.878)).Outcome);
        Assert.Equal(Outcome.NotReproduced, StudyVerdicts.Placement(Placements(after: 0.80)).Outcome);
    }

    // ---- 6. Running averages vs whole-set statistics

    private static List<StudyResult> Momenta(double runningAtDefault) =>
        (from m in new[] { 0.01, 0.1, 0.9 }
         from seed in Seeds
         select R(Experiments.Momentum, "before", (m == 0.1 ? runningAtDefault : 0.87) + Jitter(seed), seed, momentum: m) with
         {
             WholeSetTestAccuracy = 0.88 + Jitter(seed), RunningMeanDistance = m,
         }).ToList();

    [Fact]
    public void Running_average_verdict_compares_with_whole_set_statistics_at_the_default_momentum()
    {
        Assert.Equal(Outcome.Reproduced, StudyVerdicts.RunningAverages(Momenta(runningAtDefault: 0.881)).Outcome);
        Assert.Equal(Outcome.NotReproduced, StudyVerdicts.RunningAverages(Momenta(runningAtDefault: 0.80)).Outcome);
        Assert.Equal(Outcome.NotReproduced, StudyVerdicts.RunningAverages(Momenta(runningAtDefault: 0.95)).Outcome);
    }

    [Fact]
    public void Missing_results_give_a_mixed_verdict_that_says_so()
    {
        foreach (var (_, verdict) in StudyVerdicts.All([]))
        {
            Assert.Equal(Outcome.Mixed, verdict.Outcome);
            Assert.StartsWith("not measured", verdict.Text);
        }
    }

    [Fact]
    public void Judge_weighs_the_effect_against_the_bar_with_two_standard_errors()
    {
        Assert.Equal(Outcome.Reproduced, StudyVerdicts.Judge(0.05, 0.01, 0.02));
        Assert.Equal(Outcome.Mixed, StudyVerdicts.Judge(0.03, 0.01, 0.02));
        Assert.Equal(Outcome.NotReproduced, StudyVerdicts.Judge(-0.01, 0.01, 0.02));
        Assert.Equal(Outcome.Mixed, StudyVerdicts.Judge(double.NaN, 0, 0));
    }

    [Fact]
    public void Both_study_plans_cover_the_grids_the_issue_asks_for()
    {
        foreach (var settings in new[] { StudySettings.Full, StudySettings.Quick })
        {
            var runs = settings.Runs();
            Assert.Equal(Experiments.All, runs.Select(r => r.Experiment).Distinct());
            var lr = runs.Where(r => r.Experiment == Experiments.LearningRate).ToList();
            foreach (var group in lr.GroupBy(r => (r.Optimizer, r.BatchNorm)))
            {
                var rates = group.Select(r => r.LearningRate).Distinct().ToList();
                Assert.True(rates.Count >= 7, $"{rates.Count} learning rates");
                Assert.True(Math.Log10(rates.Max() / rates.Min()) >= 4 - 1e-9);
            }
            Assert.Equal(6, lr.Select(r => (r.Optimizer, r.BatchNorm)).Distinct().Count());
            var depths = runs.Where(r => r.Experiment == Experiments.Depth).Select(r => r.HiddenLayers).ToList();
            Assert.Equal((2, 10), (depths.Min(), depths.Max()));
            var depthSteps = runs.Where(r => r.Experiment == Experiments.Depth).Select(r => r.Steps).Distinct();
            Assert.Single(depthSteps);
            var batches = runs.Where(r => r.Experiment == Experiments.BatchSize).ToList();
            Assert.Equal(32, batches.Min(r => r.Batch));
            // The same samples at every size (to within one batch).
            Assert.All(batches, r => Assert.InRange(settings.Steps * settings.Batch - r.Steps * r.Batch, 0, r.Batch - 1));
        }
        Assert.Equal(1024, StudySettings.Full.BatchSizes.Max());
    }
}
