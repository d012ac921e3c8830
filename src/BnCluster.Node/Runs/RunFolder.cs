using System.Text;
using System.Text.Json;
using BnCluster.Core.Model;
using BnCluster.Node.Commands;

namespace BnCluster.Node;

/// <summary>One line of metrics.jsonl: the figures of one finished epoch (NaN = not measured).</summary>
public sealed record EpochMetrics(
    int Epoch,
    long Step,
    double TrainLoss,
    double TrainAccuracy,
    double TestLoss,
    double TestAccuracy,
    double SamplesPerSecond,
    double Seconds);

/// <summary>
/// The run folder (--out): model.bnc, metrics.jsonl, steps.jsonl, log.jsonl, training.svg. Every file except the
/// live log and steps.jsonl (appended in whole lines, see <see cref="StepsLog"/>) is written atomically — to a temporary name in the same folder, then moved over the
/// target — so a crash never leaves a half-written output file. Not thread-safe: one trainer owns it.
/// </summary>
public sealed class RunFolder
{
    public const string ModelFileName = "model.bnc";
    public const string MetricsFileName = "metrics.jsonl";
    public const string LogFileName = "log.jsonl";
    public const string ChartFileName = "training.svg";

    private readonly List<EpochMetrics> _epochs = new();

    private RunFolder(string path) => Path = path;

    /// <summary>Full path of the folder.</summary>
    public string Path { get; }

    public string ModelPath => System.IO.Path.Combine(Path, ModelFileName);
    public string MetricsPath => System.IO.Path.Combine(Path, MetricsFileName);
    public string LogPath => System.IO.Path.Combine(Path, LogFileName);
    public string ChartPath => System.IO.Path.Combine(Path, ChartFileName);
    public string StepsPath => System.IO.Path.Combine(Path, StepsLog.FileName);

    /// <summary>What training.svg shows under its title: the dataset and the settings of the run.</summary>
    public string ChartSubtitle { get; set; } = "";

    /// <summary>The steps' own losses training.svg draws (steps.jsonl's, sampled); empty: none.</summary>
    public IReadOnlyList<StepLoss> ChartSteps { get; set; } = [];

    /// <summary>The epochs recorded so far, in order.</summary>
    public IReadOnlyList<EpochMetrics> Epochs => _epochs;

    /// <summary>Creates the folder (and parents) if needed.</summary>
    public static RunFolder Create(string path)
    {
        if (File.Exists(path)) throw new IOException($"run folder \"{path}\" is a file");
        Directory.CreateDirectory(path);
        return new RunFolder(System.IO.Path.GetFullPath(path));
    }

    /// <summary>
    /// Appends one epoch to metrics.jsonl and redraws training.svg. The file is rewritten whole and
    /// atomically each time (a few hundred bytes per epoch), so it is never left with a torn last line.
    /// </summary>
    public void AppendEpoch(EpochMetrics metrics)
    {
        _epochs.Add(metrics);
        var text = new StringBuilder();
        foreach (var m in _epochs) text.Append(FormatMetricsLine(m)).Append('\n');
        WriteTextAtomic(MetricsFileName, text.ToString());
        WriteTextAtomic(ChartFileName, TrainingChart.Render(_epochs, subtitle: ChartSubtitle, steps: ChartSteps));
    }

    /// <summary>
    /// One JSON object with keys in the contract's order (docs/design.md, "Contracts"). Numbers use the invariant
    /// round-trip format; a NaN or infinite value (not measured) is written as null.
    /// </summary>
    public static string FormatMetricsLine(EpochMetrics m) =>
        JsonText.Write(json =>
        {
            json.WriteStartObject();
            json.WriteNumber("epoch", m.Epoch);
            json.WriteNumber("step", m.Step);
            json.WriteFiniteOrNull("train_loss", m.TrainLoss);
            json.WriteFiniteOrNull("train_accuracy", m.TrainAccuracy);
            json.WriteFiniteOrNull("test_loss", m.TestLoss);
            json.WriteFiniteOrNull("test_accuracy", m.TestAccuracy);
            json.WriteFiniteOrNull("samples_per_second", m.SamplesPerSecond);
            json.WriteFiniteOrNull("seconds", m.Seconds);
            json.WriteEndObject();
        });

    public void WriteTextAtomic(string fileName, string text) =>
        WriteAtomic(fileName, stream => stream.Write(new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(text)));

    public void WriteBytesAtomic(string fileName, ReadOnlySpan<byte> bytes)
    {
        var copy = bytes.ToArray();
        WriteAtomic(fileName, stream => stream.Write(copy));
    }

    /// <summary>Writes fileName, a plain name, in this folder atomically (<see cref="AtomicFile.Write(string, Action{Stream})"/>).</summary>
    public void WriteAtomic(string fileName, Action<Stream> write)
    {
        if (fileName.Length == 0 || fileName != System.IO.Path.GetFileName(fileName))
            throw new ArgumentException($"\"{fileName}\" is not a plain file name", nameof(fileName));
        AtomicFile.Write(System.IO.Path.Combine(Path, fileName), write);
    }
}
