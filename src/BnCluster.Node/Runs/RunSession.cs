using BnCluster.Node.Logging;
using Serilog.Core;
using Serilog.Events;

namespace BnCluster.Node;

/// <summary>
/// The outputs of one training run wired together, for the train/coordinator backends: the run folder,
/// the Serilog logger (console + log.jsonl) and the progress display. RecordEpoch writes metrics.jsonl
/// and training.svg atomically, logs the epoch and updates the display. Dispose flushes the log.
/// </summary>
public sealed class RunSession : IDisposable
{
    public RunFolder Folder { get; }
    public Logger Log { get; }
    public TrainingProgress Progress { get; }
    /// <summary>steps.jsonl, once <see cref="WriteSteps"/> opened it (null: not written).</summary>
    public StepsLog? Steps { get; private set; }

    public RunSession(RunFolder folder, Logger log, TrainingProgress progress)
    {
        Folder = folder;
        Log = log;
        Progress = progress;
    }

    /// <summary>
    /// Creates the folder, a logger for node "coordinator" (console: the process console) and a console progress display.
    /// When the display is live and stderr is the terminal too, the log's console lines go through the display (above
    /// its bar). Quiet: no progress, errors only.
    /// </summary>
    public static RunSession Start(string outDirectory, int epochs, string node = "coordinator",
        LogEventLevel consoleLevel = LogEventLevel.Information, bool quiet = false)
    {
        var folder = RunFolder.Create(outDirectory);
        var progress = quiet ? TrainingProgress.None(epochs) : TrainingProgress.ForConsole(epochs);
        var screen = progress.Interactive && !Console.IsErrorRedirected ? progress.TakeOverConsole() : null;
        var log = RunLogging.Create(folder.LogPath, node, consoleLevel: quiet ? LogEventLevel.Error : consoleLevel, screen: screen);
        return new RunSession(folder, log, progress);
    }

    /// <summary>Opens steps.jsonl in the folder: every <paramref name="every"/>-th step from now on.</summary>
    public void WriteSteps(int every) => Steps = new StepsLog(Folder.StepsPath, every);

    public void RecordEpoch(EpochMetrics metrics)
    {
        if (Steps is not null)
        {
            Steps.Flush(); // an epoch's steps are on disk by the time its metrics are
            Folder.ChartSteps = Steps.Sampled;
        }
        Folder.AppendEpoch(metrics);
        Progress.OnEpoch(metrics); // on a terminal: the epoch's final bar, then the log line below it
        Log.EpochCompleted(metrics);
    }

    /// <summary>Writes model.bnc atomically (the writer gets a stream on a temporary file).</summary>
    public void SaveModel(Action<Stream> write) => Folder.WriteAtomic(RunFolder.ModelFileName, write);

    public void Dispose()
    {
        // Each part is closed even when one before it fails (a full disk when steps.jsonl writes its last lines).
        try { Steps?.Dispose(); }
        finally
        {
            try { Progress.Dispose(); }
            finally { Log.Dispose(); }
        }
    }
}
