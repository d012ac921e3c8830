using System.Diagnostics;
using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;

namespace BnCluster.Node.Study;

/// <summary>
/// Runs the study's training runs: each one the single-node <see cref="Trainer"/> that `train --workers 1` runs, seeded,
/// with one thread, <see cref="StudySettings.Runs"/> spread over <c>parallel</c> runs at a time (costliest first); the
/// accuracies are measured in eval mode on the parameters the trainer returns (those `train` writes to model.bnc).
/// </summary>
public sealed class StudyRunner(StudySettings settings, Dataset train, Dataset test, int parallel)
{
    // The smaller training sets some runs ask for (StudyRun.TrainRows), made once.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<int, Lazy<Dataset>> _subsets = new();

    /// <summary>Called after each run (from the thread that ran it): the run, its result, runs done, runs in all.</summary>
    public Action<StudyRun, StudyResult, int, int>? RunFinished { get; init; }

    /// <summary>The training rows the runs train on: the first <see cref="StudySettings.TrainRows"/> of a seeded permutation.</summary>
    public static Dataset Subset(Dataset data, int rows, ulong seed)
    {
        if (rows >= data.Count) return data;
        var order = new int[data.Count];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        new Rng(seed).Shuffle(order);
        int f = data.FeatureCount;
        var values = new float[(long)rows * f];
        var labels = new int[rows];
        for (int i = 0; i < rows; i++)
        {
            data.CopyRow(order[i], values.AsSpan(i * f, f));
            labels[i] = data.Labels[order[i]];
        }
        return new Dataset(data.Name, values, labels, f, data.ClassNames);
    }

    public async Task<IReadOnlyList<StudyResult>> RunAllAsync(IReadOnlyList<StudyRun> runs, CancellationToken cancel)
    {
        var results = new StudyResult[runs.Count];
        var order = Enumerable.Range(0, runs.Count).OrderByDescending(i => runs[i].Cost(train.FeatureCount)).ToArray();
        int done = 0;
        await Parallel.ForEachAsync(order, new ParallelOptions { MaxDegreeOfParallelism = parallel, CancellationToken = cancel }, async (i, ct) =>
        {
            // Off the caller's thread: the trainer runs synchronously between its awaits.
            results[i] = await Task.Run(() => RunAsync(runs[i], ct), ct).ConfigureAwait(false);
            RunFinished?.Invoke(runs[i], results[i], Interlocked.Increment(ref done), runs.Count);
        }).ConfigureAwait(false);
        return results;
    }

    /// <summary>One run: train, then the eval-mode accuracies and what its probe measured.</summary>
    public async Task<StudyResult> RunAsync(StudyRun run, CancellationToken cancel)
    {
        var data = run.TrainRows is { } rows && rows < train.Count
            ? _subsets.GetOrAdd(rows, n => new Lazy<Dataset>(() => Subset(train, n, seed: 2))).Value
            : train;
        var spec = new NetworkSpec(data.FeatureCount, Enumerable.Repeat(run.Width, run.HiddenLayers).ToArray(), data.ClassCount,
            Activation.Relu, run.BatchNorm, BnMomentum: (float)run.Momentum);
        int epochs = (int)Math.Min(int.MaxValue, run.Steps * run.Batch / data.Count + 2);
        var options = new TrainerOptions(spec, new OptimizerSettings(run.Optimizer, (float)run.LearningRate), run.Batch, epochs,
            run.Steps, run.Seed, Threads: 1);
        long interval = Math.Max(1, run.Steps / settings.Checkpoints);
        var noTest = new Dataset(test.Name, [], [], test.FeatureCount, test.ClassNames); // measured below, once
        var result = new StudyResult
        {
            Experiment = run.Experiment, Variant = run.Variant, Bn = run.BatchNorm.ToString().ToLowerInvariant(),
            Optimizer = run.Optimizer.ToString().ToLowerInvariant(), Lr = run.LearningRate, HiddenLayers = run.HiddenLayers,
            Width = run.Width, Batch = run.Batch, Steps = run.Steps, Momentum = run.Momentum, Seed = run.Seed, TrainRows = data.Count,
            TestAccuracy = double.NaN,
        };

        CovariateShiftProbe? shift = null;
        BatchNoiseProbe? noise = null;
        // (normalized as the trainer normalizes: with the training rows' statistics)
        using var curve = run.Probe == StudyProbe.LearningCurve
            ? new LearningCurveProbe(InputNormalizer.Fit(data).Apply(Subset(test, settings.CurveTestRows, 1)), interval) : null;
        ITrainingObserver? observer = run.Probe switch
        {
            StudyProbe.CovariateShift => shift = new CovariateShiftProbe(run.HiddenLayers - 1, run.Width, interval),
            // The first layer, whose inputs are the data rows: a deeper layer's inputs come out of a BN layer that normalized
            // them with the same batch's moments, so their batch means vary far less than sampling alone predicts.
            StudyProbe.BatchNoise => noise = new BatchNoiseProbe(layer: 0, run.Width, run.Steps / 2 + 1),
            StudyProbe.LearningCurve => curve,
            _ => null,
        };

        var wall = Stopwatch.StartNew();
        TrainingResult trained;
        try
        {
            trained = await new Trainer(options) { Observer = observer }.RunAsync(data, noTest, cancel).ConfigureAwait(false);
        }
        catch (DivergedException) // the loss became non-finite: the learning rate is too high for this variant
        {
            return result with { Diverged = true, Seconds = wall.Elapsed.TotalSeconds };
        }

        var p = trained.Parameters;
        var trainN = trained.Input.Apply(data);
        var testN = trained.Input.Apply(test);
        using var matMul = new MatMul(1);
        var ws = new Workspace(p, Math.Min(1024, Math.Max(data.Count, test.Count)), matMul);
        var testTotal = TrainingStep.Evaluate(p, ws, testN, 0, testN.Count);
        var trainTotal = TrainingStep.Evaluate(p, ws, trainN, 0, trainN.Count);
        result = result with
        {
            TrainAccuracy = (double)trainTotal.Correct / trainTotal.Count,
            TestAccuracy = (double)testTotal.Correct / testTotal.Count,
            TestLoss = testTotal.SumLoss / testTotal.Count,
            Diverged = !double.IsFinite(testTotal.SumLoss),
        };
        if (shift is not null && shift.Points.Count > 0)
            result = result with { Shift = shift.Points, MeanDrift = shift.Points[^1].MeanDrift, VarianceDrift = shift.Points[^1].VarianceDrift };
        if (noise is not null)
            result = result with { NoiseMean = noise.MeanNoise, NoiseVariance = noise.VarianceNoise };
        if (curve is not null)
            result = result with { Curve = curve.Points };
        if (run.Probe == StudyProbe.WholeSetStatistics && run.BatchNorm != BatchNormPlacement.None)
        {
            var running = p.RunningMean.Select(m => m?.ToArray()).ToArray();
            WholeSetStatistics.Apply(p, ws, trainN);
            var whole = TrainingStep.Evaluate(p, ws, testN, 0, testN.Count);
            result = result with
            {
                WholeSetTestAccuracy = (double)whole.Correct / whole.Count,
                RunningMeanDistance = RunningDistance(p, running),
            };
        }
        return result with { Seconds = wall.Elapsed.TotalSeconds };
    }

    // Mean over BN features of |r_μ − μ_whole| / √σ²_whole, with the whole-set statistics now in p.
    private static double RunningDistance(Parameters p, float[]?[] runningMean)
    {
        double sum = 0;
        int n = 0;
        for (int l = 0; l < p.HiddenLayers; l++)
        {
            if (runningMean[l] is not { } r) continue;
            var mean = p.RunningMean[l]!;
            var variance = p.RunningVar[l]!;
            for (int j = 0; j < r.Length; j++)
            {
                if (!(variance[j] > 1e-12)) continue;
                sum += Math.Abs(r[j] - mean[j]) / Math.Sqrt(variance[j]);
                n++;
            }
        }
        return n > 0 ? sum / n : double.NaN;
    }
}
