using System.Diagnostics;
using Akka.Actor;
using BnCluster.Collectives;
using BnCluster.Coordinator.Messages;
using BnCluster.Core.Training;
using Serilog;

namespace BnCluster.Node.Cluster;

/// <summary>
/// The worker's <see cref="ICollective"/>: sends its partials to the coordinator and awaits the matching global
/// reply, routed by (step, attempt, layer, direction) from the worker actor's mailbox (<see cref="Deliver(BnGlobal)"/>).
/// The awaiting step runs outside the actor, so the actor keeps receiving while the step waits.
/// Each sent message gets rented copies (the step reuses its workspace buffers); the coordinator, or the codec once
/// it has encoded them, returns them to the pool.
/// In a step whose workers all run on the coordinator's machine, the partials go through the coordinator's
/// <see cref="SharedBatchNormExchange"/> instead: this worker publishes its own and merges everyone's, in rank
/// order, as the coordinator would (no message, no copy rented).
/// It records each wait (<see cref="Waits"/>); the worker sends them to the coordinator with its gradients,
/// and the coordinator logs them.
/// </summary>
internal sealed class ClusterCollective(CoordinatorLink coordinator, ILogger log) : ICollective
{
    private readonly object _gate = new();
    private readonly Dictionary<(long Step, int Attempt, int Layer, bool Backward), TaskCompletionSource<object>> _pending = [];
    private readonly List<BnWait> _waits = [];
    private long _step;
    private int _attempt;
    private int _rank;
    private SharedBatchNormExchange? _exchange; // this step's, when its partials go through shared memory
    private int _exchangeRanks;
    // The global statistics merged from the exchange, per hidden layer (allocated at a layer's first exchange).
    private BatchNormStats?[] _mergedStats = [];
    private BatchNormGradSums?[] _summedGradSums = [];

    /// <summary>Time spent waiting for global statistics in the current step.</summary>
    public TimeSpan WaitTotal { get; private set; }

    /// <summary>The waits of the current step, in order.</summary>
    public BnWait[] Waits() => _waits.ToArray();

    /// <summary>Starts a step's attempt; with <paramref name="exchange"/>, its <paramref name="ranks"/> workers all-reduce through it.</summary>
    public void Begin(long step, int attempt, int rank = 0, SharedBatchNormExchange? exchange = null, int ranks = 0)
    {
        _step = step;
        _attempt = attempt;
        _rank = rank;
        _exchange = ranks > 0 ? exchange : null;
        _exchangeRanks = ranks;
        _waits.Clear();
        WaitTotal = TimeSpan.Zero;
    }

    public async ValueTask<BatchNormStats> AllReduceStatsAsync(int layer, BatchNormStats local, CancellationToken cancellationToken = default)
    {
        if (_exchange is { } exchange)
        {
            var merged = MergedStats(layer, local.Features);
            exchange.PublishStats(layer, _rank, _step, _attempt, local);
            long start = Stopwatch.GetTimestamp();
            try { exchange.WaitAndMergeStats(layer, _exchangeRanks, _step, _attempt, merged, cancellationToken); }
            finally { RecordWait(layer, false, start); }
            return merged;
        }
        var reply = (BnGlobal)await Exchange(layer, false,
            new BnStats(_step, _attempt, layer, local.Count, TensorPool.RentCopy(local.Mean), TensorPool.RentCopy(local.M2)), cancellationToken).ConfigureAwait(false);
        return new BatchNormStats(reply.Count, reply.Mean, reply.M2);
    }

    public async ValueTask<BatchNormGradSums> AllReduceGradSumsAsync(int layer, BatchNormGradSums local, Action? whileWaiting, CancellationToken cancellationToken = default)
    {
        if (_exchange is { } exchange)
        {
            var sum = SummedGradSums(layer, local.Features);
            exchange.PublishGradSums(layer, _rank, _step, _attempt, local);
            whileWaiting?.Invoke();
            long start = Stopwatch.GetTimestamp();
            try { exchange.WaitAndAddGradSums(layer, _exchangeRanks, _step, _attempt, sum, cancellationToken); }
            finally { RecordWait(layer, true, start); }
            return sum;
        }
        var reply = (BnGradGlobal)await Exchange(layer, true,
            new BnGradStats(_step, _attempt, layer, TensorPool.RentCopy(local.SumDy), TensorPool.RentCopy(local.SumDyXhat)), cancellationToken, whileWaiting).ConfigureAwait(false);
        return new BatchNormGradSums(reply.SumDy, reply.SumDyXhat);
    }

    private async Task<object> Exchange(int layer, bool backward, ITrainingMessage message, CancellationToken ct, Action? whileWaiting = null)
    {
        var key = (_step, _attempt, layer, backward);
        var tcs = new TaskCompletionSource<object>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate) _pending[key] = tcs; // before sending: the reply may arrive at once
        long start = Stopwatch.GetTimestamp();
        try
        {
            coordinator.Tell(message);
            whileWaiting?.Invoke(); // (on the step's thread: the method runs synchronously up to its first await)
            start = Stopwatch.GetTimestamp(); // the wait starts after the work done meanwhile
            using (ct.Register(() => tcs.TrySetCanceled(ct)))
                return await tcs.Task.ConfigureAwait(false);
        }
        finally
        {
            lock (_gate) _pending.Remove(key);
            RecordWait(layer, backward, start);
        }
    }

    private void RecordWait(int layer, bool backward, long start)
    {
        var waited = Stopwatch.GetElapsedTime(start);
        WaitTotal += waited;
        _waits.Add(new BnWait(layer, backward, waited.TotalMilliseconds));
    }

    private BatchNormStats MergedStats(int layer, int features)
    {
        if (_mergedStats.Length <= layer) Array.Resize(ref _mergedStats, layer + 1);
        return _mergedStats[layer] ??= new BatchNormStats(features);
    }

    private BatchNormGradSums SummedGradSums(int layer, int features)
    {
        if (_summedGradSums.Length <= layer) Array.Resize(ref _summedGradSums, layer + 1);
        return _summedGradSums[layer] ??= new BatchNormGradSums(features);
    }

    public void Deliver(BnGlobal g) => Complete((g.Step, g.Attempt, g.Layer, false), g);

    public void Deliver(BnGradGlobal g) => Complete((g.Step, g.Attempt, g.Layer, true), g);

    private void Complete((long, int, int, bool) key, object reply)
    {
        TaskCompletionSource<object>? tcs;
        lock (_gate) _pending.TryGetValue(key, out tcs);
        if (tcs is null) log.Debug("Ignored {MessageType:l} for step/attempt/layer {Key} nobody awaits", reply.GetType().Name, key.ToString());
        else tcs.TrySetResult(reply);
    }
}
