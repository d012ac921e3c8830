using System.Diagnostics;
using System.Globalization;
using BnCluster.Core.Data;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;
using BnCluster.Node.Commands;
using BnCluster.Node.Logging;
using Serilog;
using Serilog.Events;
using CoreEpochMetrics = BnCluster.Core.Training.EpochMetrics;

namespace BnCluster.Node.Backends;

/// <summary>What a cluster trainer gets from `train`: the options, the loaded data, the trainer settings and the run's sinks.</summary>
public sealed record TrainRequest(
    TrainOptions Options,
    DatasetSplit Data,
    TrainerOptions TrainerOptions,
    IProgress<BatchProgress> BatchProgress,
    IProgress<CoreEpochMetrics> EpochProgress,
    ILogger Log);

/// <summary>
/// The seam for `train --workers K` with K &gt; 1 (the in-process cluster, issue 4): trains like
/// <see cref="Trainer.RunAsync"/> and reports through the request's progress sinks. The caller writes the model.
/// </summary>
public delegate Task<TrainingResult> ClusterTrainer(TrainRequest request, CancellationToken cancel);

/// <summary>
/// `bncluster train`: load the dataset (nothing is created before it loads), create the run folder, train
/// (single node for --workers 1, else the <see cref="ClusterTrainer"/>), write model.bnc atomically at the end.
/// </summary>
public static class TrainBackend
{
    /// <param name="processes">Trainer for `--processes` (local worker processes); null = refused.</param>
    /// <param name="alwaysCluster">Use <paramref name="cluster"/> even for one worker (the TCP coordinator).</param>
    /// <param name="command">The command run.json names ("train" or "coordinator").</param>
    /// <param name="listen">The coordinator's --listen, for run.json.</param>
    /// <param name="advertise">The coordinator's --advertise, for run.json.</param>
    public static async Task<int> RunAsync(TrainOptions options, CliContext context, ClusterTrainer? cluster, CancellationToken cancel,
        ClusterTrainer? processes = null, bool alwaysCluster = false, string command = "train", HostPort? listen = null,
        string? advertise = null)
    {
        if (options.Workers > 1 && cluster is null)
        {
            context.Error.WriteLine($"bncluster: --workers {options.Workers}: the in-process cluster is not available in this build; use --workers 1");
            return Cli.ExitUsage;
        }
        if (options.Processes)
        {
            if (processes is null)
            {
                context.Error.WriteLine("bncluster: --processes: local worker processes are not available in this build; omit --processes to train on in-process workers");
                return Cli.ExitUsage;
            }
            cluster = processes;
            alwaysCluster = true;
        }
        var data = DatasetCatalog.Load(options.Dataset, options.Seed, options.LabelColumn);
        // The default batch on a dataset with fewer training rows: one batch of all of them per epoch. A --batch that is
        // given must fit (a larger one is a mistake, and near 2^31 it overflowed the epoch's batch count to 0 steps).
        if (options.BatchIsDefault && options.Batch > data.Train.Count && data.Train.Count >= options.Workers)
            options = options with { Batch = data.Train.Count };
        CheckAgainstDataset(options.Batch, options.HiddenSizes, data.Train);
        var spec = options.ToNetworkSpec(data.Train.FeatureCount, data.Train.ClassCount);
        var trainerOptions = new TrainerOptions(spec, ToOptimizerSettings(options), options.Batch, options.Epochs,
            options.MaxSteps > 0 ? options.MaxSteps : null, unchecked((ulong)options.Seed), options.Threads);
        cancel.ThrowIfCancellationRequested();

        // Only now, with the data loaded and every setting checked, is the run folder locked (and cleared with --overwrite).
        using var folderLock = RunFolderLock.Acquire(options.OutDirectory, options.Overwrite);
        string summary;
        using (var session = StartSession(options, context))
        {
            var record = RunRecord.Start(session.Folder, command, options, data, listen, advertise);
            try
            {
                summary = await TrainAsync(options, alwaysCluster ? cluster : options.Workers > 1 ? cluster : null, data, trainerOptions, session, record, cancel).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested)
            {
                FinishRecord(record, session, "cancelled", "cancelled (Ctrl+C or SIGTERM)");
                throw;
            }
            catch (Exception e)
            {
                FinishRecord(record, session, "failed", e.Message.ReplaceLineEndings(" ").Trim());
                throw;
            }
        }
        // After the session is disposed: the live progress display has stopped and the log is flushed.
        context.Out.WriteLine(summary);
        return Cli.ExitOk;
    }

    /// <summary>
    /// The checks that need the dataset's shape, before anything is created: a batch of at most the training rows (a
    /// larger one overflowed the epoch's batch count and trained 0 steps), a network that can be held at all.
    /// </summary>
    public static void CheckAgainstDataset(int batch, IReadOnlyList<int> hidden, Dataset train)
    {
        if (batch > train.Count)
            throw new CliInputException($"--batch: {batch} is more than the {train.Count} training rows of {train.Name}");
        NetworkSize.Check(train.FeatureCount, hidden, train.ClassCount, batch);
    }

    /// <summary>Records how the run ended; a failure to write it is logged, never hides the run's own error.</summary>
    private static void FinishRecord(RunRecord record, RunSession session, string outcome, string error)
    {
        try { record.Finish(outcome, error); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            session.Log.Warning("Could not record the run's end in {File:l}: {Error:l}", RunRecord.FileName, e.Message);
        }
    }

    /// <summary>Trains and writes model.bnc and the end of run.json; returns the summary line.</summary>
    private static async Task<string> TrainAsync(TrainOptions options, ClusterTrainer? cluster, DatasetSplit data,
        TrainerOptions trainerOptions, RunSession session, RunRecord record, CancellationToken cancel)
    {
        var log = session.Log;
        log.Information("Training {Dataset:l} ({TrainRows} train rows, {TestRows} test rows, {Features} features, {Classes} classes, sha256 {Sha256:l}) on {Workers} worker(s), {Threads} thread(s), run folder {Folder:l}",
            data.Train.Name, data.Train.Count, data.Test.Count, data.Train.FeatureCount, data.Train.ClassCount, data.Sha256,
            options.Workers, options.Threads, session.Folder.Path);

        if (options.StepsEvery > 0) session.WriteSteps(options.StepsEvery);
        session.Folder.ChartSubtitle = ChartSubtitle(options, data);
        // The cluster's coordinator and workers log their own step events; the single-node loop is logged here.
        var batchSink = new BatchSink(session, record, log, options.Batch, logSteps: cluster is null);
        var epochSink = new EpochSink(session, batchSink);
        TrainingResult result;
        var wall = Stopwatch.StartNew();
        if (cluster is null)
        {
            var trainer = new Trainer(trainerOptions) { BatchProgress = batchSink, EpochProgress = epochSink };
            batchSink.Restart();
            result = await trainer.RunAsync(data.Train, data.Test, cancel).ConfigureAwait(false);
        }
        else
        {
            batchSink.Restart();
            using var akkaLog = AkkaLogRoute.To(log);
            result = await cluster!(new TrainRequest(options, data, trainerOptions, batchSink, epochSink, log), cancel).ConfigureAwait(false);
        }
        wall.Stop();
        cancel.ThrowIfCancellationRequested();

        var last = result.Epochs.Count > 0 ? result.Epochs[^1] : null;
        var metadata = Metadata(options, data, result, last);
        var document = result.ToDocument(data, metadata);
        session.SaveModel(stream => stream.Write(ModelFile.Serialize(document)));
        log.Information("Model written to {Model:l}", session.Folder.ModelPath);
        record.Finish("completed", null, result.Steps);

        double samplesPerSecond = result.Epochs.Count > 0 ? result.Epochs.Average(e => e.SamplesPerSecond) : 0;
        return string.Create(CultureInfo.InvariantCulture,
            $"test accuracy {last?.TestAccuracy ?? double.NaN:F4}, test loss {last?.TestLoss ?? double.NaN:F4}, {samplesPerSecond:F0} samples/s, {result.Steps} steps in {wall.Elapsed.TotalSeconds:F1} s, run folder {session.Folder.Path}");
    }

    /// <summary>The process console gets colours and a live display; any other writer (tests) gets plain lines.</summary>
    private static RunSession StartSession(TrainOptions options, CliContext context)
    {
        if (ReferenceEquals(context.Out, Console.Out))
            return RunSession.Start(options.OutDirectory, options.Epochs, "local", options.ConsoleLevel, options.Quiet);
        var folder = RunFolder.Create(options.OutDirectory);
        var log = RunLogging.Create(folder.LogPath, "local", context.Error, options.Quiet ? LogEventLevel.Error : options.ConsoleLevel);
        return new RunSession(folder, log, options.Quiet ? TrainingProgress.None(options.Epochs) : new TrainingProgress(context.Error, interactive: false, options.Epochs));
    }

    public static OptimizerSettings ToOptimizerSettings(TrainOptions o) =>
        ToOptimizerSettings(o.Optimizer, o.LearningRate, o.Beta1, o.Beta2, o.OptimizerEpsilon);

    public static OptimizerSettings ToOptimizerSettings(OptimizerChoice choice, double lr, double beta1 = 0.9, double beta2 = 0.999, double epsilon = 1e-8) => new(
        choice switch
        {
            OptimizerChoice.Gd => OptimizerKind.Gd,
            OptimizerChoice.Momentum => OptimizerKind.Momentum,
            OptimizerChoice.RmsProp => OptimizerKind.RmsProp,
            _ => OptimizerKind.Adam,
        },
        (float)lr, (float)beta1, (float)beta2, (float)epsilon);

    /// <summary>The model file's training entry (docs/design.md, "Contracts"): enough to reproduce the run and to evaluate on the same split.</summary>
    public static IReadOnlyDictionary<string, object?> Metadata(TrainOptions o, DatasetSplit data, TrainingResult result, CoreEpochMetrics? last) =>
        new Dictionary<string, object?>
        {
            ["dataset"] = o.Dataset,
            ["dataset_sha256"] = data.Sha256,
            ["input_shape"] = data.SampleShape?.Select(d => (long)d).ToList(),
            ["hidden"] = o.HiddenSizes.Select(h => (long)h).ToList(),
            ["activation"] = o.Activation.ToString().ToLowerInvariant(),
            ["bn"] = o.BatchNorm.ToString().ToLowerInvariant(),
            ["optimizer"] = o.Optimizer.ToString().ToLowerInvariant(),
            ["lr"] = o.LearningRate,
            ["beta1"] = o.Beta1,
            ["beta2"] = o.Beta2,
            ["batch"] = (long)o.Batch,
            ["epochs"] = (long)result.Epochs.Count,
            ["steps"] = result.Steps,
            ["seed"] = (long)o.Seed,
            ["workers"] = (long)o.Workers,
            ["test_accuracy"] = last?.TestAccuracy ?? double.NaN,
        };

    /// <summary>training.svg's line under the title: the dataset and the settings that shaped the curves.</summary>
    internal static string ChartSubtitle(TrainOptions o, DatasetSplit data) => string.Create(CultureInfo.InvariantCulture,
        $"{data.Train.Name} ({data.Train.Count} train rows) · hidden {string.Join(',', o.HiddenSizes)} {o.Activation.ToString().ToLowerInvariant()} · bn {o.BatchNorm.ToString().ToLowerInvariant()} · batch {o.Batch} · {o.Optimizer.ToString().ToLowerInvariant()} lr {o.LearningRate:G4} · {o.Workers} worker(s) · seed {o.Seed}");

    private static EpochMetrics ToRunMetrics(CoreEpochMetrics m) =>
        new(m.Epoch, m.Step, m.TrainLoss, m.TrainAccuracy, m.TestLoss, m.TestAccuracy, m.SamplesPerSecond, m.Seconds);

    /// <summary>
    /// Per step (called synchronously on the training loop): the console progress and two Debug events in
    /// log.jsonl — the step's compute time (time since the previous step) and its commit. No other allocation.
    /// </summary>
    private sealed class BatchSink(RunSession session, RunRecord record, ILogger log, int batch, bool logSteps) : IProgress<BatchProgress>
    {
        private readonly Stopwatch _step = new();
        private readonly Stopwatch _epoch = new();
        private readonly Stopwatch _run = Stopwatch.StartNew(); // steps.jsonl's seconds
        private readonly ILogger _log = log;
        private int _firstBatch = -1;

        public void Restart() { _step.Restart(); _epoch.Restart(); _firstBatch = -1; }

        public void Report(BatchProgress p)
        {
            double ms = _step.Elapsed.TotalMilliseconds;
            _step.Restart();
            record.ObserveStep(p.Step);
            session.Steps?.Append(p.Step, p.Epoch, p.StepLoss, p.StepAccuracy, ms > 0 ? p.StepRows * 1000.0 / ms : double.NaN, _run.Elapsed.TotalSeconds);
            if (logSteps)
            {
                _log.StepPhase(p.Step, p.Epoch, 0, "local", LogEvents.Phases.Compute, ms);
                _log.StepCommitted(p.Step, p.Epoch, p.TrainLoss, p.TrainAccuracy, ms);
            }
            // Samples/s from the end of the epoch's first step on: before it, a cluster may have waited for its workers.
            if (_firstBatch < 0) { _firstBatch = p.Batch; _epoch.Restart(); }
            double seconds = _epoch.Elapsed.TotalSeconds;
            int timed = p.Batch - _firstBatch;
            double samplesPerSecond = timed > 0 && seconds > 0 ? timed * (double)batch / seconds : double.NaN;
            session.Progress.OnBatch(p.Epoch, p.Step, p.Batch + 1, p.BatchesInEpoch, p.TrainLoss, p.TrainAccuracy, samplesPerSecond);
        }
    }

    /// <summary>After each epoch: metrics.jsonl, training.svg, the epoch event. The test evaluation is not counted as step time.</summary>
    private sealed class EpochSink(RunSession session, BatchSink steps) : IProgress<CoreEpochMetrics>
    {
        public void Report(CoreEpochMetrics m)
        {
            session.RecordEpoch(ToRunMetrics(m));
            steps.Restart();
        }
    }
}
