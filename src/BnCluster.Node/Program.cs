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
        var options = new ClusterTrainingOptions(perWorker, workers, request.Options.MinWorkers, DatasetSha256: request.Data.Sha256);
        return ClusterTraining.RunAsync(options, request.Data.Train, request.Data.Test, request.EpochProgress, request.Log,
            cancel, request.BatchProgress);
    };

    /// <summary>The command backends of this build.</summary>
    internal static CliBackends Backends { get; } = NodeBackends.Create(ClusterTrainer, ClusterBackends.LocalProcesses);

    /// <summary>
    /// .NET runs a socket operation's continuation on a thread-pool thread unless this is "1"; then it runs on the thread
    /// that saw the socket ready. Remoting's continuations only decode a frame and queue it in a mailbox (never block), so
    /// inline they save a thread wake-up per message (measured on the 2-vCPU machine of 2026-12-02, runs alternated:
    /// loopback ask round trip p50 132 → 117 µs over 9 runs each; BN waits per step lower in 5 of 7 2-process bench
    /// runs). Read once, when the first socket is used; a value the user set wins.
    /// </summary>
    internal const string InlineSocketCompletions = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";

    public static int Main(string[] args)
    {
        // Before any socket exists (and inherited by the worker processes this one starts).
        if (Environment.GetEnvironmentVariable(InlineSocketCompletions) is null) Environment.SetEnvironmentVariable(InlineSocketCompletions, "1");
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };
        return Cli.Run(args, Console.Out, Console.Error, Backends, cancel.Token);
    }
}
