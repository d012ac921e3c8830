using System.Numerics.Tensors;
using BnCluster.Collectives;
using BnCluster.Coordinator.Messages;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;

namespace BnCluster.Coordinator;

/// <summary>
/// A contribution of the participant of rank <see cref="Rank"/> that cannot be used (another stamp, torn, non-finite):
/// the coordinator aborts the attempt and retries it once.
/// </summary>
internal readonly record struct UnusableContribution(int Rank, string What, string Hint = "")
{
    public static UnusableContribution NonFinite(int rank, string what) => new(rank, $"a non-finite {what}", " (lower the learning rate?)");
}

/// <summary>
/// The reductions of one step attempt (docs/design.md, "One training step"). Each participant's BN partials, BN gradient
/// sums and gradients land in the slot of its rank and are reduced in rank order (Chan's merge, sums 0 + x₀ + x₁ + …),
/// so the results do not depend on the order they arrive in: the model is the same bit for bit however the workers
/// are timed. The buffers are allocated once and reused by every attempt (no per-step garbage). The coordinator actor
/// checks each message first (stamp, shape, duplicate, finite) and sends the results.
/// </summary>
internal sealed class StepReductions
{
    // Stands in _pendingTensors for gradients waiting in the worker's shared-memory file (it writes there again
    // only for a later attempt, which starts after this one is summed or aborted).
    private static readonly float[][] InSharedMemory = [];

    private readonly CommittedModel _model;
    private Member[] _participants = [];
    private long _step;
    private int _attempt;

    // Each worker's partial BN messages, per BN layer by rank. Once a layer's slots are full they are merged and
    // their arrays go back to the pool: from then on a slot only marks that its rank's partial arrived.
    private BnStats?[][] _stats = [];
    private BnGradStats?[][] _gradSums = [];
    // A BN layer's merged moments and summed gradient sums live in buffers allocated once; _merged[l] points at
    // layer l's once this attempt has merged it. The BnGlobal / BnGradGlobal replies carry these buffers
    // themselves: a receiver reads (copies or encodes) a reply before it sends its gradients, and the buffers are
    // written again only at the next reduction of their layer, after every gradient of this step has arrived or
    // after this attempt was aborted (its replies then carry a stale stamp, which the workers discard).
    private readonly BatchNormStats?[] _merged;
    private readonly BatchNormStats?[] _mergedBuffers;
    private readonly BatchNormGradSums?[] _gradSumBuffers;

    // Gradients: each worker's loss partial once its message is accepted; its tensors wait in _pendingTensors
    // until every lower rank has been added to _gradSum (the sum is in rank order however they arrive), then
    // go back to the pool. So the sum overlaps the wait for the slowest worker.
    private LossPartial?[] _losses = [];
    private float[][]?[] _pendingTensors = [];
    private int _summedRanks;
    private readonly Gradients _gradSum;
    private readonly List<SharedTensorRegion> _regionBatch = []; // the files one pass of the gradient sum reads
    private readonly bool[] _regionNonFinite = new bool[SharedTensorRegion.MaxRegionsPerPass];
    // Adam: the files of the last ranks to arrive, which the commit's update adds to the sum as it reads them (one
    // pass over memory less), with the seqlock sequences seen when their stamps were checked, and whether the
    // first of them overwrites the sum (it is rank 0).
    private readonly List<SharedTensorRegion> _addends = [];
    private readonly ulong[] _addendSequences = new ulong[SharedTensorRegion.MaxRegionsPerPass];
    private int _firstAddendRank;
    private bool _addendsOverwrite;
    private int[] _sliceFlags = []; // the ranks' update reports of an attempt (reused)

    public StepReductions(CommittedModel model)
    {
        _model = model;
        var p = model.Parameters;
        _gradSum = new Gradients(p);
        _merged = new BatchNormStats?[p.HiddenLayers];
        _mergedBuffers = new BatchNormStats?[p.HiddenLayers];
        _gradSumBuffers = new BatchNormGradSums?[p.HiddenLayers];
        for (int l = 0; l < p.HiddenLayers; l++)
            if (p.BatchNorm[l] is { } bn)
            {
                _mergedBuffers[l] = new BatchNormStats(bn.Features);
                _gradSumBuffers[l] = new BatchNormGradSums(bn.Features);
            }
    }

    /// <summary>The sum of the gradients summed here (the commit's update adds <see cref="Addends"/> to it).</summary>
    public Gradients Sum => _gradSum;
    public IReadOnlyList<SharedTensorRegion> Addends => _addends;
    public bool AddendsOverwrite => _addendsOverwrite;
    /// <summary>Each BN layer's merged forward moments, for the running averages (null: not merged this attempt).</summary>
    public BatchNormStats?[] Merged => _merged;

    // While a worker still computes, it has a core to itself: an early rank's sum runs on this thread alone (on the core
    // of a worker that is waiting) rather than on all cores, which would slow the last worker down.
    public bool AllGradientsIn => Array.IndexOf(_losses, null) < 0;
    public bool AllSummed => _summedRanks == _participants.Length;

    /// <summary>Empties every slot for a new attempt of <paramref name="participants"/>; an aborted attempt's pooled gradients go back.</summary>
    public void Begin(long step, int attempt, Member[] participants)
    {
        (_step, _attempt, _participants) = (step, attempt, participants);
        int k = participants.Length, layers = _model.Parameters.HiddenLayers;
        if (_stats.Length != layers || (layers > 0 && _stats[0].Length != k))
        {
            _stats = new BnStats?[layers][];
            _gradSums = new BnGradStats?[layers][];
            for (int l = 0; l < layers; l++)
            {
                _stats[l] = new BnStats?[k];
                _gradSums[l] = new BnGradStats?[k];
            }
        }
        for (int l = 0; l < layers; l++)
        {
            // (an aborted attempt's unmerged partials are left to the garbage collector)
            Array.Clear(_stats[l]);
            Array.Clear(_gradSums[l]);
            _merged[l] = null;
        }
        foreach (var pending in _pendingTensors) // of an aborted attempt
            if (pending is not null && !ReferenceEquals(pending, InSharedMemory)) TensorPool.Release(pending);
        if (_losses.Length != k)
        {
            _losses = new LossPartial?[k];
            _pendingTensors = new float[k][][];
        }
        Array.Clear(_losses);
        Array.Clear(_pendingTensors);
        _summedRanks = 0; // (rank 0's gradients overwrite the sum: no need to clear it)
        _addends.Clear(); // (an aborted attempt's)
    }

    public bool HasStats(int layer, int rank) => _stats[layer][rank] is not null;

    /// <summary>
    /// Takes a rank's forward BN partial. Once the layer has every rank's, they are merged in rank order (Chan's merge)
    /// into the layer's buffer, which is returned; null: the layer waits for other ranks.
    /// </summary>
    public BatchNormStats? AddStats(int rank, BnStats m)
    {
        var slots = _stats[m.Layer];
        slots[rank] = m;
        if (Array.IndexOf(slots, null) >= 0) return null;
        var merged = _mergedBuffers[m.Layer]!;
        merged.Clear();
        foreach (var s in slots)
        {
            merged.Merge(s!.Count, s.Mean, s.M2);
            TensorPool.Return(s.Mean);
            TensorPool.Return(s.M2);
        }
        _merged[m.Layer] = merged;
        return merged;
    }

    public bool HasGradSums(int layer, int rank) => _gradSums[layer][rank] is not null;

    /// <summary>Takes a rank's BN gradient sums; once the layer has every rank's, returns their rank-order sum (null: it waits).</summary>
    public BatchNormGradSums? AddGradSums(int rank, BnGradStats m)
    {
        var slots = _gradSums[m.Layer];
        slots[rank] = m;
        if (Array.IndexOf(slots, null) >= 0) return null;
        var sum = _gradSumBuffers[m.Layer]!;
        sum.Clear();
        foreach (var s in slots)
        {
            sum.Add(s!.SumDy, s.SumDyXhat);
            TensorPool.Return(s.SumDy);
            TensorPool.Return(s.SumDyXhat);
        }
        return sum;
    }

    public bool HasGradients(int rank) => _losses[rank] is not null;

    /// <summary>A rank's loss, in a step whose update the workers make (its gradients stay in the shared files).</summary>
    public void AddLoss(int rank, LossPartial loss) => _losses[rank] = loss;

    /// <summary>
    /// A rank's loss and gradients (<paramref name="tensors"/> null: waiting in its shared-memory file), to be summed by
    /// <see cref="SumInRankOrder"/> once every lower rank is.
    /// </summary>
    public void AddGradients(int rank, LossPartial loss, float[][]? tensors)
    {
        _losses[rank] = loss;
        _pendingTensors[rank] = tensors ?? InSharedMemory;
    }

    /// <summary>
    /// Adds the waiting gradients of the next ranks to the sum (0 + g₀ + g₁ + …): pooled arrays go back to the pool,
    /// shared-memory gradients are added straight from the files, consecutive ready ranks in one pass over memory
    /// (on all cores once every gradient is in). A file's gradients that are unusable (another stamp, torn,
    /// non-finite) are returned.
    /// </summary>
    public UnusableContribution? SumInRankOrder()
    {
        while (_summedRanks < _pendingTensors.Length && _pendingTensors[_summedRanks] is { } tensors)
        {
            int rank = _summedRanks;
            bool overwrite = rank == 0; // the sum still holds an earlier step's: rank 0 writes it without reading it
            if (ReferenceEquals(tensors, InSharedMemory))
            {
                // This rank and the ready ranks after it whose gradients also wait in their files: one pass adds them all.
                int end = rank;
                _regionBatch.Clear();
                while (end < _pendingTensors.Length && ReferenceEquals(_pendingTensors[end], InSharedMemory) && _regionBatch.Count < SharedTensorRegion.MaxRegionsPerPass)
                {
                    // (A worker that registered again meanwhile has no file any more: its old gradients are gone with it.)
                    if (_participants[end].Region is not { } region) break;
                    _regionBatch.Add(region);
                    end++;
                }
                if (end == rank)
                    return new(rank, "gradients that are not in its shared-memory file (another stamp, or changed while read)");
                if (end == _pendingTensors.Length && AllGradientsIn && _model.Optimizer.Settings.Kind == OptimizerKind.Adam)
                    return LeaveToTheUpdate(rank, end, overwrite);
                var nonFinite = _regionNonFinite.AsSpan(0, end - rank);
                if (!SharedTensorRegion.TryAddGradients(_regionBatch, _step, _attempt, _gradSum.Tensors, overwrite, AllGradientsIn ? _model.Threads : null, nonFinite, out int failed))
                    return new(rank + failed, "gradients that are not in its shared-memory file (another stamp, or changed while read)");
                if (nonFinite.IndexOf(true) is var bad and >= 0)
                    return UnusableContribution.NonFinite(rank + bad, "gradient");
                for (int r = rank; r < end; r++) _pendingTensors[r] = null;
                _summedRanks = end;
            }
            else
            {
                for (int i = 0; i < tensors.Length; i++)
                {
                    var sum = _gradSum.Tensors[i].Values;
                    if (overwrite) TensorPrimitives.Add(tensors[i], 0f, sum); // = 0 + g₀, bit for bit
                    else TensorPrimitives.Add(sum, tensors[i], sum);
                }
                TensorPool.Release(tensors);
                _pendingTensors[_summedRanks++] = null;
            }
        }
        return null;
    }

    /// <summary>
    /// The last ranks' files [rank, end) are added by the commit's Adam update as it reads them. Their stamps are
    /// checked here, before anything changes; their finiteness was checked by their workers as they wrote them (a
    /// worker sends non-finite gradients in its message instead), and the update checks the sums again.
    /// </summary>
    private UnusableContribution? LeaveToTheUpdate(int rank, int end, bool overwrite)
    {
        for (int i = 0; i < _regionBatch.Count; i++)
            if (!_regionBatch[i].TryBeginReadGradients(_step, _attempt, out _addendSequences[i]))
                return new(rank + i, "gradients that are not in its shared-memory file (another stamp, or being written)");
        _addends.Clear();
        _addends.AddRange(_regionBatch);
        _firstAddendRank = rank;
        _addendsOverwrite = overwrite;
        for (int r = rank; r < end; r++) _pendingTensors[r] = null;
        _summedRanks = end;
        return null;
    }

    /// <summary>
    /// After an update that read the last ranks' files: what went wrong, if they changed meanwhile or their sums were
    /// not finite (null: intact). Either can only happen when a process broke the protocol (a worker writes its file
    /// only during its own attempt and checks what it writes), and the update has been applied already.
    /// </summary>
    public string? AddendsProblem(bool finite)
    {
        if (_addends.Count == 0) return null;
        string? problem = finite ? null : "were not finite (the update used them)";
        for (int i = 0; i < _addends.Count && problem is null; i++)
            if (!_addends[i].EndReadGradients(_addendSequences[i]))
                problem = $"of worker {_participants[_firstAddendRank + i].Id} changed while the update read them";
        _addends.Clear();
        return problem;
    }

    /// <summary>
    /// A sharded update: every rank has made its slice in <paramref name="area"/>, from finite gradients. A rank whose
    /// own gradients were not finite is named before one whose slice's sums were not (the sums of a non-finite gradient).
    /// </summary>
    public UnusableContribution? CheckSlices(SharedShardedUpdate area)
    {
        if (_sliceFlags.Length != _participants.Length) _sliceFlags = new int[_participants.Length];
        var flags = _sliceFlags;
        for (int r = 0; r < flags.Length; r++)
            if (!area.TryReadUpdate(r, _step, _attempt, out flags[r]))
                return new(r, "its gradients without its slice of the update in the shared file");
        for (int r = 0; r < flags.Length; r++)
            if ((flags[r] & SharedShardedUpdate.OwnNonFinite) != 0) return UnusableContribution.NonFinite(r, "gradient");
        for (int r = 0; r < flags.Length; r++)
        {
            if ((flags[r] & SharedShardedUpdate.GradientsChanged) != 0) return new(r, "a slice of the update from gradients that changed while it read them");
            if ((flags[r] & SharedShardedUpdate.SliceNonFinite) != 0) return UnusableContribution.NonFinite(r, "sum of gradients in its slice of the update");
        }
        return null;
    }

    /// <summary>
    /// With the attempt's <paramref name="exchange"/> (null: none, nothing to do), the forward moments the running
    /// averages need are merged here from its slots, in rank order as the workers merged them (they hold still: every
    /// worker has sent its gradients).
    /// </summary>
    public UnusableContribution? MergeSharedStats(SharedBatchNormExchange? exchange)
    {
        if (exchange is null) return null;
        for (int l = 0; l < _model.Parameters.HiddenLayers; l++)
        {
            if (_mergedBuffers[l] is not { } merged) continue;
            if (!exchange.TryMergeStats(l, _participants.Length, _step, _attempt, merged, out int failed))
                return new(failed, $"BN partials of layer {l} that changed in the shared exchange");
            _merged[l] = merged;
        }
        return null;
    }

    /// <summary>The attempt's loss: the ranks' partials added in rank order.</summary>
    public LossPartial Loss()
    {
        var loss = new LossPartial(0, 0, 0);
        foreach (var l in _losses) loss = loss.Add(l!.Value);
        return loss;
    }

    /// <summary>
    /// The participants whose contribution the attempt waits for: the missing ranks of the first incomplete reduction
    /// (a BN stage's partials are messages, or slots of the attempt's <paramref name="exchange"/>).
    /// </summary>
    public List<Member> MissingAtFirstIncompleteStage(SharedBatchNormExchange? exchange)
    {
        int k = _participants.Length;
        var p = _model.Parameters;
        bool[] Present(int layer, bool backward) => exchange is { } shared
            ? Enumerable.Range(0, k).Select(r => shared.Published(layer, backward, r, _step, _attempt)).ToArray()
            : Array.ConvertAll(backward ? _gradSums[layer] : (object?[])_stats[layer], s => s is not null);
        IEnumerable<bool[]> Stages()
        {
            for (int l = 0; l < p.HiddenLayers; l++) if (p.BatchNorm[l] is not null) yield return Present(l, backward: false);
            for (int l = p.HiddenLayers - 1; l >= 0; l--) if (p.BatchNorm[l] is not null) yield return Present(l, backward: true);
            yield return Array.ConvertAll(_losses, l => l is not null);
        }
        foreach (var present in Stages())
        {
            var missing = new List<Member>();
            for (int r = 0; r < present.Length; r++) if (!present[r]) missing.Add(_participants[r]);
            if (missing.Count > 0) return missing;
        }
        return [];
    }
}
