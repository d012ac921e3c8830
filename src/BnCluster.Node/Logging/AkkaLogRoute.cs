using Serilog;

namespace BnCluster.Node.Logging;

/// <summary>
/// Akka.Logger.Serilog (cluster.hocon's logger) writes Akka's own events to Serilog's static <see cref="Log.Logger"/>:
/// for the time of a run it is the run's logger, so Akka's events land in the same log.jsonl as the training's.
/// Disposing restores the previous one (the run's logger is disposed after the run).
/// </summary>
public sealed class AkkaLogRoute : IDisposable
{
    private readonly ILogger _previous;

    private AkkaLogRoute(ILogger run)
    {
        _previous = Log.Logger;
        Log.Logger = run;
    }

    public static AkkaLogRoute To(ILogger run) => new(run);

    public void Dispose() => Log.Logger = _previous;
}
