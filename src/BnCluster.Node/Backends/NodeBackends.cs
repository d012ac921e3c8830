using BnCluster.Node.Commands;

namespace BnCluster.Node.Backends;

/// <summary>The real command backends of this build .</summary>
public static class NodeBackends
{
    /// <param name="cluster">Trainer for `train --workers K` with K &gt; 1; null = not in this build (exit 2 with one line).</param>
    /// <param name="processes">Trainer for `train --processes`; null = refused.</param>
    public static CliBackends Create(ClusterTrainer? cluster = null, ClusterTrainer? processes = null) => new()
    {
        Train = (options, context, cancel) => TrainBackend.RunAsync(options, context, cluster, cancel, processes),
        Coordinator = ClusterBackends.Coordinator,
        Worker = ClusterBackends.Worker,
        Eval = ModelBackends.Eval,
        Predict = ModelBackends.Predict,
        Export = ExportBackend.Export,
        Bench = (options, context, cancel) => BenchBackend.RunAsync(options, context, cancel, cluster, processes),
        Status = StatusBackend.RunAsync,
        Study = Study.StudyBackend.RunAsync,
    };
}
