using Akka.Event;

namespace BnCluster.Coordinator;

/// <summary>
/// Akka's logger before the run's Serilog logger starts and after it stops (cluster.hocon's stdout-logger-class): its
/// warnings and errors on standard error, nothing else. Akka's own StandardOutLogger wrote "Remoting shut down" to
/// standard output at every shutdown, into the JSON that `bench --json` prints there.
/// </summary>
public sealed class StandardErrorLogger : MinimalLogger
{
    protected override void Log(object message)
    {
        if (message is LogEvent e && e.LogLevel() >= LogLevel.WarningLevel)
            Console.Error.WriteLine($"[{e.LogLevel().ToString().Replace("Level", "", StringComparison.Ordinal).ToUpperInvariant()}] [{e.LogSource}] {e.Message}");
    }
}
