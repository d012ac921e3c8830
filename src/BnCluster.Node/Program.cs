using BnCluster.Node.Commands;

namespace BnCluster.Node;

public static class Program
{
    /// <summary>Backends the lead wires in (trainer, cluster); null delegates report "not available".</summary>
    internal static CliBackends Backends { get; } = new();

    public static int Main(string[] args)
    {
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };
        return Cli.Run(args, Console.Out, Console.Error, Backends, cancel.Token);
    }
}
