using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;
using BnCluster.Node.Commands;
using BnCluster.Node.Diagnostics;
using BnCluster.Node.Logging;
using Serilog;
using Serilog.Events;
using CoreEpochMetrics = BnCluster.Core.Training.EpochMetrics;

namespace BnCluster.Node.Backends;

/// <summary>
/// Figures of one `bench` run; times are means per measured step. The split (compute, bn-wait, grad-exchange,
/// waiting share) is per worker, averaged over the workers; null when no worker reported its phases (n/a).
/// GC counts and allocated bytes are this process's (the coordinator's with --processes). Worker peak RSS: one
/// entry per worker process (null if unreadable), empty when the workers run in this process. Worker gen0 and
/// allocated bytes per step: likewise one entry per worker process, from the GC counters each sent with its steps
/// (null when it took part in fewer than two of the window's steps).
/// </summary>
public sealed record BenchResult(
    double SamplesPerSecond, double MsPerStep, double? ComputeMs, double? BnWaitMs, double? GradExchangeMs, double? WaitingPercent,
    int Gen0, int Gen1, int Gen2, double AllocatedBytesPerStep, double PeakRssMb, IReadOnlyList<double?> WorkerPeakRssMb,
    IReadOnlyList<int?> WorkerGen0, IReadOnlyList<double?> WorkerAllocatedBytesPerStep, int Workers, bool Processes, int Threads, int Batch, IReadOnlyList<int> Hidden, int Steps, int WarmupSteps)
{
    /// <summary>
    /// The step time outside the workers' phases: ms per step − (compute + bn-wait + grad-exchange); null without the
    /// split. With worker processes on one machine it is the shared-memory copies of the gradients and parameters, the
    /// messages, and the time the coordinator takes a worker's CPU. The phases are means over the workers, so it can be
    /// a little below zero.
    /// </summary>
    public double? OtherMs => ComputeMs is double c && BnWaitMs is double b && GradExchangeMs is double g ? MsPerStep - (c + b + g) : null;
}

/// <summary>
/// `bncluster bench`: N timed training steps after warm-up steps, on random data of the given shape or on a dataset's
/// training split. One worker: the training step in this process, without actors. K workers: the cluster `train`
/// runs — in-process actors, or (--processes) local worker processes over loopback — timed from the coordinator's
/// commits, with the per-worker split read from the run's own step-phase log events.
/// </summary>
public static class BenchBackend
{
    /// <param name="cluster">What `train --workers K` runs (in-process actors); null = refused.</param>
    /// <param name="processes">What `train --workers K --processes` runs (local worker processes); null = refused.</param>
    public static async Task<int> RunAsync(BenchOptions options, CliContext context, CancellationToken cancel,
        ClusterTrainer? cluster = null, ClusterTrainer? processes = null)
    {
        if (options.Processes && options.Dataset is null)
        {
            context.Error.WriteLine("bncluster: --processes needs --dataset (e.g. --dataset digits or fashion-mnist): every worker process loads the dataset from its own disk; random data exists only in-process");
            return Cli.ExitUsage;
        }
        if (options.Processes && processes is null)
        {
            context.Error.WriteLine("bncluster: --processes: local worker processes are not available in this build; omit --processes to time in-process workers");
            return Cli.ExitUsage;
        }
        if (!options.Processes && options.Workers > 1 && cluster is null)
        {
            context.Error.WriteLine($"bncluster: --workers {options.Workers}: the in-process cluster is not available in this build; use --workers 1");
            return Cli.ExitUsage;
        }

        BenchResult result;
        if (options.Processes || options.Workers > 1)
            result = await MeasureClusterAsync(options, options.Processes ? processes! : cluster!, context, cancel).ConfigureAwait(false);
        else
        {
            var data = options.Dataset is { } spec
                ? NormalizedTrainSplit(spec)
                : Synthetic(options.Features, options.Classes, Math.Max(options.Batch * 4, 1024), seed: 1);
            TrainBackend.CheckAgainstDataset(options.Batch, options.HiddenSizes, data);
            result = await MeasureAsync(data, options.HiddenSizes, options.Batch, options.Steps, options.Threads, cancel,
                TrainBackend.ToOptimizerSettings(options.Optimizer, options.LearningRate), options.Warmup).ConfigureAwait(false);
        }
        context.Out.WriteLine(options.Json ? ToJson(result) : ToText(result));
        return Cli.ExitOk;
    }

    private static Dataset NormalizedTrainSplit(string spec)
    {
        var train = DatasetCatalog.Load(spec, 1).Train;
        return InputNormalizer.Fit(train).Apply(train);
    }

    /// <summary>Uniform [0, 1) features and uniform labels.</summary>
    public static Dataset Synthetic(int features, int classes, int rows, ulong seed)
    {
        var rng = new Random(unchecked((int)seed));
        var x = new float[rows * features];
        for (int i = 0; i < x.Length; i++) x[i] = rng.NextSingle();
        var y = new int[rows];
        for (int i = 0; i < rows; i++) y[i] = rng.Next(classes);
        var names = Enumerable.Range(0, classes).Select(c => c.ToString(CultureInfo.InvariantCulture)).ToArray();
        return new Dataset("synthetic", x, y, features, names);
    }

    /// <summary>How long the JIT must have compiled nothing before the timed steps start (<see cref="SettleJitAsync"/>).</summary>
    internal static readonly TimeSpan JitQuiet = TimeSpan.FromMilliseconds(250);

    /// <summary>At most this many steps are added to the warm-up to let the JIT settle.</summary>
    internal const int MaxSettleSteps = 2000;

    /// <summary>
    /// More warm-up steps until the JIT has compiled nothing for <see cref="JitQuiet"/> (at most <see cref="MaxSettleSteps"/>);
    /// returns how many. Tiered compilation recompiles a hot method in the background, instrumented first (dynamic PGO):
    /// after the 20 warm-up steps of bench/compare.sh, 200 timed steps (0.6 s) took 3.3–4.4 ms per step in 4 of 14 runs,
    /// against 2.74–2.96 ms in every run after 200 warm-up steps (2026-12-04, 21:26 UTC, runs alternated).
    /// </summary>
    internal static async Task<int> SettleJitAsync(Func<Task> step)
    {
        long compiled = System.Runtime.JitInfo.GetCompiledMethodCount();
        long quietSince = Stopwatch.GetTimestamp();
        int added = 0;
        while (added < MaxSettleSteps && Stopwatch.GetElapsedTime(quietSince) < JitQuiet)
        {
            await step().ConfigureAwait(false);
            added++;
            long now = System.Runtime.JitInfo.GetCompiledMethodCount();
            if (now != compiled) (compiled, quietSince) = (now, Stopwatch.GetTimestamp());
        }
        return added;
    }

    /// <summary>One worker, no actors: the training step in a loop (what `train --workers 1` runs). The warm-up is
    /// <paramref name="warmupSteps"/> steps and then as many as the JIT needs to settle (<see cref="SettleJitAsync"/>);
    /// the result's WarmupSteps counts them all.</summary>
    public static async Task<BenchResult> MeasureAsync(Dataset data, IReadOnlyList<int> hidden, int batch, int steps, int threads, CancellationToken cancel,
        OptimizerSettings? optimizerSettings = null, int warmupSteps = BenchOptions.DefaultWarmup)
    {
        var spec = new NetworkSpec(data.FeatureCount, hidden.ToArray(), data.ClassCount, Activation.Relu, BatchNormPlacement.Before, 1e-5f, 0.1f);
        var p = Parameters.Initialize(spec, 1);
        var optimizer = new Optimizer(optimizerSettings ?? new OptimizerSettings(OptimizerKind.Adam, 1e-3f), p);
        using var matMul = new MatMul(threads);
        int rowsPerStep = Math.Min(batch, data.Count);
        var ws = new Workspace(p, rowsPerStep, matMul);
        // One epoch plan per pass over the data; the plans the timed steps reach are made before timing, so that no
        // timed step allocates one.
        int epoch = 1, b = 0;
        long samples = 0; // an epoch's last batch may be short
        var plan = new EpochPlan(data.Count, batch, 1, epoch);
        var ahead = new Queue<EpochPlan>();

        async Task Step()
        {
            if (b == plan.BatchCount) { plan = ahead.Count > 0 ? ahead.Dequeue() : new EpochPlan(data.Count, batch, 1, epoch + 1); epoch = plan.Epoch; b = 0; }
            var rows = plan.Batch(b++);
            samples += rows.Length;
            await TrainingStep.TrainLocalAsync(p, ws, optimizer, data, rows, cancel).ConfigureAwait(false);
        }

        for (int i = 0; i < warmupSteps; i++) await Step().ConfigureAwait(false);
        warmupSteps += await SettleJitAsync(Step).ConfigureAwait(false);
        for (long reached = b + (long)steps; reached > plan.BatchCount * (ahead.Count + 1L);)
            ahead.Enqueue(new EpochPlan(data.Count, batch, 1, epoch + ahead.Count + 1));
        var before = GcSnapshot.Take();
        long samplesBefore = samples;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < steps; i++) await Step().ConfigureAwait(false);
        clock.Stop();
        var gc = GcSnapshot.Take() - before;
        double msPerStep = clock.Elapsed.TotalMilliseconds / steps;
        return new BenchResult(
            SamplesPerSecond: (samples - samplesBefore) / clock.Elapsed.TotalSeconds,
            MsPerStep: msPerStep, ComputeMs: msPerStep, BnWaitMs: 0, GradExchangeMs: 0, WaitingPercent: 0,
            gc.Gen0, gc.Gen1, gc.Gen2, gc.AllocatedBytes / (double)steps, OwnPeakRssMb(), WorkerPeakRssMb: [],
            WorkerGen0: [], WorkerAllocatedBytesPerStep: [], Workers: 1, Processes: false, threads, batch, hidden, steps, warmupSteps);
    }

    /// <summary>
    /// K workers through the trainer `train` uses (<paramref name="trainer"/>): warm-up + N + 1 steps, the window from
    /// the commit of the last warm-up step to the commit of step warm-up + N, minus the steps that end an epoch (see
    /// <see cref="StepWindow"/>). The extra step makes every worker log the gradient exchange of the last timed step,
    /// which ends only when the next step arrives. Worker processes' peak RSS is read while they live.
    /// </summary>
    private static async Task<BenchResult> MeasureClusterAsync(BenchOptions o, ClusterTrainer trainer, CliContext context, CancellationToken cancel)
    {
        var data = o.Dataset is { } spec
            ? DatasetCatalog.Load(spec, 1)
            // Random data in-process: 16 batches per epoch, so that few steps end an epoch (they are not timed); the
            // test split only feeds the evaluations, so a small one.
            : new DatasetSplit(Synthetic(o.Features, o.Classes, Math.Max(o.Batch * 16, 1024), seed: 1),
                Synthetic(o.Features, o.Classes, Math.Min(o.Batch, 256), seed: 2), "synthetic", SplitDependsOnSeed: false);
        TrainBackend.CheckAgainstDataset(o.Batch, o.HiddenSizes, data.Train);
        long lastWarmup = o.Warmup, lastTimed = o.Warmup + o.Steps, total = lastTimed + 1;
        var options = new TrainOptions
        {
            Dataset = o.Dataset ?? "synthetic", HiddenSizes = o.HiddenSizes, Batch = o.Batch,
            Epochs = (int)Math.Min(int.MaxValue, total), MaxSteps = total, // every epoch has at least one step
            Optimizer = o.Optimizer, LearningRate = o.LearningRate, Seed = 1, Workers = o.Workers, Processes = o.Processes, SharedMemory = o.SharedMemory, ShardedUpdate = o.ShardedUpdate, PinWorkers = o.PinWorkers,
            // `train` splits --threads between its workers; bench's --threads is per worker.
            Threads = o.Threads * o.Workers, OutDirectory = "",
        };
        var trainerOptions = new TrainerOptions(options.ToNetworkSpec(data.Train.FeatureCount, data.Train.ClassCount),
            TrainBackend.ToOptimizerSettings(options), options.Batch, options.Epochs, options.MaxSteps, 1, options.Threads);

        var captured = new CapturedLogEvents();
        using var log = new LoggerConfiguration()
            .MinimumLevel.Debug()
            .Enrich.WithProperty(LogEvents.Node, "bench")
            .WriteTo.Sink(captured)
            // The console gets only what needs attention: warnings, errors, and a worker process's own ones.
            .WriteTo.Logger(console => console
                .Filter.ByIncludingOnly(e => e.Level >= LogEventLevel.Warning || IsWorkerProcessProblem(e))
                .WriteTo.Sink(new TextWriterSink(context.Error)))
            .CreateLogger();
        var window = new StepWindow(lastWarmup, lastTimed, data.Train.Count, o.Batch, () => WorkerPids(captured).Select(ProcessMemory.PeakRssMb).ToArray());
        await trainer(new TrainRequest(options, data, trainerOptions, window, window, log), cancel).ConfigureAwait(false);
        if (!window.Complete) throw new InvalidOperationException($"the cluster stopped before step {lastTimed}");

        var split = WorkerSplit(captured, window);
        var workerGc = o.Processes ? WorkerGc(captured, lastWarmup, lastTimed) : [];
        double seconds = window.Elapsed.TotalSeconds;
        return new BenchResult(
            SamplesPerSecond: window.Samples / seconds, MsPerStep: seconds * 1000 / window.CountedSteps,
            split?.ComputeMs, split?.BnWaitMs, split?.GradExchangeMs, split?.WaitingPercent,
            window.Gc.Gen0, window.Gc.Gen1, window.Gc.Gen2, window.Gc.AllocatedBytes / (double)o.Steps, // GC: the whole window
            OwnPeakRssMb(), window.WorkerPeakRssMb, workerGc.Select(g => g?.Gen0).ToArray(), workerGc.Select(g => g?.BytesPerStep).ToArray(), o.Workers, o.Processes, o.Threads, o.Batch, o.HiddenSizes, o.Steps, o.Warmup);
    }

    /// <summary>
    /// A line a worker process wrote that is a warning, an error or a crash: its log lines carry the level
    /// (<see cref="RunLogging.ConsoleTemplate"/>), and an unhandled exception starts "Unhandled exception".
    /// </summary>
    internal static bool IsWorkerProcessProblem(LogEvent e) =>
        CapturedLogEvents.IntegerProperty(e, "Index") is not null
        && e.Properties.TryGetValue("Line", out var value) && value is ScalarValue { Value: string line }
        && (line.Contains(" WRN ", StringComparison.Ordinal) || line.Contains(" ERR ", StringComparison.Ordinal)
            || line.Contains(" FTL ", StringComparison.Ordinal) || line.StartsWith("Unhandled exception", StringComparison.Ordinal));

    private sealed record Split(double ComputeMs, double BnWaitMs, double GradExchangeMs, double WaitingPercent);

    /// <summary>
    /// Per step, averaged over the workers: the phases the workers logged for the counted steps, summed per worker by
    /// <see cref="LogSummary"/> (as `bncluster logs` does). Null when no worker logged a phase.
    /// </summary>
    private static Split? WorkerSplit(CapturedLogEvents captured, StepWindow window)
    {
        using var lines = new StringWriter(CultureInfo.InvariantCulture);
        captured.WriteJsonLines(lines, e => CapturedLogEvents.IntegerProperty(e, LogEvents.Step) is long s && window.Counts(s));
        var workers = LogSummary.Read(new StringReader(lines.ToString()), "bench").Workers;
        if (workers.Count == 0) return null;
        double steps = window.CountedSteps;
        return new Split(
            workers.Average(w => w.ComputeMs) / steps,
            workers.Average(w => w.PhaseMs.GetValueOrDefault(LogEvents.Phases.BnWait)) / steps,
            workers.Average(w => w.PhaseMs.GetValueOrDefault(LogEvents.Phases.GradExchange)) / steps,
            workers.Average(w => w.ComputeMs + w.WaitingMs > 0 ? 100 * w.WaitingMs / (w.ComputeMs + w.WaitingMs) : 0));
    }

    private sealed record WorkerGcFigures(int Gen0, double BytesPerStep);

    /// <summary>
    /// Per worker, by id: its process's gen0 collections and allocated bytes per step from the window's open (its
    /// compute event of step <paramref name="lastWarmup"/>) to its close (step <paramref name="lastTimed"/>) — the
    /// difference of the GC counters it sent with those steps (<see cref="BnCluster.Coordinator.Messages.StepTimings"/>),
    /// like this process's own GC figures, which cover the whole window too. Null for a worker with fewer than two
    /// compute events in the window (it joined late or was lost).
    /// </summary>
    private static WorkerGcFigures?[] WorkerGc(CapturedLogEvents captured, long lastWarmup, long lastTimed)
    {
        var first = new SortedDictionary<long, GcSample>();
        var last = new Dictionary<long, GcSample>();
        foreach (var e in captured.Events)
        {
            if (!(e.Properties.TryGetValue(LogEvents.Phase, out var phase) && phase is ScalarValue { Value: LogEvents.Phases.Compute })) continue;
            if (CapturedLogEvents.IntegerProperty(e, LogEvents.Worker) is not long worker
                || CapturedLogEvents.IntegerProperty(e, LogEvents.Step) is not long step || step < lastWarmup || step > lastTimed
                || CapturedLogEvents.IntegerProperty(e, LogEvents.Gen0) is not long gen0
                || CapturedLogEvents.IntegerProperty(e, LogEvents.AllocatedBytes) is not long bytes) continue;
            var sample = new GcSample(step, gen0, bytes);
            if (!first.TryGetValue(worker, out var f) || step < f.Step) first[worker] = sample;
            if (!last.TryGetValue(worker, out var l) || step > l.Step) last[worker] = sample;
        }
        return first
            .Select(kv => (First: kv.Value, Last: last[kv.Key]))
            .Select(w => w.Last.Step > w.First.Step
                ? new WorkerGcFigures((int)(w.Last.Gen0 - w.First.Gen0), (w.Last.Bytes - w.First.Bytes) / (double)(w.Last.Step - w.First.Step))
                : null)
            .ToArray();
    }

    private readonly record struct GcSample(long Step, long Gen0, long Bytes);

    /// <summary>Worker processes of this run, from the launcher's "Started worker process {Index} (pid {Pid})" events, by index.</summary>
    private static int[] WorkerPids(CapturedLogEvents captured) =>
        captured.Events
            .Select(e => (Index: CapturedLogEvents.IntegerProperty(e, "Index"), Pid: CapturedLogEvents.IntegerProperty(e, "Pid")))
            .Where(x => x.Index is not null && x.Pid is not null)
            .OrderBy(x => x.Index)
            .Select(x => (int)x.Pid!.Value)
            .ToArray();

    private static double OwnPeakRssMb()
    {
        if (ProcessMemory.PeakRssMb(Environment.ProcessId) is double mb) return mb;
        using var process = Process.GetCurrentProcess();
        return process.PeakWorkingSet64 / (1024.0 * 1024.0);
    }

    /// <summary>This process's GC collection counts and allocated bytes; the difference of two is a window's.</summary>
    private readonly record struct GcSnapshot(int Gen0, int Gen1, int Gen2, long AllocatedBytes)
    {
        public static GcSnapshot Take() =>
            new(GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2), GC.GetTotalAllocatedBytes(precise: true));

        public static GcSnapshot operator -(GcSnapshot a, GcSnapshot b) =>
            new(a.Gen0 - b.Gen0, a.Gen1 - b.Gen1, a.Gen2 - b.Gen2, a.AllocatedBytes - b.AllocatedBytes);
    }

    /// <summary>
    /// The timed window, from the coordinator's progress reports (called on its loop, so each report does little):
    /// it opens at the commit of step <paramref name="lastWarmup"/> and closes at the commit of <paramref name="lastTimed"/>.
    /// A step that ends an epoch before the close is left out — from the previous commit to the epoch report: a short
    /// batch, then the test evaluation, whose start the workers count as gradient exchange — and so are its events.
    /// It counts the rows of the counted steps (of <paramref name="trainRows"/>, an epoch's last batch is short). Worker
    /// peak RSS is read one step after the close: reading /proc at the close would delay the next step, and so lengthen
    /// the last timed step's gradient exchange.
    /// </summary>
    private sealed class StepWindow(long lastWarmup, long lastTimed, int trainRows, int batch, Func<double?[]> readWorkerPeakRss)
        : IProgress<BatchProgress>, IProgress<CoreEpochMetrics>
    {
        private long _opened, _closed, _previousCommit, _pausedAt, _pausedTicks;
        private GcSnapshot _gcAtOpen;
        private readonly HashSet<long> _leftOut = [];

        public bool Complete => _closed != 0;
        public TimeSpan Elapsed => Stopwatch.GetElapsedTime(_opened, _closed) - TimeSpan.FromSeconds(_pausedTicks / (double)Stopwatch.Frequency);
        public long Samples { get; private set; }
        public int CountedSteps { get; private set; }
        public GcSnapshot Gc { get; private set; }
        public IReadOnlyList<double?> WorkerPeakRssMb { get; private set; } = [];

        /// <summary>Whether <paramref name="step"/>'s time and events are in the figures.</summary>
        public bool Counts(long step) => step > lastWarmup && step <= lastTimed && !_leftOut.Contains(step);

        public void Report(BatchProgress p)
        {
            long now = Stopwatch.GetTimestamp();
            bool endsEpoch = p.Batch + 1 == p.BatchesInEpoch;
            if (p.Step == lastWarmup)
            {
                // Take (and so JIT) everything the close needs before the clock starts.
                _gcAtOpen = GcSnapshot.Take();
                Gc = GcSnapshot.Take() - _gcAtOpen;
                _opened = now = Stopwatch.GetTimestamp();
                if (endsEpoch) _pausedAt = now; // the evaluation follows
            }
            else if (p.Step > lastWarmup && p.Step <= lastTimed)
            {
                if (endsEpoch && p.Step < lastTimed)
                {
                    _pausedAt = _previousCommit;
                    _leftOut.Add(p.Step);
                }
                else
                {
                    CountedSteps++;
                    Samples += Math.Min(batch, trainRows - (long)p.Batch * batch);
                }
                if (p.Step == lastTimed)
                {
                    _closed = now;
                    Gc = GcSnapshot.Take() - _gcAtOpen;
                }
            }
            else if (p.Step == lastTimed + 1) WorkerPeakRssMb = readWorkerPeakRss();
            _previousCommit = now;
        }

        public void Report(CoreEpochMetrics m)
        {
            if (_pausedAt == 0) return;
            _pausedTicks += Stopwatch.GetTimestamp() - _pausedAt;
            _pausedAt = 0;
        }
    }

    public static string ToText(BenchResult r)
    {
        var ic = CultureInfo.InvariantCulture;
        string who = r.Workers == 1 && !r.Processes
            ? $"{r.Threads} thread(s)"
            : $"{r.Workers} {(r.Processes ? "worker processes" : "workers")}, {r.Threads} thread(s) each";
        string Ms(double? v) => v is double d ? d.ToString("F2", ic) + " ms" : "n/a";
        string split = r.WaitingPercent is double w
            ? string.Create(ic, $"compute {Ms(r.ComputeMs)}, bn-wait {Ms(r.BnWaitMs)}, grad-exchange {Ms(r.GradExchangeMs)}, other {Ms(r.OtherMs)}, waiting {w:F1}%")
            : "compute/bn-wait/grad-exchange n/a (no per-worker phase events reached this process)";
        string workersRss = r.WorkerPeakRssMb.Count == 0 ? ""
            : "; worker peak RSS " + string.Join(", ", r.WorkerPeakRssMb.Select(m => m is double d ? d.ToString("F0", ic) : "n/a")) + " MB";
        string workersGc = r.WorkerGen0.Count == 0 ? ""
            : "; worker GC gen0 " + string.Join(", ", r.WorkerGen0.Select(g => g is int n ? n.ToString(ic) : "n/a"))
              + ", bytes allocated/step " + string.Join(", ", r.WorkerAllocatedBytesPerStep.Select(b => b is double d ? d.ToString("F0", ic) : "n/a"));
        return string.Create(ic,
            $"{r.SamplesPerSecond:F0} samples/s, {r.MsPerStep:F2} ms/step (batch {r.Batch}, hidden {string.Join(',', r.Hidden)}, {who}); per step per worker: {split}; GC gen0/gen1/gen2 {r.Gen0}/{r.Gen1}/{r.Gen2}, {r.AllocatedBytesPerStep:F0} bytes allocated/step, peak working set {r.PeakRssMb:F0} MB{workersRss}{workersGc}; {r.Steps} timed steps after {r.WarmupSteps} warm-up");
    }

    public static string ToJson(BenchResult r) =>
        JsonText.Write(json =>
        {
            void NumberOrNull(string name, double? value)
            {
                if (value is double v) json.WriteNumber(name, v);
                else json.WriteNull(name);
            }

            void NumbersOrNulls(string name, IEnumerable<double?> values) // one entry per worker process
            {
                json.WriteStartArray(name);
                foreach (var value in values)
                    if (value is double v) json.WriteNumberValue(v);
                    else json.WriteNullValue();
                json.WriteEndArray();
            }

            json.WriteStartObject();
            json.WriteNumber("samples_per_second", r.SamplesPerSecond);
            json.WriteNumber("ms_per_step", r.MsPerStep);
            NumberOrNull("compute_ms", r.ComputeMs);
            NumberOrNull("bn_wait_ms", r.BnWaitMs);
            NumberOrNull("grad_exchange_ms", r.GradExchangeMs);
            NumberOrNull("other_ms", r.OtherMs);
            NumberOrNull("waiting_percent", r.WaitingPercent);
            json.WriteNumber("gen0", r.Gen0);
            json.WriteNumber("gen1", r.Gen1);
            json.WriteNumber("gen2", r.Gen2);
            json.WriteNumber("allocated_bytes_per_step", r.AllocatedBytesPerStep);
            json.WriteNumber("peak_rss_mb", r.PeakRssMb);
            NumbersOrNulls("worker_peak_rss_mb", r.WorkerPeakRssMb);
            NumbersOrNulls("worker_gen0", r.WorkerGen0.Select(g => (double?)g));
            NumbersOrNulls("worker_allocated_bytes_per_step", r.WorkerAllocatedBytesPerStep);
            json.WriteNumber("workers", r.Workers);
            json.WriteBoolean("processes", r.Processes);
            json.WriteNumber("threads", r.Threads);
            json.WriteNumber("batch", r.Batch);
            json.WriteStartArray("hidden");
            foreach (int h in r.Hidden) json.WriteNumberValue(h);
            json.WriteEndArray();
            json.WriteNumber("steps", r.Steps);
            json.WriteNumber("warmup_steps", r.WarmupSteps);
            json.WriteEndObject();
        });
}
