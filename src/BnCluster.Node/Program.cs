using System.Runtime.InteropServices;
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
        // Ctrl+C and SIGTERM (a service manager stopping the process) both cancel the run: it stops its actors, worker
        // processes and logs as a finished run does, and exits 130 or 143 instead of being killed mid-write.
        int signalExit = 0;
        void Stop(PosixSignalContext context)
        {
            context.Cancel = true;
            Interlocked.CompareExchange(ref signalExit, context.Signal == PosixSignal.SIGTERM ? Cli.ExitTerminated : Cli.ExitCancelled, 0);
            cancel.Cancel();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        int exit = Cli.Run(args, Console.Out, Console.Error, Backends, cancel.Token);
        return exit == Cli.ExitCancelled && Volatile.Read(ref signalExit) != 0 ? Volatile.Read(ref signalExit) : exit;
    }
}
