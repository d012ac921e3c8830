using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;

namespace BnCluster.Node.Study;

/// <summary>The experiments of `bncluster study` (issue 26); each checks one claim about batch norm.</summary>
public static class Experiments
{
    public const string LearningRate = "lr", Depth = "depth", CovariateShift = "shift", BatchSize = "batch",
        Placement = "placement", Momentum = "momentum";

    public static readonly IReadOnlyList<string> All = [LearningRate, Depth, CovariateShift, BatchSize, Placement, Momentum];
}

/// <summary>What a run measures besides its final accuracies.</summary>
public enum StudyProbe
{
    None,
    /// <summary>Per-feature mean and variance of the inputs of the last hidden layer over training.</summary>
    CovariateShift,
    /// <summary>How much a hidden BN layer's mini-batch μ and σ² vary from batch to batch.</summary>
    BatchNoise,
    /// <summary>Test accuracy with whole-training-set BN statistics instead of the running averages.</summary>
    WholeSetStatistics,
    /// <summary>Test accuracy on a slice of the test set at checkpoints during training.</summary>
    LearningCurve,
}

/// <summary>One training run of the study: a network (<see cref="HiddenLayers"/> × <see cref="Width"/>, ReLU), an optimizer, a budget, a seed.</summary>
public sealed record StudyRun(
    string Experiment,
    string Variant,
    BatchNormPlacement BatchNorm,
    OptimizerKind Optimizer,
    double LearningRate,
    int HiddenLayers,
    int Width,
    int Batch,
    long Steps,
    double Momentum,
    ulong Seed,
    StudyProbe Probe = StudyProbe.None)
{
    /// <summary>Train on the first this many rows of the study's training rows (a smaller set that overfits); null: all.</summary>
    public int? TrainRows { get; init; }

    /// <summary>Multiply-adds of the forward pass per sample times samples: for running the costliest runs first.</summary>
    public double Cost(int inputs) => (double)Steps * Batch * ((double)inputs * Width + (HiddenLayers - 1.0) * Width * Width);
}

/// <summary>
/// The sizes of a study: the training subset, the default network and budget, and the grids of each experiment.
/// <see cref="Full"/> is sized to finish within a quarter of an hour on a 2-core machine; <see cref="Quick"/> is for tests and a first look.
/// </summary>
public sealed record StudySettings(
    bool IsQuick,
    int TrainRows,
    int CurveTestRows,
    int Width,
    int HiddenLayers,
    int Batch,
    long Steps,
    IReadOnlyList<double> LearningRates,
    IReadOnlyList<int> Depths,
    IReadOnlyList<int> BatchSizes,
    IReadOnlyList<double> Momenta,
    IReadOnlyList<ulong> Seeds,
    IReadOnlyList<ulong> BatchSeeds,
    int BatchTrainRows,
    int ShiftDepth,
    int Checkpoints)
{
    /// <summary>The optimizer and learning rate of every experiment but the learning-rate sweep (`train`'s defaults).</summary>
    public const double DefaultLearningRate = 1e-3;
    public const OptimizerKind DefaultOptimizer = OptimizerKind.Adam;
    public const double DefaultMomentum = 0.1;
    /// <summary>The learning rate of plain gradient descent in the depth sweep.</summary>
    public const double GdLearningRate = 0.1;

    public static StudySettings Full { get; } = new(
        IsQuick: false, TrainRows: 60_000, CurveTestRows: 2_000, Width: 128, HiddenLayers: 3, Batch: 128, Steps: 3_000,
        LearningRates: LogSpace(-4, 0, 9), Depths: [2, 4, 6, 8, 10], BatchSizes: [32, 64, 128, 256, 512, 1024],
        Momenta: [0.001, 0.01, 0.1, 0.5, 0.9], Seeds: [1, 2, 3], BatchSeeds: [1, 2, 3, 4, 5], BatchTrainRows: 10_000,
        ShiftDepth: 4, Checkpoints: 20);

    public static StudySettings Quick { get; } = new(
        IsQuick: true, TrainRows: 20_000, CurveTestRows: 500, Width: 64, HiddenLayers: 3, Batch: 64, Steps: 300,
        LearningRates: LogSpace(-4, 0, 7), Depths: [2, 6, 10], BatchSizes: [32, 128, 512],
        Momenta: [0.01, 0.1, 0.9], Seeds: [1, 2], BatchSeeds: [1, 2], BatchTrainRows: 20_000,
        ShiftDepth: 4, Checkpoints: 10);

    /// <summary>n values from 10^lo to 10^hi, evenly spaced in the exponent.</summary>
    public static IReadOnlyList<double> LogSpace(int lo, int hi, int n) =>
        Enumerable.Range(0, n).Select(i => Math.Round(Math.Pow(10, lo + (hi - lo) * (double)i / (n - 1)), 6 - lo)).ToArray();

    /// <summary>Every run of the study, in the order of <see cref="Experiments.All"/>.</summary>
    public IReadOnlyList<StudyRun> Runs()
    {
        var runs = new List<StudyRun>();
        var placements = new[] { BatchNormPlacement.Before, BatchNormPlacement.After, BatchNormPlacement.None };
        var two = Seeds.Take(2).ToArray();
        StudyRun Default(string experiment, BatchNormPlacement bn, ulong seed) => new(experiment, VariantName(bn), bn, DefaultOptimizer,
            DefaultLearningRate, HiddenLayers, Width, Batch, Steps, DefaultMomentum, seed);

        // 1. Learning rate: every rate, GD and Adam, each placement; two seeds.
        foreach (var optimizer in new[] { OptimizerKind.Gd, OptimizerKind.Adam })
            foreach (var bn in placements)
                foreach (double lr in LearningRates)
                    foreach (ulong seed in two)
                        runs.Add(Default(Experiments.LearningRate, bn, seed) with { Optimizer = optimizer, LearningRate = lr });

        // 2. Depth: same width, same steps; Adam and plain gradient descent.
        foreach (var (optimizer, lr) in new[] { (DefaultOptimizer, DefaultLearningRate), (OptimizerKind.Gd, GdLearningRate) })
            foreach (int depth in Depths)
                foreach (var bn in new[] { BatchNormPlacement.Before, BatchNormPlacement.None })
                    foreach (ulong seed in Seeds)
                        runs.Add(Default(Experiments.Depth, bn, seed) with { HiddenLayers = depth, Optimizer = optimizer, LearningRate = lr });

        // 3. Covariate shift: the inputs of the last hidden layer of a deeper network.
        foreach (var bn in new[] { BatchNormPlacement.Before, BatchNormPlacement.None })
            foreach (ulong seed in Seeds)
                runs.Add(Default(Experiments.CovariateShift, bn, seed) with { HiddenLayers = ShiftDepth, Probe = StudyProbe.CovariateShift });

        // 4. Batch size: the same number of samples at every size (steps = budget / batch), on fewer rows (it overfits).
        long samples = Steps * Batch;
        foreach (int batch in BatchSizes)
            foreach (var bn in new[] { BatchNormPlacement.Before, BatchNormPlacement.None })
                foreach (ulong seed in BatchSeeds)
                    runs.Add(Default(Experiments.BatchSize, bn, seed) with
                    {
                        Batch = batch, Steps = Math.Max(1, samples / batch), TrainRows = BatchTrainRows,
                        Probe = bn == BatchNormPlacement.None ? StudyProbe.None : StudyProbe.BatchNoise,
                    });

        // 5. Before vs after the activation (and none, for scale).
        foreach (var bn in placements)
            foreach (ulong seed in Seeds)
                runs.Add(Default(Experiments.Placement, bn, seed) with { Probe = StudyProbe.LearningCurve });

        // 6. Running averages vs whole-training-set statistics, against the momentum of the averages.
        foreach (double m in Momenta)
            foreach (ulong seed in Seeds)
                runs.Add(Default(Experiments.Momentum, BatchNormPlacement.Before, seed) with { Momentum = m, Probe = StudyProbe.WholeSetStatistics });
        return runs;
    }

    public static string VariantName(BatchNormPlacement bn) => bn switch
    {
        BatchNormPlacement.Before => "bn-before",
        BatchNormPlacement.After => "bn-after",
        _ => "no-bn",
    };
}
