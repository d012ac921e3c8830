using System.Diagnostics;
using System.Globalization;
using Spectre.Console;

namespace BnCluster.Node;

/// <summary>
/// What the user sees while training. On a terminal: one Spectre.Console progress bar per epoch with
/// loss, accuracy and samples/s. Redirected (a file, a pipe, CI): plain lines — one per epoch, plus a
/// batch line at most every <c>plainInterval</c> (10 s by default) so long epochs still show life.
/// Called from the training loop only (one thread).
/// </summary>
public sealed class TrainingProgress : IDisposable
{
    private readonly TextWriter _output;
    private readonly int _epochs;
    private readonly TimeSpan _plainInterval;
    private readonly Func<TimeSpan> _clock;
    private TimeSpan _lastPlainLine;

    // Interactive mode: Spectre's live display runs on its own task until Dispose.
    private readonly TaskCompletionSource<ProgressContext>? _context;
    private readonly TaskCompletionSource? _finish;
    private readonly Task? _display;
    private readonly Dictionary<int, ProgressTask> _bars = new();

    public bool Interactive { get; }

    /// <summary>For the process console: interactive when stdout is a terminal that Spectre can drive.</summary>
    public static TrainingProgress ForConsole(int epochs) =>
        new(Console.Out, !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive, epochs);

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

        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output),
            Ansi = AnsiSupport.Detect,
            Interactive = InteractionSupport.Yes,
        });
        _context = new TaskCompletionSource<ProgressContext>(TaskCreationOptions.RunContinuationsAsynchronously);
        _finish = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var context = _context;
        var finish = _finish;
        _display = Task.Run(() => console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                new ElapsedTimeColumn())
            .StartAsync(async ctx =>
            {
                context.SetResult(ctx);
                await finish.Task.ConfigureAwait(false);
            }));
    }

    /// <summary>After each step. batchInEpoch counts from 1 to batchesInEpoch; loss/accuracy are running values.</summary>
    public void OnBatch(int epoch, long step, int batchInEpoch, int batchesInEpoch, double loss, double accuracy, double samplesPerSecond)
    {
        if (Interactive)
        {
            var bar = Bar(epoch, batchesInEpoch);
            bar.MaxValue = Math.Max(1, batchesInEpoch);
            bar.Value = Math.Min(batchInEpoch, bar.MaxValue);
            bar.Description = Markup.Escape(Invariant($"epoch {epoch}/{_epochs}  loss {N(loss, "F4")}  acc {P(accuracy)}  {N(samplesPerSecond, "F0")} samples/s"));
            return;
        }
        var now = _clock();
        if (now - _lastPlainLine < _plainInterval) return;
        _lastPlainLine = now;
        _output.WriteLine(Invariant($"epoch {epoch}/{_epochs} step {step} ({batchInEpoch}/{batchesInEpoch}): loss {N(loss, "F4")} accuracy {P(accuracy)} {N(samplesPerSecond, "F0")} samples/s"));
        _output.Flush();
    }

    /// <summary>When an epoch has finished and been evaluated.</summary>
    public void OnEpoch(EpochMetrics m)
    {
        string line = Invariant($"epoch {m.Epoch}/{_epochs} step {m.Step}: train loss {N(m.TrainLoss, "F4")} accuracy {P(m.TrainAccuracy)}, test loss {N(m.TestLoss, "F4")} accuracy {P(m.TestAccuracy)}, {N(m.SamplesPerSecond, "F0")} samples/s, {N(m.Seconds, "F1")} s");
        if (Interactive)
        {
            var bar = Bar(m.Epoch, 1);
            bar.Value = bar.MaxValue;
            // Short enough for an 80-column terminal next to the bar; the full line goes to the log.
            bar.Description = Markup.Escape(Invariant($"epoch {m.Epoch}/{_epochs}  loss {N(m.TrainLoss, "F4")} acc {P(m.TrainAccuracy)}  test {N(m.TestLoss, "F4")} acc {P(m.TestAccuracy)}"));
            bar.StopTask();
            return;
        }
        _lastPlainLine = _clock();
        _output.WriteLine(line);
        _output.Flush();
    }

    private ProgressTask Bar(int epoch, int batchesInEpoch)
    {
        if (_bars.TryGetValue(epoch, out var bar)) return bar;
        // The display task hands over its context at once; a timeout here means Spectre failed to start.
        if (!_context!.Task.Wait(TimeSpan.FromSeconds(10)))
            throw new InvalidOperationException("progress display did not start");
        bar = _context.Task.Result.AddTask(Invariant($"epoch {epoch}/{_epochs}"), autoStart: true, maxValue: Math.Max(1, batchesInEpoch));
        _bars[epoch] = bar;
        return bar;
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
    private static string N(double v, string format) => double.IsFinite(v) ? v.ToString(format, CultureInfo.InvariantCulture) : "n/a";
    private static string P(double v) => double.IsFinite(v) ? (v * 100).ToString("F2", CultureInfo.InvariantCulture) + "%" : "n/a";

    public void Dispose()
    {
        if (_finish is null) return;
        _finish.TrySetResult();
        if (!_display!.Wait(TimeSpan.FromSeconds(10)))
            _output.WriteLine("bncluster: progress display did not stop");
    }
}
