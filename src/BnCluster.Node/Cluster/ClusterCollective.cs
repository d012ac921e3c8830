using System.Diagnostics;
using BnCluster.Actors;
using BnCluster.Core.Protocol;
using BnCluster.Core.Training;
using Serilog;

namespace BnCluster.Node.Cluster;

/// <summary>
/// The worker's <see cref="ICollective"/>: sends its partials to the coordinator and awaits the matching global
/// reply, routed by (step, attempt, layer, direction) from the worker actor's mailbox (<see cref="Deliver(BnGlobal)"/>).
/// The awaiting step runs outside the actor, so the actor keeps receiving while the step waits.
/// Each sent message gets rented copies (the step reuses its workspace buffers); the coordinator, or the codec once
/// it has encoded them, returns them to the pool.
/// It records each wait (<see cref="Waits"/>); the worker sends them to the coordinator with its gradients,
/// and the coordinator logs them.
/// </summary>
internal sealed class ClusterCollective(IActorRef coordinator, IActorRef self, ILogger log) : ICollective
{
    private readonly object _gate = new();
    private readonly Dictionary<(long Step, int Attempt, int Layer, bool Backward), TaskCompletionSource<object>> _pending = [];
    private readonly List<BnWait> _waits = [];
    private long _step;
    private int _attempt;

    /// <summary>Time spent waiting for global statistics in the current step.</summary>
    public TimeSpan WaitTotal { get; private set; }

    /// <summary>The waits of the current step, in order.</summary>
    public BnWait[] Waits() => _waits.ToArray();

    public void Begin(long step, int attempt)
    {
        _step = step;
        _attempt = attempt;
        _waits.Clear();
        WaitTotal = TimeSpan.Zero;
    }

    public async ValueTask<BatchNormStats> AllReduceStatsAsync(int layer, BatchNormStats local, CancellationToken cancellationToken = default)
    {
        var reply = (BnGlobal)await Exchange(layer, false,
            new BnStats(_step, _attempt, layer, local.Count, TensorPool.RentCopy(local.Mean), TensorPool.RentCopy(local.M2)), cancellationToken).ConfigureAwait(false);
        return new BatchNormStats(reply.Count, reply.Mean, reply.M2);
    }

    public async ValueTask<BatchNormGradSums> AllReduceGradSumsAsync(int layer, BatchNormGradSums local, CancellationToken cancellationToken = default)
    {
        var reply = (BnGradGlobal)await Exchange(layer, true,
            new BnGradStats(_step, _attempt, layer, TensorPool.RentCopy(local.SumDy), TensorPool.RentCopy(local.SumDyXhat)), cancellationToken).ConfigureAwait(false);
        return new BatchNormGradSums(reply.SumDy, reply.SumDyXhat);
    }

    private async Task<object> Exchange(int layer, bool backward, object message, CancellationToken ct)
    {
        var key = (_step, _attempt, layer, backward);
        var tcs = new TaskCompletionSource<object>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate) _pending[key] = tcs; // before sending: the reply may arrive at once
        long start = Stopwatch.GetTimestamp();
        try
        {
            coordinator.Tell(message, self);
            using (ct.Register(() => tcs.TrySetCanceled(ct)))
                return await tcs.Task.ConfigureAwait(false);
        }
        finally
        {
            lock (_gate) _pending.Remove(key);
            var waited = Stopwatch.GetElapsedTime(start);
            WaitTotal += waited;
            _waits.Add(new BnWait(layer, backward, waited.TotalMilliseconds));
        }
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
