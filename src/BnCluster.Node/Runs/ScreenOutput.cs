using System.Globalization;
using System.Text;
using Serilog.Core;
using Serilog.Events;
using Serilog.Formatting.Display;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace BnCluster.Node;

/// <summary>
/// Text printed while the live display runs. Written through its console, Spectre's render hook puts it where the live
/// rows were and draws them again below it. Each of its lines erases the rest of the rows it covers (a line shorter
/// than the bar would otherwise leave the bar's tail next to it), and is not wrapped by Spectre: the terminal wraps it,
/// so it stays one line to copy (and to tmux's capture-pane -J). Erasing goes line by line ("erase in line"), not
/// "erase below": at the top of the screen that is a whole-screen clear, which tmux scrolls into its history.
/// </summary>
internal sealed class ScreenLine(IRenderable content) : IRenderable
{
    private static readonly Segment EraseLine = Segment.Control("\u001b[K");
    private const int NoWrap = 1 << 20;

    public Measurement Measure(RenderOptions options, int maxWidth) => content.Measure(options, maxWidth);

    public IEnumerable<Segment> Render(RenderOptions options, int maxWidth)
    {
        int cells = 0;
        yield return EraseLine;
        foreach (var segment in content.Render(options, NoWrap))
        {
            if (segment.IsLineBreak)
            {
                foreach (var end in EndLine(cells, maxWidth)) yield return end;
                yield return EraseLine;
                cells = 0;
                continue;
            }
            cells += segment.CellCount();
            yield return segment;
        }
        foreach (var end in EndLine(cells, maxWidth)) yield return end;
    }

    // A line that ends exactly at the right margin leaves the cursor on its last character; erasing there would take it.
    private static IEnumerable<Segment> EndLine(int cells, int width) =>
        cells % Math.Max(1, width) == 0 && cells > 0 ? [Segment.LineBreak] : [EraseLine, Segment.LineBreak];
}

/// <summary>The run's console log lines (RunLogging.ConsoleTemplate, level in colour) printed above the live display.</summary>
internal sealed class ScreenLogSink(IAnsiConsole screen) : ILogEventSink
{
    private readonly MessageTemplateTextFormatter _message = new("{Message:lj}{NewLine}{Exception}", CultureInfo.InvariantCulture);

    public void Emit(LogEvent logEvent)
    {
        var message = new StringWriter(CultureInfo.InvariantCulture);
        _message.Format(logEvent, message);
        var (level, colour) = logEvent.Level switch
        {
            LogEventLevel.Verbose => ("VRB", "grey"),
            LogEventLevel.Debug => ("DBG", "grey"),
            LogEventLevel.Information => ("INF", "default"),
            LogEventLevel.Warning => ("WRN", "yellow"),
            LogEventLevel.Error => ("ERR", "red"),
            _ => ("FTL", "red"),
        };
        string time = logEvent.Timestamp.ToString("HH:mm:ss", CultureInfo.InvariantCulture);
        screen.Write(new ScreenLine(new Markup($"[grey]{time}[/] [{colour}]{level}[/] {Markup.Escape(message.ToString().TrimEnd())}")));
    }
}

/// <summary>Console.Out/Error while the live display runs: whole lines, printed above it (a partial line waits for its end).</summary>
internal sealed class ScreenWriter(IAnsiConsole screen) : TextWriter
{
    private readonly StringBuilder _line = new();

    public override Encoding Encoding => Encoding.UTF8;

    public override void Write(char value)
    {
        lock (_line)
        {
            if (value == '\n') Emit();
            else if (value != '\r') _line.Append(value);
        }
    }

    public override void Write(string? value)
    {
        if (value is null) return;
        lock (_line)
            foreach (char c in value) Write(c);
    }

    public override void Write(char[] buffer, int index, int count) => Write(new string(buffer, index, count));

    private void Emit()
    {
        screen.Write(new ScreenLine(new Text(_line.ToString())));
        _line.Clear();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            lock (_line)
                if (_line.Length > 0) Emit();
        base.Dispose(disposing);
    }
}
