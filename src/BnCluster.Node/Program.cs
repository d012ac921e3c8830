using BnCluster.Actors.Remote;
using BnCluster.Coordinator;
using BnCluster.Node.Backends;
using BnCluster.Node.Cluster;
using BnCluster.Node.Commands;

namespace BnCluster.Node;

public static class Program
{
    /// <summary>Trains `train --workers K` for K &gt; 1: a coordinator and K worker actors in this process.</summary>
    internal static ClusterTrainer ClusterTrainer { get; } = (request, cancel) =>
    {
        int workers = request.Options.Workers;
        // The workers share this process's cores: split the kernel threads between them rather than oversubscribe.
        var perWorker = request.TrainerOptions with { Threads = Math.Max(1, request.TrainerOptions.Threads / workers) };
        var options = new ClusterTrainingOptions(perWorker, workers, request.Options.MinWorkers, DatasetSha256: request.Data.Sha256)
        {
            SharedMemory = request.Options.SharedMemory,
            ShardedUpdate = request.Options.ShardedUpdate,
        };
        return ClusterTraining.RunAsync(options, request.Data.Train, request.Data.Test, request.EpochProgress, request.Log,
            cancel, request.BatchProgress);
    };

    /// <summary>The command backends of this build.</summary>
    internal static CliBackends Backends { get; } = NodeBackends.Create(ClusterTrainer, ClusterBackends.LocalProcesses);

    public static int Main(string[] args)
    {
        InlineSocketCompletions.Prefer(); // before any socket exists (and inherited by the worker processes this one starts)
        ThreadPoolSpinning.AvoidWhenSharingCores(args); // before the thread pool starts (inherited as well)
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };
        return Cli.Run(args, Console.Out, Console.Error, Backends, cancel.Token);
    }
}
