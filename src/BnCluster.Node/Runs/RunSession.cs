using BnCluster.Node.Logging;
using Serilog.Core;

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

    /// <summary>Creates the folder, a logger for node "coordinator" (console: the process console) and a console progress display.</summary>
    public static RunSession Start(string outDirectory, int epochs, string node = "coordinator")
    {
        var folder = RunFolder.Create(outDirectory);
        var log = RunLogging.Create(folder.LogPath, node);
        return new RunSession(folder, log, TrainingProgress.ForConsole(epochs));
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
        Log.EpochCompleted(metrics);
        Progress.OnEpoch(metrics);
    }

    /// <summary>Writes model.bnc atomically (the writer gets a stream on a temporary file).</summary>
    public void SaveModel(Action<Stream> write) => Folder.WriteAtomic(RunFolder.ModelFileName, write);

    public void Dispose()
    {
        Steps?.Dispose();
        Progress.Dispose();
        Log.Dispose();
    }
}
