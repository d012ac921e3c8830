using Serilog;
using Serilog.Configuration;
using Serilog.Core;
using Serilog.Events;
using Serilog.Formatting.Compact;
using Serilog.Formatting.Display;
using Serilog.Sinks.SystemConsole.Themes;

namespace BnCluster.Node.Logging;

/// <summary>
/// Serilog for a run: a concise human console sink (Information and above unless --log-level, on stderr so that stdout
/// keeps progress and results; on a terminal with a live display, printed above its bar instead) and, with a run folder, log.jsonl — CLEF, one event per line (CompactJsonFormatter:
/// @t, @mt, @r, @l, @x, properties at the top level, so Seq, clef-tool and jq read it) at Debug and above, written
/// on a background thread (Sinks.Async). Dispose the logger at the end of the run to flush the file.
/// </summary>
public static class RunLogging
{
    public const string ConsoleTemplate = "{Timestamp:HH:mm:ss} {Level:u3} {Message:lj}{NewLine}{Exception}";

    /// <param name="logFilePath">log.jsonl to write, or null for console only.</param>
    /// <param name="node">Value of the Node property on every event (e.g. "coordinator", "worker-2@host").</param>
    /// <param name="console">Writer for the human lines instead of the process console (tests); plain text.</param>
    /// <param name="consoleLevel">Lowest level shown on the console (--log-level); log.jsonl keeps Debug and above whatever it is.</param>
    /// <param name="screen">Sink for the human lines instead of a console (the live display's, which prints them above its bar).</param>
    public static Logger Create(string? logFilePath, string node, TextWriter? console = null,
        LogEventLevel consoleLevel = LogEventLevel.Information, ILogEventSink? screen = null)
    {
        var config = new LoggerConfiguration()
            .MinimumLevel.Is(consoleLevel < LogEventLevel.Debug ? consoleLevel : LogEventLevel.Debug)
            .Enrich.WithProperty(LogEvents.Node, node);
        // Every sink sees Akka's positional events (from Akka.Logger.Serilog) already rewritten to plain text.
        config.WriteTo.Sink(LoggerSinkConfiguration.Wrap(sinks => new PositionalTemplateRewritingSink(sinks), writeTo =>
        {
            // Akka's own information (remoting started, members joining, leader changes) goes to the file only: on the
            // console it would bury the run's lines. Its warnings and errors show (and everything with --log-level debug).
            writeTo.Logger(human =>
            {
                human.MinimumLevel.Is(consoleLevel); // a sub-logger's own minimum is Information otherwise
                human.Filter.ByExcluding(e => e.Level < LogEventLevel.Warning && consoleLevel >= LogEventLevel.Information && IsAkkas(e));
                if (screen is not null)
                    human.WriteTo.Sink(screen, consoleLevel);
                else if (console is not null)
                    human.WriteTo.Sink(new TextWriterSink(console), consoleLevel);
                else
                {
                    // Colours only on a terminal; redirected output gets plain lines.
                    bool terminal = !Console.IsErrorRedirected;
                    human.WriteTo.Console(consoleLevel, ConsoleTemplate, System.Globalization.CultureInfo.InvariantCulture,
                        standardErrorFromLevel: LogEventLevel.Verbose,
                        theme: terminal ? AnsiConsoleTheme.Code : ConsoleTheme.None);
                }
            });
            if (logFilePath is not null)
                // Buffered file, flushed every second and on Dispose; the async queue blocks rather than
                // drops when full, because `bncluster logs` sums these events and must not undercount.
                writeTo.Async(a => a.File(new CompactJsonFormatter(), logFilePath, LogEventLevel.Debug,
                        buffered: true, flushToDiskInterval: TimeSpan.FromSeconds(1)),
                    bufferSize: 100_000, blockWhenFull: true);
        }));
        return config.CreateLogger();
    }

    /// <summary>An event of Akka.NET itself (Akka.Logger.Serilog names the logging class as its SourceContext).</summary>
    public static bool IsAkkas(LogEvent e) =>
        e.Properties.TryGetValue(Constants.SourceContextPropertyName, out var source) && source is ScalarValue { Value: string name }
        && name.StartsWith("Akka.", StringComparison.Ordinal);
}

/// <summary>
/// Plain console-style lines to a TextWriter (tests, bench's stderr). Serilog 4's core has no TextWriter sink and
/// Sinks.Console 6 writes only to the process console; the separate Serilog.Sinks.TextWriter package is not worth a
/// dependency for these few lines.
/// </summary>
internal sealed class TextWriterSink(TextWriter output) : ILogEventSink
{
    private readonly MessageTemplateTextFormatter _formatter =
        new(RunLogging.ConsoleTemplate, System.Globalization.CultureInfo.InvariantCulture);
    private readonly object _lock = new();

    public void Emit(LogEvent logEvent)
    {
        lock (_lock)
        {
            _formatter.Format(logEvent, output);
            output.Flush();
        }
    }
}
