using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Numerics.Tensors;
using BnCluster.Core.Kernels;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;

namespace BnCluster.Collectives;

/// <summary>
/// A memory-mapped file shared by the coordinator and one worker on the same machine (a worker process, or a worker
/// actor of the coordinator's own process), so the step's big tensors skip the socket or the message: the worker
/// writes its gradients into it and the coordinator the committed parameters, and the messages that say so (<see cref="StepGradients.Shared"/>, <see cref="StartStep.SharedParameters"/>)
/// carry no tensor. Remoting would copy each tensor four times (encode, kernel send, kernel receive, decode);
/// here each side copies it once. The coordinator creates the file and offers it (<see cref="SharedMemoryOffer"/>);
/// a worker that opens it and finds the offer's random token is on the same machine; the file is then unlinked
/// (the mappings stay), so nothing is left behind however the processes end.
///
/// Layout: a header (magic, token, tensor lengths), then two areas, each with a seqlock stamp on a cache line of
/// its own: gradients (Parameters.Trainable order; written by the worker, stamped with step and attempt) and
/// parameters (Parameters.AllTensors order; written by the coordinator, stamped with the committed version).
/// A writer makes the sequence odd, writes, makes it even; a reader that sees an odd or changed sequence, or another
/// stamp, reports the area unreadable instead of using a torn copy. The protocol never lets both sides touch an
/// area at once (a worker writes its gradients only while the coordinator waits for them, the coordinator writes
/// a worker's parameters only between its steps); the stamps catch what a dropped and returning worker could break.
/// </summary>
public sealed unsafe class SharedTensorRegion : IDisposable, ISharedFileView, IParameterMirror, IGradientAddend
{
    private const ulong Magic = 0x31304D4853434E42; // "BNCSHM01"
    private const int TokenBytes = 16;
    private const int Line = 64;
    // Stamp: [sequence u64][a i64][b i64]; gradients: a = step, b = attempt; parameters: a = version.

    private readonly SharedMemoryFile _mapped;
    private readonly byte* _base;
    private readonly long _gradStamp, _paramStamp;
    private readonly long[] _gradOffsets, _paramOffsets;
    private readonly int[] _gradLengths, _paramLengths;
    private byte* _parameterWrite; // the parameter stamp between BeginWriteParameters and EndWriteParameters
    private bool _disposed;

    private SharedTensorRegion(Func<long, SharedMemoryFile> map, byte[] token, int[] gradLengths, int[] paramLengths)
    {
        Token = token;
        _gradLengths = gradLengths;
        _paramLengths = paramLengths;
        long headerBytes = Align(8 + TokenBytes + 8 + 4L * (gradLengths.Length + paramLengths.Length));
        _gradStamp = headerBytes;
        _gradOffsets = Offsets(gradLengths, _gradStamp + Line, out long gradEnd);
        _paramStamp = Align(gradEnd);
        _paramOffsets = Offsets(paramLengths, _paramStamp + Line, out long end);
        Capacity = end;
        _mapped = map(Capacity);
        _base = _mapped.Base;
    }

    /// <summary>The file the region was created from (gone once <see cref="Unlink"/> ran).</summary>
    public string Path => _mapped.Path;

    /// <summary>The random token in the header: the proof, for whoever opens the file, that it is this offer's.</summary>
    public byte[] Token { get; }

    public long Capacity { get; }

    /// <summary>Bytes a region for <paramref name="p"/>'s tensors takes.</summary>
    public static long CapacityFor(Parameters p)
    {
        long header = Align(8 + TokenBytes + 8 + 4L * (p.Trainable.Count + p.AllTensors.Count));
        Offsets(Lengths(p.Trainable), header + Line, out long gradEnd);
        Offsets(Lengths(p.AllTensors), Align(gradEnd) + Line, out long end);
        return end;
    }

    /// <summary>The folder for region files: /dev/shm where the system has it (memory, not disk), else the temp folder.</summary>
    public static string DefaultFolder => Directory.Exists("/dev/shm") ? "/dev/shm" : System.IO.Path.GetTempPath();

    /// <summary>Creates a new region file at <paramref name="path"/> (owner-only access) laid out for <paramref name="p"/>.</summary>
    public static SharedTensorRegion Create(string path, Parameters p)
    {
        var region = new SharedTensorRegion(capacity => SharedMemoryFile.CreateNew(path, capacity),
            RandomNumberGenerator.GetBytes(TokenBytes), Lengths(p.Trainable), Lengths(p.AllTensors));
        return SharedFileViews.WithHeader(region, static v => v.WriteHeader(), created: true);
    }

    /// <summary>
    /// Opens the region another process created at <paramref name="path"/>. Throws <see cref="InvalidDataException"/>
    /// naming what differs when it is not a region, not the offer's (another token) or laid out for another network.
    /// </summary>
    public static SharedTensorRegion Open(string path, ReadOnlySpan<byte> token, Parameters p)
    {
        var region = new SharedTensorRegion(capacity => SharedMemoryFile.OpenExisting(path, capacity, "shared tensor file"),
            token.ToArray(), Lengths(p.Trainable), Lengths(p.AllTensors));
        return SharedFileViews.WithHeader(region, static v => v.CheckHeader(), created: false);
    }

    /// <summary>Removes the file; both mappings stay valid (POSIX), so a crash can leave nothing behind.</summary>
    public void Unlink() => _mapped.Unlink();

    /// <summary>
    /// Worker: writes <paramref name="gradients"/> (Trainable order) stamped with the step and attempt; false when they
    /// hold NaN or ±∞ (checked as each range is copied, while in cache). The coordinator's update reads the last
    /// ranks' files as it goes (<see cref="IGradientAddend"/>), so a worker sends non-finite gradients in its message
    /// instead, where the coordinator checks them before anything changes.
    /// </summary>
    public bool WriteGradients(long step, int attempt, IReadOnlyList<NamedTensor> gradients)
    {
        CheckCount(gradients.Count, _gradLengths, "gradient");
        byte* stamp = BeginWrite(_gradStamp);
        bool finite = true;
        for (int i = 0; i < gradients.Count; i++)
        {
            Pass(_gradOffsets[i], _gradLengths, i, gradients[i].Values, null, &CopyToRegionRange);
            finite &= TensorPrimitives.IsFiniteAll<float>(new ReadOnlySpan<float>(_base + _gradOffsets[i], _gradLengths[i]));
        }
        EndWrite(stamp, step, attempt);
        return finite;
    }

    /// <summary>
    /// Coordinator: the area holds the gradients stamped (step, attempt) and nobody is writing it; they are then read
    /// through <see cref="Gradient"/> (an update's addend) until <see cref="EndReadGradients"/> says the copy was whole.
    /// </summary>
    public bool TryBeginReadGradients(long step, int attempt, out ulong sequence) => BeginRead(_gradStamp, step, attempt, out sequence);

    /// <summary>Nobody wrote the gradients since <see cref="TryBeginReadGradients"/> returned <paramref name="sequence"/>.</summary>
    public bool EndReadGradients(ulong sequence) => EndRead(_gradStamp, sequence);

    /// <summary>Trainable tensor <paramref name="index"/>'s gradient in the file (read between TryBeginReadGradients and EndReadGradients).</summary>
    public float* Gradient(int index, int length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if ((uint)index >= (uint)_gradLengths.Length) throw new ArgumentOutOfRangeException(nameof(index), index, $"the region holds {_gradLengths.Length} gradient tensors");
        Checked(length, _gradLengths, index);
        return (float*)(_base + _gradOffsets[index]);
    }

    /// <summary>Regions one <see cref="TryAddGradients"/> pass adds.</summary>
    public const int MaxRegionsPerPass = 64;

    /// <summary>
    /// Coordinator: adds the gradients stamped (<paramref name="step"/>, <paramref name="attempt"/>) of several regions
    /// (laid out for the same network), in their order, to <paramref name="sums"/>: sum = ((sum + g₀) + g₁) + …, or, with
    /// <paramref name="overwrite"/>, sum = (g₀ + 0) + g₁ + … without reading the old sums (the same bits as starting from
    /// zero: x + 0 = 0 + x). Block by block over element ranges split across <paramref name="threads"/>, so a block of the
    /// sum stays in L1 while every region's block is added to it: one pass over memory for all the regions. False, with
    /// <paramref name="failed"/> the region's index, when a region holds another stamp or changed while read;
    /// <paramref name="nonFinite"/>[k] when region k's gradients hold NaN or ±∞. Either way the sums are unusable.
    /// </summary>
    public static bool TryAddGradients(IReadOnlyList<SharedTensorRegion> regions, long step, int attempt, IReadOnlyList<NamedTensor> sums,
        bool overwrite, MatMul? threads, Span<bool> nonFinite, out int failed)
    {
        int count = regions.Count;
        if (count is < 1 or > MaxRegionsPerPass) throw new ArgumentOutOfRangeException(nameof(regions), count, $"1 to {MaxRegionsPerPass} regions per pass");
        if (nonFinite.Length < count) throw new ArgumentException($"{nonFinite.Length} non-finite flags for {count} regions", nameof(nonFinite));
        var first = regions[0];
        CheckCount(sums.Count, first._gradLengths, "gradient");
        ulong* sequences = stackalloc ulong[count];
        for (int k = 0; k < count; k++)
        {
            var region = regions[k];
            if (!region._gradLengths.AsSpan().SequenceEqual(first._gradLengths)) throw new ArgumentException($"region {k} is laid out for another network");
            if (!region.BeginRead(region._gradStamp, step, attempt, out sequences[k])) { failed = k; return false; }
        }
        nint* tensors = stackalloc nint[count];
        int* flags = stackalloc int[count];
        new Span<int>(flags, count).Clear();
        for (int i = 0; i < sums.Count; i++)
        {
            var sum = sums[i].Values;
            int length = Checked(sum.Length, first._gradLengths, i);
            for (int k = 0; k < count; k++) tensors[k] = (nint)(regions[k]._base + regions[k]._gradOffsets[i]);
            fixed (float* values = sum)
            {
                var state = new SumState { Sum = values, Regions = tensors, Count = count, Overwrite = overwrite ? 1 : 0, NonFinite = flags };
                if (threads is null) SumRange(ref state, 0, length);
                else threads.ParallelFor(length, (long)length * count, ref state, &SumRange, align: Line / sizeof(float));
            }
        }
        for (int k = 0; k < count; k++)
        {
            nonFinite[k] = flags[k] != 0;
            if (!regions[k].EndRead(regions[k]._gradStamp, sequences[k])) { failed = k; return false; }
        }
        failed = -1;
        return true;
    }

    // One tensor's element range of a multi-region sum: the sum's floats and the tensor's place in each region.
    private struct SumState
    {
        public float* Sum;
        public nint* Regions;
        public int Count;
        public int Overwrite;
        public int* NonFinite; // per region: set by any range that saw NaN or ±∞ (all write the same 1)
    }

    // Elements per block of a multi-region sum: 16 KB of the sum, kept in L1 while each region's block is added.
    private const int SumBlock = 4096;

    private static void SumRange(ref SumState s, int start, int end)
    {
        for (int at = start; at < end; at += SumBlock)
        {
            int n = Math.Min(SumBlock, end - at);
            var sum = new Span<float>(s.Sum + at, n);
            for (int k = 0; k < s.Count; k++)
            {
                var gradient = new ReadOnlySpan<float>((float*)s.Regions[k] + at, n);
                if (!TensorPrimitives.IsFiniteAll(gradient)) s.NonFinite[k] = 1;
                if (k == 0 && s.Overwrite != 0) TensorPrimitives.Add(gradient, 0f, sum);
                else TensorPrimitives.Add(sum, gradient, sum);
            }
        }
    }

    /// <summary>
    /// Coordinator: writes <paramref name="p"/>'s tensors (AllTensors order) stamped with <paramref name="version"/>,
    /// split by element ranges over <paramref name="threads"/> when given.
    /// </summary>
    public void WriteParameters(long version, Parameters p, MatMul? threads = null)
    {
        BeginWriteParameters(p);
        for (int i = 0; i < p.Trainable.Count; i++) Pass(_paramOffsets[i], _paramLengths, i, p.Trainable[i].Values, threads, &CopyToRegionRange);
        EndWriteParameters(version, p);
    }

    /// <summary>The parameter version this process last wrote (−1: none yet).</summary>
    public long WrittenParametersVersion { get; private set; } = -1;

    /// <summary>
    /// Coordinator: opens the parameter area for a write that an optimizer update fills as it goes (this region as its
    /// <see cref="IParameterMirror"/>); readers refuse the area until <see cref="EndWriteParameters"/>.
    /// </summary>
    public void BeginWriteParameters(Parameters p)
    {
        CheckCount(p.AllTensors.Count, _paramLengths, "parameter");
        if (_parameterWrite != null) throw new InvalidOperationException("the parameter area is being written already");
        _parameterWrite = BeginWrite(_paramStamp);
    }

    /// <summary>Trainable tensor <paramref name="index"/>'s place in the parameter area (written between Begin- and EndWriteParameters).</summary>
    public float* Trainable(int index, int length)
    {
        if (_parameterWrite == null) throw new InvalidOperationException("the parameter area is written only between BeginWriteParameters and EndWriteParameters");
        if ((uint)index >= (uint)_paramLengths.Length) throw new ArgumentOutOfRangeException(nameof(index), index, $"the region holds {_paramLengths.Length} parameter tensors");
        Checked(length, _paramLengths, index);
        return (float*)(_base + _paramOffsets[index]);
    }

    /// <summary>Writes the rest of <paramref name="p"/> (the running statistics after the trainable tensors) and stamps the area with <paramref name="version"/>.</summary>
    public void EndWriteParameters(long version, Parameters p)
    {
        if (_parameterWrite == null) throw new InvalidOperationException("EndWriteParameters without BeginWriteParameters");
        var tensors = p.AllTensors;
        for (int i = p.Trainable.Count; i < tensors.Count; i++) Pass(_paramOffsets[i], _paramLengths, i, tensors[i].Values, null, &CopyToRegionRange);
        EndWrite(_parameterWrite, version, 0);
        _parameterWrite = null;
        WrittenParametersVersion = version;
    }

    /// <summary>Worker: copies the parameters of <paramref name="version"/> into <paramref name="p"/>; false when the area holds another version or changed while read.</summary>
    public bool TryReadParameters(long version, Parameters p)
    {
        var tensors = p.AllTensors;
        CheckCount(tensors.Count, _paramLengths, "parameter");
        if (!BeginRead(_paramStamp, version, 0, out ulong sequence)) return false;
        for (int i = 0; i < tensors.Count; i++) Pass(_paramOffsets[i], _paramLengths, i, tensors[i].Values, null, &CopyFromRegionRange);
        return EndRead(_paramStamp, sequence);
    }

    // One tensor's element range of a pass: the region's floats and the array's (pinned by Pass).
    private struct RangeState
    {
        public float* Region;
        public float* Array;
    }

    /// <summary>
    /// Runs <paramref name="body"/> over tensor <paramref name="index"/> of an area (at <paramref name="offset"/>) and
    /// <paramref name="array"/>, split over <paramref name="threads"/> when given.
    /// </summary>
    private void Pass(long offset, int[] lengths, int index, float[] array, MatMul? threads, delegate*<ref RangeState, int, int, void> body)
    {
        int length = Checked(array.Length, lengths, index);
        fixed (float* values = array)
        {
            var state = new RangeState { Region = (float*)(_base + offset), Array = values };
            if (threads is null) body(ref state, 0, length);
            else threads.ParallelFor(length, length, ref state, body, align: Line / sizeof(float));
        }
    }

    private static void CopyToRegionRange(ref RangeState s, int start, int end) =>
        new ReadOnlySpan<float>(s.Array + start, end - start).CopyTo(new Span<float>(s.Region + start, end - start));

    private static void CopyFromRegionRange(ref RangeState s, int start, int end) =>
        new ReadOnlySpan<float>(s.Region + start, end - start).CopyTo(new Span<float>(s.Array + start, end - start));

    private bool BeginRead(long stampOffset, long first, long second, out ulong sequence)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return SeqLock.BeginRead(_base + stampOffset, first, second, out sequence);
    }

    private bool EndRead(long stampOffset, ulong sequence) => SeqLock.EndRead(_base + stampOffset, sequence);

    private byte* BeginWrite(long stampOffset)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        SeqLock.BeginWrite(_base + stampOffset);
        return _base + stampOffset;
    }

    private static void EndWrite(byte* stamp, long first, long second) => SeqLock.EndWrite(stamp, first, second);

    private void WriteHeader()
    {
        var header = new Span<byte>(_base, (int)_gradStamp);
        BinaryPrimitives.WriteUInt64LittleEndian(header, Magic);
        Token.CopyTo(header[8..]);
        BinaryPrimitives.WriteInt32LittleEndian(header[(8 + TokenBytes)..], _gradLengths.Length);
        BinaryPrimitives.WriteInt32LittleEndian(header[(12 + TokenBytes)..], _paramLengths.Length);
        int at = 16 + TokenBytes;
        foreach (int length in _gradLengths.Concat(_paramLengths)) { BinaryPrimitives.WriteInt32LittleEndian(header[at..], length); at += 4; }
        // Stamps start "holding nothing": step/version −1 never matches a real one.
        foreach (long stamp in new[] { _gradStamp, _paramStamp }) SeqLock.Clear(_base + stamp);
        Interlocked.MemoryBarrier();
    }

    private void CheckHeader()
    {
        var header = new ReadOnlySpan<byte>(_base, (int)_gradStamp);
        if (BinaryPrimitives.ReadUInt64LittleEndian(header) != Magic) throw new InvalidDataException($"{Path} is not a BnCluster shared tensor file (magic)");
        if (!header.Slice(8, TokenBytes).SequenceEqual(Token)) throw new InvalidDataException($"{Path} holds another token: not the file the coordinator offered (another machine?)");
        int grads = BinaryPrimitives.ReadInt32LittleEndian(header[(8 + TokenBytes)..]), parameters = BinaryPrimitives.ReadInt32LittleEndian(header[(12 + TokenBytes)..]);
        if (grads != _gradLengths.Length || parameters != _paramLengths.Length)
            throw new InvalidDataException($"{Path} is laid out for {grads} gradient and {parameters} parameter tensors, this network has {_gradLengths.Length} and {_paramLengths.Length}");
        int at = 16 + TokenBytes, index = 0;
        foreach (int expected in _gradLengths.Concat(_paramLengths))
        {
            int length = BinaryPrimitives.ReadInt32LittleEndian(header[at..]);
            if (length != expected) throw new InvalidDataException($"{Path}: tensor {index} has {length} values, this network's {expected}");
            at += 4;
            index++;
        }
    }

    private static int[] Lengths(IReadOnlyList<NamedTensor> tensors)
    {
        var lengths = new int[tensors.Count];
        for (int i = 0; i < lengths.Length; i++) lengths[i] = tensors[i].Values.Length;
        return lengths;
    }

    private static long[] Offsets(int[] lengths, long start, out long end)
    {
        var offsets = new long[lengths.Length];
        long at = start;
        for (int i = 0; i < lengths.Length; i++)
        {
            offsets[i] = at;
            at = Align(at + 4L * lengths[i]);
        }
        end = at;
        return offsets;
    }

    private static long Align(long bytes) => (bytes + Line - 1) / Line * Line;

    private static void CheckCount(int count, int[] lengths, string what)
    {
        if (count != lengths.Length) throw new ArgumentException($"{count} {what} tensors, the region holds {lengths.Length}");
    }

    private static int Checked(int length, int[] lengths, int i) =>
        length == lengths[i] ? length : throw new ArgumentException($"tensor {i} has {length} values, the region {lengths[i]}");

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _mapped.Dispose();
    }
}
