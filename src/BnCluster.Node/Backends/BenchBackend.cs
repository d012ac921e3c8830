using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;
using BnCluster.Node.Commands;

namespace BnCluster.Node.Backends;

/// <summary>Figures of one `bench` run; times are means per measured step.</summary>
public sealed record BenchResult(
    double SamplesPerSecond, double MsPerStep, double ComputeMs, double BnWaitMs, double GradExchangeMs,
    int Gen0, int Gen1, int Gen2, double AllocatedBytesPerStep, double PeakRssMb,
    int Workers, int Threads, int Batch, IReadOnlyList<int> Hidden);

/// <summary>
/// `bncluster bench` in one process: the training step (forward, backward, optimizer, running averages) on
/// random data of the given shape or on a dataset's training split, warm-up steps excluded from every figure.
/// </summary>
public static class BenchBackend
{
    public const int WarmupSteps = 3;

    public static async Task<int> RunAsync(BenchOptions options, CliContext context, CancellationToken cancel)
    {
        if (options.Workers > 1 || options.Processes)
        {
            context.Error.WriteLine($"bncluster: --workers {options.Workers}: the in-process cluster is not available in this build; use --workers 1");
            return Cli.ExitUsage;
        }
        var data = options.Dataset is { } spec
            ? NormalizedTrainSplit(spec)
            : Synthetic(options.Features, options.Classes, Math.Max(options.Batch * 4, 1024), seed: 1);
        var result = await MeasureAsync(data, options.HiddenSizes, options.Batch, options.Steps, options.Threads, cancel, TrainBackend.ToOptimizerSettings(options.Optimizer, options.LearningRate)).ConfigureAwait(false);
        if (options.Json) context.Out.WriteLine(ToJson(result));
        else
            context.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{result.SamplesPerSecond:F0} samples/s, {result.MsPerStep:F2} ms/step (batch {result.Batch}, hidden {string.Join(',', result.Hidden)}, {result.Threads} thread(s)); GC gen0/gen1/gen2 {result.Gen0}/{result.Gen1}/{result.Gen2}, {result.AllocatedBytesPerStep:F0} bytes allocated/step, peak working set {result.PeakRssMb:F0} MB"));
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

    public static async Task<BenchResult> MeasureAsync(Dataset data, IReadOnlyList<int> hidden, int batch, int steps, int threads, CancellationToken cancel,
        OptimizerSettings? optimizerSettings = null)
    {
        var spec = new NetworkSpec(data.FeatureCount, hidden.ToArray(), data.ClassCount, Activation.Relu, BatchNormPlacement.Before, 1e-5f, 0.1f);
        var p = Parameters.Initialize(spec, 1);
        var optimizer = new Optimizer(optimizerSettings ?? new OptimizerSettings(OptimizerKind.Adam, 1e-3f), p);
        using var matMul = new MatMul(threads);
        int rowsPerStep = Math.Min(batch, data.Count);
        var ws = new Workspace(p, rowsPerStep, matMul);
        // One epoch plan per pass over the data; plans are made before timing so no step allocates them.
        int epoch = 1, b = 0;
        var plan = new EpochPlan(data.Count, batch, 1, epoch);

        async Task Step()
        {
            if (b == plan.BatchCount) { plan = new EpochPlan(data.Count, batch, 1, ++epoch); b = 0; }
            var rows = plan.Batch(b++);
            await TrainingStep.ForwardBackwardAsync(p, ws, data, rows, rows.Length, LocalCollective.Instance, cancel).ConfigureAwait(false);
            optimizer.Apply(p, ws.Gradients);
            TrainingStep.UpdateRunningStats(p, ws);
        }

        for (int i = 0; i < WarmupSteps; i++) await Step().ConfigureAwait(false);
        int gen0 = GC.CollectionCount(0), gen1 = GC.CollectionCount(1), gen2 = GC.CollectionCount(2);
        long allocated = GC.GetTotalAllocatedBytes(true);
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < steps; i++) await Step().ConfigureAwait(false);
        clock.Stop();
        long allocatedAfter = GC.GetTotalAllocatedBytes(true);
        int dGen0 = GC.CollectionCount(0) - gen0, dGen1 = GC.CollectionCount(1) - gen1, dGen2 = GC.CollectionCount(2) - gen2;
        double msPerStep = clock.Elapsed.TotalMilliseconds / steps;
        using var process = Process.GetCurrentProcess();
        return new BenchResult(
            SamplesPerSecond: steps * (double)rowsPerStep / clock.Elapsed.TotalSeconds,
            MsPerStep: msPerStep, ComputeMs: msPerStep, BnWaitMs: 0, GradExchangeMs: 0,
            dGen0, dGen1, dGen2, (allocatedAfter - allocated) / (double)steps,
            process.PeakWorkingSet64 / (1024.0 * 1024.0), Workers: 1, threads, batch, hidden);
    }

    public static string ToJson(BenchResult r)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteNumber("samples_per_second", r.SamplesPerSecond);
            json.WriteNumber("ms_per_step", r.MsPerStep);
            json.WriteNumber("compute_ms", r.ComputeMs);
            json.WriteNumber("bn_wait_ms", r.BnWaitMs);
            json.WriteNumber("grad_exchange_ms", r.GradExchangeMs);
            json.WriteNumber("gen0", r.Gen0);
            json.WriteNumber("gen1", r.Gen1);
            json.WriteNumber("gen2", r.Gen2);
            json.WriteNumber("allocated_bytes_per_step", r.AllocatedBytesPerStep);
            json.WriteNumber("peak_rss_mb", r.PeakRssMb);
            json.WriteNumber("workers", r.Workers);
            json.WriteNumber("threads", r.Threads);
            json.WriteNumber("batch", r.Batch);
            json.WriteStartArray("hidden");
            foreach (int h in r.Hidden) json.WriteNumberValue(h);
            json.WriteEndArray();
            json.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }
}
