using System.Buffers.Binary;
using System.Diagnostics;
using System.Numerics.Tensors;
using System.Security.Cryptography;
using BnCluster.Core.Training;

namespace BnCluster.Collectives;

/// <summary>
/// A memory-mapped file in which the worker processes on the coordinator's machine all-reduce their batch-norm
/// partials among themselves, without a round trip through the coordinator's socket (docs/design.md, "One training step": BnStats → BnGlobal
/// and BnGradStats → BnGradGlobal). A loopback round trip costs ~65 µs on a small VM before any actor runs, and a
/// step of a 2-BN-layer network makes four; here a worker publishes its partial in its rank's slot and reads the
/// others' as soon as they are stamped.
///
/// Every worker merges the slots itself, in rank order, with the coordinator's own merge (Chan's formula, then
/// plain sums), so each gets the bits the coordinator would have sent and the model is the same as over messages.
/// The coordinator still owns what it owned: it checks each rank's slots when its gradients arrive (stamp,
/// finiteness) and merges the forward slots again at the commit for the running averages.
///
/// Layout: a header (magic, token, ranks, features per hidden layer), then per BN layer the forward slots of every
/// rank, then the backward slots, each twice (for even and for odd steps: a worker may run the next step ahead while
/// the coordinator still reads this one's); a slot is a seqlock stamp on a cache line of its own ([sequence][step][attempt]) and
/// its float64 data (forward: n, mean[F], M2[F]; backward: Σdy[F], Σdy·z_norm[F]). A writer makes the sequence odd,
/// writes, stamps, makes it even; a reader that sees another stamp, an odd or a changed sequence does not use the copy.
/// A rank writes its slot only during its attempt, and a worker dropped from the roster keeps an old file (the
/// coordinator offers a new one to those left), so no two processes ever write one slot.
/// </summary>
public sealed unsafe class SharedBatchNormExchange : IDisposable, ISharedFileView
{
    private const ulong Magic = 0x31304E4243434E42; // "BNCCBN01"
    private const int TokenBytes = 16;
    private const int Line = 64;

    private readonly SharedMemoryFile _mapped;
    private readonly byte* _base;
    private readonly int[] _features;     // per hidden layer; 0: no BN
    private readonly long[] _forward;     // per hidden layer: rank 0's forward slot (−1: no BN)
    private readonly long[] _backward;    // … and its backward slot
    private readonly long[] _slotBytes;   // per hidden layer
    private readonly long _headerBytes;
    private bool _disposed;

    private SharedBatchNormExchange(Func<long, SharedMemoryFile> map, byte[] token, int[] features, int ranks)
    {
        if (ranks < 1) throw new ArgumentOutOfRangeException(nameof(ranks), ranks, "at least one rank");
        Token = token;
        Ranks = ranks;
        _features = features;
        _headerBytes = Align(8 + TokenBytes + 8 + 4L * features.Length);
        _forward = new long[features.Length];
        _backward = new long[features.Length];
        _slotBytes = new long[features.Length];
        long at = _headerBytes;
        for (int l = 0; l < features.Length; l++)
        {
            if (features[l] == 0) { _forward[l] = _backward[l] = -1; continue; }
            _slotBytes[l] = Line + Align(8 + 16L * features[l]);
            _forward[l] = at;
            _backward[l] = at + 2 * ranks * _slotBytes[l];
            at += 4 * ranks * _slotBytes[l];
        }
        Capacity = at;
        _mapped = map(Capacity);
        _base = _mapped.Base;
    }

    public string Path => _mapped.Path;

    /// <summary>The random token in the header: the proof, for whoever opens the file, that it is this offer's.</summary>
    public byte[] Token { get; }

    /// <summary>Slots per layer and direction: the most workers an attempt can exchange through this file.</summary>
    public int Ranks { get; }

    public long Capacity { get; }

    /// <summary>Coordinator: a new exchange file at <paramref name="path"/> (owner-only) for <paramref name="ranks"/> workers of <paramref name="p"/>'s network.</summary>
    public static SharedBatchNormExchange Create(string path, Parameters p, int ranks)
    {
        var exchange = new SharedBatchNormExchange(capacity => SharedMemoryFile.CreateNew(path, capacity), RandomNumberGenerator.GetBytes(TokenBytes), Features(p), ranks);
        return SharedFileViews.WithHeader(exchange, static v => v.WriteHeader(), created: true);
    }

    /// <summary>
    /// Worker: opens the exchange the coordinator offered. <see cref="InvalidDataException"/> names what differs when the
    /// file is not an exchange, holds another token (another machine) or is laid out for another network or rank count.
    /// </summary>
    public static SharedBatchNormExchange Open(string path, ReadOnlySpan<byte> token, Parameters p, int ranks)
    {
        var exchange = new SharedBatchNormExchange(capacity => SharedMemoryFile.OpenExisting(path, capacity, "batch-norm exchange file"), token.ToArray(), Features(p), ranks);
        return SharedFileViews.WithHeader(exchange, static v => v.CheckHeader(), created: false);
    }

    /// <summary>Removes the file once every worker has mapped it; the mappings stay valid.</summary>
    public void Unlink() => _mapped.Unlink();

    // ---- the worker's side ----

    /// <summary>Publishes rank <paramref name="rank"/>'s forward moments of <paramref name="layer"/> for (step, attempt).</summary>
    public void PublishStats(int layer, int rank, long step, int attempt, BatchNormStats local)
    {
        int f = CheckFeatures(layer, local.Features);
        byte* slot = Slot(_forward, layer, rank, step);
        BeginWrite(slot);
        double* data = (double*)(slot + Line);
        *(long*)data = local.Count;
        local.Mean.AsSpan().CopyTo(new Span<double>(data + 1, f));
        local.M2.AsSpan().CopyTo(new Span<double>(data + 1 + f, f));
        EndWrite(slot, step, attempt);
    }

    /// <summary>Publishes rank <paramref name="rank"/>'s backward sums of <paramref name="layer"/> for (step, attempt).</summary>
    public void PublishGradSums(int layer, int rank, long step, int attempt, BatchNormGradSums local)
    {
        int f = CheckFeatures(layer, local.Features);
        byte* slot = Slot(_backward, layer, rank, step);
        BeginWrite(slot);
        double* data = (double*)(slot + Line);
        local.SumDy.AsSpan().CopyTo(new Span<double>(data, f));
        local.SumDyXhat.AsSpan().CopyTo(new Span<double>(data + f, f));
        EndWrite(slot, step, attempt);
    }

    /// <summary>
    /// Waits until ranks 0 … <paramref name="ranks"/>−1 have published their forward moments of <paramref name="layer"/>
    /// for (step, attempt), then merges them in rank order into <paramref name="into"/> (its old content is discarded).
    /// Spins (yielding the core) while the wait is short, then sleeps; <paramref name="ct"/> ends it.
    /// </summary>
    public void WaitAndMergeStats(int layer, int ranks, long step, int attempt, BatchNormStats into, CancellationToken ct)
    {
        var spin = new SpinWait();
        long start = Stopwatch.GetTimestamp();
        while (!(AllStamped(_forward, layer, ranks, step, attempt) && TryMergeStats(layer, ranks, step, attempt, into, out _)))
            SharedMemoryWait.Pause(ref spin, start, ct);
    }

    /// <summary>The same wait for the backward sums, added in rank order into <paramref name="into"/>.</summary>
    public void WaitAndAddGradSums(int layer, int ranks, long step, int attempt, BatchNormGradSums into, CancellationToken ct)
    {
        var spin = new SpinWait();
        long start = Stopwatch.GetTimestamp();
        while (!(AllStamped(_backward, layer, ranks, step, attempt) && TryAddGradSums(layer, ranks, step, attempt, into, out _)))
            SharedMemoryWait.Pause(ref spin, start, ct);
    }

    // ---- reading (workers and coordinator) ----

    /// <summary>
    /// Merges the forward moments of ranks 0 … <paramref name="ranks"/>−1 in rank order into <paramref name="into"/>
    /// (cleared first): Chan's merge, as the coordinator merges BnStats. False, with <paramref name="failedRank"/>, when
    /// that rank's slot holds another stamp or changed while read; <paramref name="into"/> is then unusable.
    /// </summary>
    public bool TryMergeStats(int layer, int ranks, long step, int attempt, BatchNormStats into, out int failedRank)
    {
        int f = CheckFeatures(layer, into.Features);
        CheckRanks(ranks);
        into.Clear();
        for (int r = 0; r < ranks; r++)
        {
            byte* slot = Slot(_forward, layer, r, step);
            failedRank = r;
            if (!BeginRead(slot, step, attempt, out ulong sequence)) return false;
            double* data = (double*)(slot + Line);
            into.Merge(*(long*)data, new ReadOnlySpan<double>(data + 1, f), new ReadOnlySpan<double>(data + 1 + f, f));
            if (!EndRead(slot, sequence)) return false;
        }
        failedRank = -1;
        return true;
    }

    /// <summary>Adds the backward sums of ranks 0 … <paramref name="ranks"/>−1 in rank order into <paramref name="into"/> (cleared first); false as <see cref="TryMergeStats"/>.</summary>
    public bool TryAddGradSums(int layer, int ranks, long step, int attempt, BatchNormGradSums into, out int failedRank)
    {
        int f = CheckFeatures(layer, into.Features);
        CheckRanks(ranks);
        into.Clear();
        for (int r = 0; r < ranks; r++)
        {
            byte* slot = Slot(_backward, layer, r, step);
            failedRank = r;
            if (!BeginRead(slot, step, attempt, out ulong sequence)) return false;
            double* data = (double*)(slot + Line);
            into.Add(new ReadOnlySpan<double>(data, f), new ReadOnlySpan<double>(data + f, f));
            if (!EndRead(slot, sequence)) return false;
        }
        failedRank = -1;
        return true;
    }

    /// <summary>What <see cref="Check"/> found in a rank's slots.</summary>
    public enum SlotState { Complete, Missing, NonFinite }

    /// <summary>
    /// Coordinator: are all of rank <paramref name="rank"/>'s slots (forward and backward, every BN layer) stamped with
    /// (step, attempt) and finite? <paramref name="layer"/> names the first layer that is not.
    /// </summary>
    public SlotState Check(int rank, long step, int attempt, out int layer)
    {
        CheckRanks(rank + 1);
        for (layer = 0; layer < _features.Length; layer++)
        {
            int f = _features[layer];
            if (f == 0) continue;
            foreach (var area in (ReadOnlySpan<long[]>)[_forward, _backward])
            {
                byte* slot = Slot(area, layer, rank, step);
                if (!BeginRead(slot, step, attempt, out ulong sequence)) return SlotState.Missing;
                double* data = (double*)(slot + Line);
                bool finite = ReferenceEquals(area, _forward)
                    ? TensorPrimitives.IsFiniteAll(new ReadOnlySpan<double>(data + 1, 2 * f))
                    : TensorPrimitives.IsFiniteAll(new ReadOnlySpan<double>(data, 2 * f));
                if (!EndRead(slot, sequence)) return SlotState.Missing;
                if (!finite) return SlotState.NonFinite;
            }
        }
        layer = -1;
        return SlotState.Complete;
    }

    /// <summary>Coordinator (finding a silent worker): has rank <paramref name="rank"/> published its partial of <paramref name="layer"/> in that direction for (step, attempt)?</summary>
    public bool Published(int layer, bool backward, int rank, long step, int attempt)
    {
        byte* slot = Slot(backward ? _backward : _forward, layer, rank, step);
        return BeginRead(slot, step, attempt, out ulong sequence) && EndRead(slot, sequence);
    }

    private bool AllStamped(long[] area, int layer, int ranks, long step, int attempt)
    {
        CheckRanks(ranks);
        for (int r = 0; r < ranks; r++)
        {
            if (!SeqLock.IsStamped(Slot(area, layer, r, step), step, attempt)) return false;
        }
        return true;
    }

    // ---- slots and seqlock ----

    // Two sets of slots, by the parity of the step: a worker may run the next step ahead (StartStep.NextRows) while the
    // coordinator still reads this step's slots.
    private byte* Slot(long[] area, int layer, int rank, long step)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if ((uint)layer >= (uint)_features.Length) throw new ArgumentOutOfRangeException(nameof(layer), layer, $"the network has {_features.Length} hidden layers");
        if (area[layer] < 0) throw new ArgumentException($"hidden layer {layer} has no batch norm", nameof(layer));
        if ((uint)rank >= (uint)Ranks) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"the exchange has {Ranks} ranks");
        return _base + area[layer] + ((step & 1) * Ranks + rank) * _slotBytes[layer];
    }

    private int CheckFeatures(int layer, int features)
    {
        if ((uint)layer >= (uint)_features.Length) throw new ArgumentOutOfRangeException(nameof(layer), layer, $"the network has {_features.Length} hidden layers");
        if (_features[layer] != features) throw new ArgumentException($"{features} features for hidden layer {layer}, which has {_features[layer]} batch-norm features");
        return features;
    }

    private void CheckRanks(int ranks)
    {
        if (ranks < 1 || ranks > Ranks) throw new ArgumentOutOfRangeException(nameof(ranks), ranks, $"1 to {Ranks} ranks");
    }

    private static void BeginWrite(byte* slot) => SeqLock.BeginWrite(slot);
    private static void EndWrite(byte* slot, long step, int attempt) => SeqLock.EndWrite(slot, step, attempt);
    private static bool BeginRead(byte* slot, long step, int attempt, out ulong sequence) => SeqLock.BeginRead(slot, step, attempt, out sequence);
    private static bool EndRead(byte* slot, ulong sequence) => SeqLock.EndRead(slot, sequence);

    // ---- header ----

    private void WriteHeader()
    {
        var header = new Span<byte>(_base, (int)_headerBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(header, Magic);
        Token.CopyTo(header[8..]);
        BinaryPrimitives.WriteInt32LittleEndian(header[(8 + TokenBytes)..], Ranks);
        BinaryPrimitives.WriteInt32LittleEndian(header[(12 + TokenBytes)..], _features.Length);
        for (int l = 0; l < _features.Length; l++) BinaryPrimitives.WriteInt32LittleEndian(header[(16 + TokenBytes + 4 * l)..], _features[l]);
        // Slots start "holding nothing": step −1 never matches a real one.
        for (int l = 0; l < _features.Length; l++)
        {
            if (_features[l] == 0) continue;
            for (int r = 0; r < Ranks; r++)
                foreach (var area in (ReadOnlySpan<long[]>)[_forward, _backward])
                    for (long parity = 0; parity < 2; parity++) SeqLock.Clear(Slot(area, l, r, parity));
        }
        Interlocked.MemoryBarrier();
    }

    private void CheckHeader()
    {
        var header = new ReadOnlySpan<byte>(_base, (int)_headerBytes);
        if (BinaryPrimitives.ReadUInt64LittleEndian(header) != Magic) throw new InvalidDataException($"{Path} is not a BnCluster batch-norm exchange file (magic)");
        if (!header.Slice(8, TokenBytes).SequenceEqual(Token)) throw new InvalidDataException($"{Path} holds another token: not the file the coordinator offered (another machine?)");
        int ranks = BinaryPrimitives.ReadInt32LittleEndian(header[(8 + TokenBytes)..]), layers = BinaryPrimitives.ReadInt32LittleEndian(header[(12 + TokenBytes)..]);
        if (ranks != Ranks) throw new InvalidDataException($"{Path} has slots for {ranks} ranks, the offer said {Ranks}");
        if (layers != _features.Length) throw new InvalidDataException($"{Path} is laid out for {layers} hidden layers, this network has {_features.Length}");
        for (int l = 0; l < layers; l++)
        {
            int features = BinaryPrimitives.ReadInt32LittleEndian(header[(16 + TokenBytes + 4 * l)..]);
            if (features != _features[l]) throw new InvalidDataException($"{Path}: hidden layer {l} has {features} batch-norm features, this network's {_features[l]}");
        }
    }

    private static int[] Features(Parameters p)
    {
        var features = new int[p.HiddenLayers];
        for (int l = 0; l < features.Length; l++) features[l] = p.BatchNorm[l]?.Features ?? 0;
        return features;
    }

    private static long Align(long bytes) => (bytes + Line - 1) / Line * Line;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _mapped.Dispose();
    }
}
