using BnCluster.Node.Backends;
using BnCluster.Node.Commands;

namespace BnCluster.Node;

public static class Program
{
    /// <summary>Trains `train --workers K` for K &gt; 1 (the in-process cluster, issue 4); null until it is merged.</summary>
    internal static ClusterTrainer? ClusterTrainer => null;

    /// <summary>The command backends of this build.</summary>
    internal static CliBackends Backends { get; } = NodeBackends.Create(ClusterTrainer);

    public static int Main(string[] args)
    {
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };
        return Cli.Run(args, Console.Out, Console.Error, Backends, cancel.Token);
    }
}
