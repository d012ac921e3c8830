using BnCluster.Node.Commands;

namespace BnCluster.Node.Backends;

/// <summary>The real command backends of this build (single node). Coordinator and worker are not wired yet.</summary>
public static class NodeBackends
{
    /// <param name="cluster">Trainer for `train --workers K` with K &gt; 1; null = not in this build (exit 2 with one line).</param>
    public static CliBackends Create(ClusterTrainer? cluster = null) => new()
    {
        Train = (options, context, cancel) => TrainBackend.RunAsync(options, context, cluster, cancel),
        Eval = ModelBackends.Eval,
        Predict = ModelBackends.Predict,
        Bench = BenchBackend.RunAsync,
    };
}
