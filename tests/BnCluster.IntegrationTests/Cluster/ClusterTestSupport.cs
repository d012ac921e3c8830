using Xunit;
using System.Collections.Concurrent;
using BnCluster.Coordinator;
using BnCluster.Core.Data;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;
using Serilog;
using Serilog.Core;
using Serilog.Events;

namespace BnCluster.IntegrationTests.Cluster;

/// <summary>Collects Serilog events in memory.</summary>
internal sealed class CollectingSink : ILogEventSink
{
    public ConcurrentQueue<LogEvent> Events { get; } = new();
    public void Emit(LogEvent logEvent) => Events.Enqueue(logEvent);

    public ILogger CreateLogger() => new LoggerConfiguration().MinimumLevel.Debug().WriteTo.Sink(this).CreateLogger();

    public IEnumerable<LogEvent> WithPhase(string phase) =>
        Events.Where(e => e.Properties.TryGetValue("Phase", out var p) && p is ScalarValue { Value: string s } && s == phase);
}

/// <summary>An IProgress that reports on the caller's thread (Progress&lt;T&gt; would post to the pool).</summary>
internal sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}

internal static class ClusterFixtures
{
    /// <summary>A tiny 3-class problem whose features have |μ| ≫ σ in places (exercises the merges).</summary>
    public static Dataset Data(string name, int rows, int seed)
    {
        const int features = 8;
        var rng = new Random(seed);
        var x = new float[rows * features];
        var y = new int[rows];
        for (int i = 0; i < rows; i++)
        {
            y[i] = rng.Next(3);
            for (int j = 0; j < features; j++)
                x[i * features + j] = (float)(rng.NextDouble() * 2 - 1 + (j == y[i] ? 1.5 : 0) + (j == 7 ? 40 : 0));
        }
        return new Dataset(name, x, y, features, ["a", "b", "c"]);
    }

    public static TrainerOptions Trainer(BatchNormPlacement placement = BatchNormPlacement.Before, long maxSteps = 20) =>
        new(new NetworkSpec(8, [12, 7], 3, Activation.Relu, placement), new OptimizerSettings(OptimizerKind.Adam, 0.01f),
            BatchSize: 13, Epochs: 5, MaxSteps: maxSteps, Seed: 7);

    public static ClusterTrainingOptions ClusterOptions(TrainerOptions trainer, int workers, int minWorkers = 1) =>
        new(trainer, workers, minWorkers, TimeSpan.FromSeconds(20));

    /// <summary>Every tensor of a model: trainable, then running averages.</summary>
    public static IEnumerable<(string Name, float[] Values)> AllTensors(Parameters p)
    {
        foreach (var t in p.Trainable) yield return (t.Name, t.Values);
        for (int l = 0; l < p.HiddenLayers; l++)
        {
            if (p.RunningMean[l] is { } m) yield return ($"layer{l}.running_mean", m);
            if (p.RunningVar[l] is { } v) yield return ($"layer{l}.running_var", v);
        }
    }

    /// <summary>‖a − b‖ / ‖a‖ per tensor must stay within <paramref name="tolerance"/>.</summary>
    public static void AssertClose(Parameters expected, Parameters actual, double tolerance)
    {
        var e = AllTensors(expected).ToList();
        var a = AllTensors(actual).ToList();
        Assert.Equal(e.Count, a.Count);
        for (int i = 0; i < e.Count; i++)
        {
            double diff = 0, norm = 0;
            for (int k = 0; k < e[i].Values.Length; k++)
            {
                double d = (double)e[i].Values[k] - a[i].Values[k];
                diff += d * d;
                norm += (double)e[i].Values[k] * e[i].Values[k];
            }
            double rel = Math.Sqrt(diff) / Math.Max(Math.Sqrt(norm), 1e-12);
            Assert.True(rel <= tolerance, $"{e[i].Name}: relative difference {rel:E3} > {tolerance:E1}");
        }
    }

    public static void AssertBitwiseEqual(Parameters expected, Parameters actual)
    {
        var e = AllTensors(expected).ToList();
        var a = AllTensors(actual).ToList();
        for (int i = 0; i < e.Count; i++)
            Assert.True(e[i].Values.AsSpan().SequenceEqual(a[i].Values), $"{e[i].Name} differs");
    }
}
