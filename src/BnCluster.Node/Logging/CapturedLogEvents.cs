using Serilog.Core;
using Serilog.Events;
using Serilog.Formatting.Compact;

namespace BnCluster.Node.Logging;

/// <summary>
/// A Serilog sink that keeps every event in memory (`bench` reads its own run's step-phase events). Emit only
/// stores the reference, so the step loop pays no formatting; <see cref="WriteJsonLines"/> renders the kept events
/// as log.jsonl (CLEF) lines afterwards, for <see cref="LogSummary"/> to aggregate exactly as `bncluster logs` does.
/// </summary>
public sealed class CapturedLogEvents : ILogEventSink
{
    private readonly List<LogEvent> _events = [];
    private readonly object _gate = new();

    public void Emit(LogEvent logEvent)
    {
        lock (_gate) _events.Add(logEvent);
    }

    /// <summary>A copy of the events so far, in arrival order.</summary>
    public IReadOnlyList<LogEvent> Events { get { lock (_gate) return _events.ToArray(); } }

    /// <summary>The events <paramref name="include"/> accepts, one CLEF object per line (the format of log.jsonl).</summary>
    public void WriteJsonLines(TextWriter output, Func<LogEvent, bool> include)
    {
        var formatter = new CompactJsonFormatter();
        foreach (var e in Events)
            if (include(e)) formatter.Format(e, output);
    }

    /// <summary>The integer value of scalar property <paramref name="name"/>, or null when absent or not an integer.</summary>
    public static long? IntegerProperty(LogEvent e, string name) =>
        e.Properties.TryGetValue(name, out var value) && value is ScalarValue { Value: var v }
            ? v switch { int i => i, long l => l, short s => s, byte b => b, uint u => u, _ => null }
            : null;
}
