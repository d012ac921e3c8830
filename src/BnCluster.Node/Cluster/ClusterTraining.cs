using BnCluster.Coordinator;
using BnCluster.Core.Data;
using BnCluster.Core.Training;
using Serilog;

namespace BnCluster.Node.Cluster;

/// <summary>The entry point of `bncluster train --workers K`: the cluster counterpart of <see cref="Trainer"/>.</summary>
public static class ClusterTraining
{
    /// <summary>
    /// Trains on <paramref name="options"/>.Workers in-process workers (coordinator + worker actors in one
    /// ActorSystem) and returns the same <see cref="TrainingResult"/> as <see cref="Trainer.RunAsync"/>: with the
    /// same seed, batch and data the model equals the single-node one within float32 rounding (bit-identical for
    /// one worker and for repeated runs with the same worker count). Fails with the coordinator's error (e.g. a
    /// non-finite gradient twice in one step); cancellation shuts the actors down.
    /// </summary>
    public static Task<TrainingResult> RunAsync(ClusterTrainingOptions options, Dataset train, Dataset test,
        IProgress<Core.Training.EpochMetrics>? epochProgress, ILogger log, CancellationToken ct = default,
        IProgress<BatchProgress>? batchProgress = null) =>
        InProcessCluster.RunAsync(options, train, test, epochProgress, log, ct, batchProgress);
}
