using System.Diagnostics;
using System.Globalization;
using Serilog.Core;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace BnCluster.Node;

/// <summary>
/// What the user sees while training. On a terminal (live): one bar per epoch — step x/N, ETA, running loss,
/// accuracy and samples/s — redrawn in place by Spectre.Console; when an epoch ends its final bar is printed as a
/// line of its own and the next epoch's bar starts below it. Lines from elsewhere (the log, see
/// <see cref="TakeOverConsole"/>) are printed above the bar, never into it. Redirected (a file, a pipe, CI): only a
/// batch line at most every <c>plainInterval</c> (10 s by default) so long epochs still show life; the one line per
/// epoch there is the log's "Epoch N done" line. Called from the training loop only (one thread).
/// </summary>
public sealed class TrainingProgress : IDisposable
{
    private readonly TextWriter _output;
    private readonly int _epochs;
    private readonly TimeSpan _plainInterval;
    private readonly Func<TimeSpan> _clock;
    private TimeSpan _lastPlainLine;

    // Live mode: Spectre's display runs on its own task until Dispose; it shows the bar of the epoch in progress only
    // (HideCompleted), so it stays a few rows high however many epochs there are.
    private readonly IAnsiConsole? _screen;
    private readonly TaskCompletionSource<ProgressContext>? _context;
    private readonly TaskCompletionSource? _finish;
    private readonly Task? _display;
    private ProgressTask? _task;
    private volatile Bar? _bar; // read by the display's refresh thread
    private TimeSpan? _epochStart;
    private static readonly TimeSpan PublishInterval = TimeSpan.FromMilliseconds(50);
    private TimeSpan _lastPublished;
    private int _stepsBeforeStart;
    private ScreenWriter? _consoleOut, _consoleError;
    private TextWriter? _originalOut, _originalError;

    public bool Interactive { get; }

    /// <summary>The state one bar row shows. Remaining: the ETA while running; Took: the epoch's time once finished.</summary>
    internal sealed record Bar(int Epoch, int Step, int Steps, TimeSpan? Remaining, TimeSpan? Took, double Loss, double Accuracy, double SamplesPerSecond);

    /// <summary>For the process console: live when stdout is a terminal that Spectre can drive with ANSI codes.</summary>
    public static TrainingProgress ForConsole(int epochs) =>
        new(Console.Out, !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities is { Interactive: true, Ansi: true }, epochs);

    /// <summary>No progress at all (--quiet).</summary>
    public static TrainingProgress None(int epochs) => new(TextWriter.Null, interactive: false, epochs);

    /// <param name="interactive">Live bars (ANSI codes) on <paramref name="output"/>; else plain lines.</param>
    /// <param name="clock">Elapsed time source (tests); default a stopwatch started now.</param>
    public TrainingProgress(TextWriter output, bool interactive, int epochs, TimeSpan? plainInterval = null, Func<TimeSpan>? clock = null)
    {
        _output = output;
        _epochs = epochs;
        _plainInterval = plainInterval ?? TimeSpan.FromSeconds(10);
        var stopwatch = Stopwatch.StartNew();
        _clock = clock ?? (() => stopwatch.Elapsed);
        _lastPlainLine = _clock();
        Interactive = interactive;
        if (!interactive) return;

        var screen = _screen = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output),
            Ansi = AnsiSupport.Yes,
            Interactive = InteractionSupport.Yes,
        });
        _context = new TaskCompletionSource<ProgressContext>(TaskCreationOptions.RunContinuationsAsynchronously);
        _finish = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var context = _context;
        var finish = _finish;
        // AutoClear: at the end the live rows go; every finished epoch's bar is already printed above them.
        _display = Task.Run(() => screen.Progress()
            .AutoClear(true)
            .HideCompleted(true)
            .Columns(new BarColumn(this))
            .StartAsync(async ctx =>
            {
                context.SetResult(ctx);
                await finish.Task.ConfigureAwait(false);
            }));
    }

    /// <summary>
    /// Live mode: from now until Dispose, lines written to Console.Out and Console.Error (Akka's fallback logger, anything
    /// else) are printed above the bar instead of into it; returns the sink that prints the run's log lines there too.
    /// Null in plain mode.
    /// </summary>
    public ILogEventSink? TakeOverConsole()
    {
        if (_screen is null) return null;
        if (_consoleOut is null)
        {
            _originalOut = Console.Out;
            _originalError = Console.Error;
            Console.SetOut(_consoleOut = new ScreenWriter(_screen));
            Console.SetError(_consoleError = new ScreenWriter(_screen));
        }
        return new ScreenLogSink(_screen);
    }

    /// <summary>After each step. batchInEpoch counts from 1 to batchesInEpoch; loss/accuracy are running values.</summary>
    public void OnBatch(int epoch, long step, int batchInEpoch, int batchesInEpoch, double loss, double accuracy, double samplesPerSecond)
    {
        if (Interactive)
        {
            bool newEpoch = _task is null || _bar?.Epoch != epoch;
            if (newEpoch) StartBar(epoch, batchInEpoch);
            var now = _clock();
            // The display redraws about ten times a second: a new snapshot for it at most every 50 ms keeps the step
            // loop from allocating one per step.
            if (!newEpoch && batchInEpoch < batchesInEpoch && now - _lastPublished < PublishInterval) return;
            _lastPublished = now;
            int timed = batchInEpoch - _stepsBeforeStart;
            TimeSpan? remaining = timed > 0 ? (now - _epochStart!.Value) / timed * (batchesInEpoch - batchInEpoch) : null;
            _bar = new Bar(epoch, batchInEpoch, batchesInEpoch, remaining, null, loss, accuracy, samplesPerSecond);
            return;
        }
        var time = _clock();
        if (time - _lastPlainLine < _plainInterval) return;
        _lastPlainLine = time;
        _output.WriteLine(Invariant($"epoch {epoch}/{_epochs} step {step} ({batchInEpoch}/{batchesInEpoch}): loss {N(loss, "F4")} accuracy {P(accuracy)} {N(samplesPerSecond, "F0")} samples/s"));
        _output.Flush();
    }

    /// <summary>When an epoch has finished and been evaluated. Plain mode prints nothing: the log's epoch line is the record.</summary>
    public void OnEpoch(EpochMetrics m)
    {
        var now = _clock();
        if (!Interactive)
        {
            _lastPlainLine = now;
            return;
        }
        var last = _bar is { } b && b.Epoch == m.Epoch ? b : null;
        var final = new Bar(m.Epoch, last?.Steps ?? 0, last?.Steps ?? 0, null, now - (_epochStart ?? now),
            m.TrainLoss, m.TrainAccuracy, m.SamplesPerSecond);
        FinishBar(final);
        // The next epoch's time runs from here (its test evaluation and the files of this one are the gap).
        _epochStart = now;
        _stepsBeforeStart = 0;
    }

    private void StartBar(int epoch, int batchInEpoch)
    {
        if (_task is not null && _bar is { } unfinished) FinishBar(unfinished);
        if (_epochStart is null)
        {
            // The first report of the run: its step's time is unknown, so the ETA counts from this step on.
            _epochStart = _clock();
            _stepsBeforeStart = batchInEpoch;
        }
        _bar = null;
        _task = Context().AddTask(Invariant($"epoch {epoch}"), autoStart: true, maxValue: 1);
    }

    /// <summary>Takes the bar out of the live rows and prints its final state above them, once.</summary>
    private void FinishBar(Bar final)
    {
        _bar = final;
        if (_task is not null)
        {
            _task.StopTask();
            Context().Refresh(); // the live rows without it, before its line is printed above them
            _task = null;
        }
        _screen!.Write(new ScreenLine(new Markup(Row(final, _epochs, _screen.Profile.Capabilities.Unicode, _screen.Profile.Width))));
    }

    private ProgressContext Context()
    {
        // The display task hands over its context at once; a timeout here means Spectre failed to start.
        if (!_context!.Task.Wait(TimeSpan.FromSeconds(10)))
            throw new InvalidOperationException("progress display did not start");
        return _context.Task.Result;
    }

    /// <summary>
    /// One bar as Spectre markup, at most <paramref name="width"/> − 1 columns (a full-width line would make the terminal
    /// wrap): "epoch 2/8 ━━━━━━━━━━━━━━ 7/14 ETA 4.2s loss 0.4321 acc 87.50% 5123 samples/s".
    /// </summary>
    internal static string Row(Bar bar, int epochs, bool unicode, int width)
    {
        string head = Invariant($"epoch {bar.Epoch}/{epochs} ");
        string steps = Invariant($" {bar.Step}/{bar.Steps} ");
        string time = bar.Took is { } took ? "took " + Clock(took) : "ETA " + (bar.Remaining is { } eta ? Clock(eta) : "-:--");
        string tail = steps + time + Invariant($" loss {N(bar.Loss, "F4")} acc {P(bar.Accuracy)} {N(bar.SamplesPerSecond, "F0")} samples/s");
        int room = Math.Max(0, width - 1 - head.Length - tail.Length);
        int barWidth = Math.Clamp(room, 10, 40);
        int available = Math.Max(0, width - 1 - head.Length - barWidth);
        if (tail.Length > available) tail = tail[..available];
        int done = bar.Steps > 0 ? (int)Math.Round(barWidth * (double)Math.Min(bar.Step, bar.Steps) / bar.Steps) : 0;
        char glyph = unicode ? '━' : '-';
        string doneStyle = bar.Took is null ? "yellow" : "green";
        string filled = done > 0 ? $"[{doneStyle}]{new string(glyph, done)}[/]" : "";
        string rest = barWidth > done ? $"[grey]{new string(glyph, barWidth - done)}[/]" : "";
        return Markup.Escape(head) + filled + rest + Markup.Escape(tail);
    }

    /// <summary>Seconds with a tenth below a minute ("4.2s"), then m:ss, then h:mm:ss.</summary>
    internal static string Clock(TimeSpan t)
    {
        if (t < TimeSpan.Zero) t = TimeSpan.Zero;
        if (t.TotalSeconds < 59.95) return Invariant($"{t.TotalSeconds:F1}s");
        t = TimeSpan.FromSeconds(Math.Round(t.TotalSeconds));
        return t.TotalHours >= 1
            ? Invariant($"{(int)t.TotalHours}:{t.Minutes:00}:{t.Seconds:00}")
            : Invariant($"{t.Minutes}:{t.Seconds:00}");
    }

    /// <summary>The display's only column: the row of the epoch in progress.</summary>
    private sealed class BarColumn(TrainingProgress owner) : ProgressColumn
    {
        protected override bool NoWrap => true;

        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime) =>
            owner._bar is { } bar
                ? new Markup(Row(bar, owner._epochs, options.Unicode, options.ConsoleSize.Width))
                : new Text(task.Description);
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
    private static string N(double v, string format) => double.IsFinite(v) ? v.ToString(format, CultureInfo.InvariantCulture) : "n/a";
    private static string P(double v) => double.IsFinite(v) ? (v * 100).ToString("F2", CultureInfo.InvariantCulture) + "%" : "n/a";

    public void Dispose()
    {
        if (_finish is null) return;
        try
        {
            // A run that stopped inside an epoch (cancelled, --max-steps) keeps its last bar on the screen.
            if (_task is not null && _bar is { } unfinished) FinishBar(unfinished);
        }
        finally
        {
            // Whatever happened above, the console is given back and the display's task ends.
            if (_consoleOut is not null)
            {
                Console.SetOut(_originalOut!);
                Console.SetError(_originalError!);
                _consoleOut.Dispose();
                _consoleError!.Dispose();
            }
            _finish.TrySetResult();
            if (!_display!.Wait(TimeSpan.FromSeconds(10)))
                _output.WriteLine("bncluster: progress display did not stop");
        }
    }
}
