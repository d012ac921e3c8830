using System.Text;
using System.Text.Json;

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
    public static string FormatMetricsLine(EpochMetrics m)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteNumber("epoch", m.Epoch);
            json.WriteNumber("step", m.Step);
            WriteDouble(json, "train_loss", m.TrainLoss);
            WriteDouble(json, "train_accuracy", m.TrainAccuracy);
            WriteDouble(json, "test_loss", m.TestLoss);
            WriteDouble(json, "test_accuracy", m.TestAccuracy);
            WriteDouble(json, "samples_per_second", m.SamplesPerSecond);
            WriteDouble(json, "seconds", m.Seconds);
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    private static void WriteDouble(Utf8JsonWriter json, string name, double value)
    {
        if (double.IsFinite(value)) json.WriteNumber(name, value);
        else json.WriteNull(name);
    }

    public void WriteTextAtomic(string fileName, string text) =>
        WriteAtomic(fileName, stream =>
        {
            var bytes = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(text);
            stream.Write(bytes);
        });

    public void WriteBytesAtomic(string fileName, ReadOnlySpan<byte> bytes)
    {
        var copy = bytes.ToArray();
        WriteAtomic(fileName, stream => stream.Write(copy));
    }

    /// <summary>
    /// Writes fileName in this folder atomically: write calls back with a stream on a temporary file
    /// in the same folder (same file system, so the move is a rename), which is flushed to disk and then
    /// moved over the target. On any failure the temporary file is deleted and the target is untouched.
    /// </summary>
    public void WriteAtomic(string fileName, Action<Stream> write)
    {
        if (fileName.Length == 0 || fileName != System.IO.Path.GetFileName(fileName))
            throw new ArgumentException($"\"{fileName}\" is not a plain file name", nameof(fileName));
        string target = System.IO.Path.Combine(Path, fileName);
        string temp = System.IO.Path.Combine(Path, $".{fileName}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, target, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } // best effort; the original error matters
            throw;
        }
    }
}
