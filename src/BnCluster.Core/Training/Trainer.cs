using System.Diagnostics;
using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Layers;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;

namespace BnCluster.Core.Training;

/// <summary>Settings of a single-node run. <see cref="MaxSteps"/> (when set) stops the run early.</summary>
public sealed record TrainerOptions(
    NetworkSpec Spec,
    OptimizerSettings Optimizer,
    int BatchSize,
    int Epochs,
    long? MaxSteps = null,
    ulong Seed = 1,
    int Threads = 1);

/// <summary>
/// After each committed step: 1-based epoch, 0-based batch of the epoch, global step, running train loss/accuracy of the
/// epoch, and the step's own batch: its loss, accuracy and rows (steps.jsonl).
/// </summary>
public readonly record struct BatchProgress(int Epoch, int Batch, int BatchesInEpoch, long Step, double TrainLoss, double TrainAccuracy,
    double StepLoss = double.NaN, double StepAccuracy = double.NaN, int StepRows = 0);

/// <summary>One line of metrics.jsonl (docs/design.md, "Contracts").</summary>
public sealed record EpochMetrics(
    int Epoch, long Step, double TrainLoss, double TrainAccuracy, double TestLoss, double TestAccuracy,
    double SamplesPerSecond, double Seconds);

public sealed record TrainingResult(Parameters Parameters, InputNormalizer Input, IReadOnlyList<EpochMetrics> Epochs, long Steps)
{
    /// <summary>
    /// The model document of this result (docs/design.md, "Contracts"); <paramref name="training"/> is the metadata map,
    /// <paramref name="preprocessing"/> the scaling the dataset loader applied (null: none).
    /// </summary>
    public ModelDocument ToDocument(IReadOnlyList<string> classes, IReadOnlyDictionary<string, object?>? training = null,
        InputPreprocessing? preprocessing = null) =>
        ModelConversion.ToDocument(Parameters, Input, classes, training, preprocessing);

    /// <summary>The model document of a run on <paramref name="data"/>: its class names and its loader's preprocessing.</summary>
    public ModelDocument ToDocument(DatasetSplit data, IReadOnlyDictionary<string, object?>? training = null) =>
        ToDocument(data.Train.ClassNames, training, data.Preprocessing);
}

/// <summary>
/// Single-node training: the same step the cluster runs, with a <see cref="LocalCollective"/>. Per epoch a seeded
/// <see cref="EpochPlan"/>; per batch forward/backward, optimizer, running averages; after each epoch the train
/// metrics of the step partials and the test metrics in eval mode.
/// </summary>
public sealed class Trainer(TrainerOptions options)
{
    public TrainerOptions Options { get; } = Validate(options);

    public IProgress<BatchProgress>? BatchProgress { get; init; }
    public IProgress<EpochMetrics>? EpochProgress { get; init; }

    /// <summary>Sees every committed step's workspace (measurements); null, the default, for normal training.</summary>
    public ITrainingObserver? Observer { get; init; }

    private static TrainerOptions Validate(TrainerOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        if (o.BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(o), $"batch size must be positive, got {o.BatchSize}");
        if (o.Epochs <= 0) throw new ArgumentOutOfRangeException(nameof(o), $"epochs must be positive, got {o.Epochs}");
        if (o.MaxSteps is <= 0) throw new ArgumentOutOfRangeException(nameof(o), $"max steps must be positive, got {o.MaxSteps}");
        if (o.Threads <= 0) throw new ArgumentOutOfRangeException(nameof(o), $"threads must be positive, got {o.Threads}");
        return o;
    }

    public async Task<TrainingResult> RunAsync(Dataset train, Dataset test, CancellationToken ct = default)
    {
        var spec = Options.Spec;
        if (train.FeatureCount != spec.Inputs) throw new ArgumentException($"training set '{train.Name}' has {train.FeatureCount} features, network expects {spec.Inputs}");
        if (test.FeatureCount != spec.Inputs) throw new ArgumentException($"test set '{test.Name}' has {test.FeatureCount} features, network expects {spec.Inputs}");
        if (train.ClassCount != spec.Classes) throw new ArgumentException($"training set '{train.Name}' has {train.ClassCount} classes, network expects {spec.Classes}");
        if (train.Count == 0) throw new ArgumentException($"training set '{train.Name}' is empty");

        var input = InputNormalizer.Fit(train);
        var trainN = input.Apply(train);
        var testN = input.Apply(test);
        var p = Parameters.Initialize(spec, Options.Seed);
        var optimizer = new Optimizer(Options.Optimizer, p);
        using var matMul = new MatMul(Options.Threads);
        var ws = new Workspace(p, Math.Min(Options.BatchSize, train.Count), matMul);
        var epochs = new List<EpochMetrics>();
        var total = Stopwatch.StartNew();
        long step = 0;

        for (int epoch = 1; epoch <= Options.Epochs && !Done(step); epoch++)
        {
            var plan = new EpochPlan(train.Count, Options.BatchSize, Options.Seed, epoch);
            var trainTotal = new LossPartial(0, 0, 0);
            var stepTime = new Stopwatch();
            for (int b = 0; b < plan.BatchCount && !Done(step); b++)
            {
                ct.ThrowIfCancellationRequested();
                var rows = plan.Batch(b);
                stepTime.Start();
                var partial = await TrainingStep.TrainLocalAsync(p, ws, optimizer, trainN, rows, ct).ConfigureAwait(false);
                stepTime.Stop();
                step++;
                trainTotal = trainTotal.Add(partial);
                if (!double.IsFinite(partial.SumLoss)) throw new DivergedException($"loss is not finite at step {step} (epoch {epoch}); lower the learning rate");
                Observer?.StepCommitted(step, p, ws);
                BatchProgress?.Report(new BatchProgress(epoch, b, plan.BatchCount, step,
                    trainTotal.SumLoss / trainTotal.Count, (double)trainTotal.Correct / trainTotal.Count,
                    partial.SumLoss / partial.Count, (double)partial.Correct / partial.Count, partial.Count));
            }
            var testTotal = testN.Count > 0 ? TrainingStep.Evaluate(p, ws, testN, 0, testN.Count) : new LossPartial(0, 0, 0);
            var metrics = new EpochMetrics(epoch, step,
                trainTotal.SumLoss / trainTotal.Count, (double)trainTotal.Correct / trainTotal.Count,
                testTotal.Count > 0 ? testTotal.SumLoss / testTotal.Count : double.NaN,
                testTotal.Count > 0 ? (double)testTotal.Correct / testTotal.Count : double.NaN,
                stepTime.Elapsed.TotalSeconds > 0 ? trainTotal.Count / stepTime.Elapsed.TotalSeconds : 0,
                total.Elapsed.TotalSeconds);
            epochs.Add(metrics);
            EpochProgress?.Report(metrics);
        }
        return new TrainingResult(p, input, epochs, step);
    }

    private bool Done(long step) => Options.MaxSteps is { } max && step >= max;

    /// <summary>The metadata map written to the model file's <c>training</c> entry.</summary>
    public IReadOnlyDictionary<string, object?> Metadata(TrainingResult result, string dataset) => new Dictionary<string, object?>
    {
        ["dataset"] = dataset,
        ["seed"] = (long)Options.Seed,
        ["optimizer"] = Options.Optimizer.Kind.ToString().ToLowerInvariant(),
        ["lr"] = (double)Options.Optimizer.LearningRate,
        ["beta1"] = (double)Options.Optimizer.Beta1,
        ["beta2"] = (double)Options.Optimizer.Beta2,
        ["batch"] = (long)Options.BatchSize,
        ["epochs"] = (long)result.Epochs.Count,
        ["steps"] = result.Steps,
        ["workers"] = 1L,
        ["activation"] = ActivationLayer.Name(Options.Spec.Activation),
        ["bn"] = Options.Spec.BatchNorm.ToString().ToLowerInvariant(),
    };
}

/// <summary>Training stopped because the loss became non-finite (the learning rate is too high for the network).</summary>
public sealed class DivergedException(string message) : InvalidOperationException(message);
