using System.Globalization;

namespace BnCluster.Node;

/// <summary>
/// steps.jsonl in the run folder: one JSON line per training step (or every N-th), in step order:
/// <c>{"step":1,"epoch":1,"loss":2.31,"accuracy":0.09,"samples_per_second":5012.3,"seconds":0.021}</c>. loss and accuracy
/// are the step's own batch (not the epoch's running mean); samples_per_second is the batch's rows over the time since the
/// previous step; seconds counts from the start of training. A non-finite value is written as null.
///
/// Writing costs the trainer no allocation and no system call per step: lines are formatted into a buffer of whole
/// lines, which is written out with one write when it is full, at every epoch's end and on dispose. The file therefore
/// only ever grows by whole lines: a crash loses the lines still in the buffer (at most the current epoch's), never
/// leaves half a line. (A reader should still ignore a last line without its newline: a power cut may cut a write.)
/// Not thread-safe: the training loop reports steps one after another.
/// </summary>
public sealed class StepsLog : IDisposable
{
    /// <summary>How many steps' losses <see cref="Sampled"/> keeps for the chart at most.</summary>
    public const int SampleCapacity = 2048;

    public const string FileName = "steps.jsonl";

    private const int BufferBytes = 64 * 1024, MaxLineBytes = 320; // six numbers of at most 24 bytes, keys and punctuation
    private readonly FileStream _file;
    private readonly byte[] _buffer = new byte[BufferBytes];
    private readonly int _every;
    private int _used;
    private readonly StepLoss[] _sample = new StepLoss[SampleCapacity];
    private int _sampled;
    private long _stride = 1;

    /// <summary>Creates (or empties) <paramref name="path"/>; every <paramref name="every"/>-th step is written.</summary>
    public StepsLog(string path, int every)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(every, 1);
        _every = every;
        // Unbuffered: the only buffer is this one, which holds whole lines.
        _file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 0);
    }

    /// <summary>The steps' losses for training.svg: every step while they fit, then evenly thinned (every 2nd, 4th, … step).</summary>
    public IReadOnlyList<StepLoss> Sampled => new ArraySegment<StepLoss>(_sample, 0, _sampled);

    public void Append(long step, int epoch, double loss, double accuracy, double samplesPerSecond, double seconds)
    {
        Sample(step, epoch, loss);
        if (step % _every != 0) return;
        if (BufferBytes - _used < MaxLineBytes) Flush();
        var line = _buffer.AsSpan(_used);
        int n = 0;
        Put(line, ref n, "{\"step\":"u8);
        step.TryFormat(line[n..], out int w, default, CultureInfo.InvariantCulture); n += w;
        Put(line, ref n, ",\"epoch\":"u8);
        epoch.TryFormat(line[n..], out w, default, CultureInfo.InvariantCulture); n += w;
        Put(line, ref n, ",\"loss\":"u8);
        Number(line, ref n, loss);
        Put(line, ref n, ",\"accuracy\":"u8);
        Number(line, ref n, accuracy);
        Put(line, ref n, ",\"samples_per_second\":"u8);
        Number(line, ref n, samplesPerSecond);
        Put(line, ref n, ",\"seconds\":"u8);
        Number(line, ref n, seconds);
        Put(line, ref n, "}\n"u8);
        _used += n;
    }

    /// <summary>Writes the buffered lines to the file (one write of whole lines).</summary>
    public void Flush()
    {
        if (_used == 0) return;
        long whole = _file.Position;
        try { _file.Write(_buffer, 0, _used); }
        catch (IOException)
        {
            // A write cut short (a full disk) must not leave half a line for readers: back to the last whole line.
            try { _file.SetLength(whole); } catch (IOException) { }
            throw;
        }
        finally { _used = 0; }
    }

    public void Dispose()
    {
        try { Flush(); }
        finally { _file.Dispose(); }
    }

    private void Sample(long step, int epoch, double loss)
    {
        if (step % _stride != 0) return;
        if (_sampled == SampleCapacity) // full: keep every other, in place
        {
            _stride *= 2;
            int kept = 0;
            for (int i = 0; i < _sampled; i++) if (_sample[i].Step % _stride == 0) _sample[kept++] = _sample[i];
            _sampled = kept;
            if (step % _stride != 0) return;
        }
        _sample[_sampled++] = new StepLoss(step, epoch, loss);
    }

    private static void Put(Span<byte> line, ref int n, ReadOnlySpan<byte> text)
    {
        text.CopyTo(line[n..]);
        n += text.Length;
    }

    /// <summary>The shortest text that reads back as the same double (as metrics.jsonl writes them); null when not finite.</summary>
    private static void Number(Span<byte> line, ref int n, double value)
    {
        if (!double.IsFinite(value)) { Put(line, ref n, "null"u8); return; }
        value.TryFormat(line[n..], out int w, default, CultureInfo.InvariantCulture);
        n += w;
    }
}

/// <summary>One step's own training loss (steps.jsonl's step, epoch, loss), as the chart draws it.</summary>
public readonly record struct StepLoss(long Step, int Epoch, double Loss);
