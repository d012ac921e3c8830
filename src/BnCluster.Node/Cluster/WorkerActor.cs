using System.Diagnostics;
using BnCluster.Actors;
using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Protocol;
using BnCluster.Core.Training;
using BnCluster.Node.Logging;
using Serilog;

namespace BnCluster.Node.Cluster;

/// <summary>What a worker needs: its coordinator, the network, its local copy of the dataset and who it is.</summary>
public sealed record WorkerSettings(
    IActorRef Coordinator, NetworkSpec Spec, Dataset Train, Dataset Test, string DatasetSha256, string JobId, string Node,
    ILogger Log, int Threads = 1);

/// <summary>
/// A worker (DESIGN §3): registers with the coordinator, computes input statistics of the slices it is asked
/// for, runs its shard of each step with a <see cref="ClusterCollective"/>, sends its gradients, and evaluates
/// test slices. All work runs as a chain of tasks outside the actor (one at a time, in arrival order), so the
/// actor keeps receiving BnGlobal, BnGradGlobal and StepAborted while a step awaits; StepAborted cancels it.
/// </summary>
public sealed class WorkerActor : ReceiveActor
{
    private readonly WorkerSettings _s;
    private readonly ILogger _log;
    private readonly Parameters _p;
    private readonly MatMul _matMul;
    private readonly ClusterCollective _collective;
    private Workspace? _ws;
    private Dataset? _trainN, _testN;
    private Task _chain = Task.CompletedTask;
    private CancellationTokenSource? _stepCts;
    private (long Step, int Attempt) _running = (-1, -1);
    private int _id = -1;
    // The coordinator's shared-memory file once opened (same machine): step tensors go through it. Chain only.
    private SharedTensorRegion? _region;
    // The coordinator's batch-norm exchange file once opened (same machine): the steps that say so all-reduce through it. Chain only.
    private SharedBatchNormExchange? _bnExchange;
    // …and the sharded-update file offered with it: the steps that say so make their slice of the update in it. Chain only.
    private SharedShardedUpdate? _update;
    // The gradient exchange (sending the gradients → the next work arriving) is measured here and reported
    // with the next gradients; touched by the actor and the step chain, hence the lock.
    private readonly object _exchangeGate = new();
    private (long Step, int Epoch, long SentAt)? _gradientsSent;
    private (long Step, int Epoch, double Ms)? _exchange;

    public WorkerActor(WorkerSettings settings)
    {
        _s = settings;
        _log = settings.Log.ForContext(LogEvents.Node, settings.Node);
        _p = new Parameters(settings.Spec);
        _matMul = new MatMul(settings.Threads);
        _collective = new ClusterCollective(settings.Coordinator, Self, _log);

        Receive<WorkerRegistered>(r => { _id = r.WorkerId; _log.Debug("Worker {Worker} registered ({Members} members)", r.WorkerId, r.Members); });
        Receive<RegistrationRefused>(r => { _log.Error("Worker on {Node:l} refused by the coordinator: {Reason:l}", _s.Node, r.Reason); Context.Stop(Self); });
        Receive<WorkerDropped>(OnDropped);
        Receive<SharedMemoryOffer>(OnSharedMemoryOffer);
        Receive<BatchNormExchangeOffer>(OnBatchNormExchangeOffer);
        Receive<InputStatsRequest>(OnInputStats);
        Receive<SetInputNormalization>(OnSetInput);
        Receive<StartStep>(OnStartStep);
        Receive<BnGlobal>(_collective.Deliver);
        Receive<BnGradGlobal>(_collective.Deliver);
        Receive<StepAborted>(OnAborted);
        Receive<Evaluate>(OnEvaluate);
    }

    protected override void PreStart() => Register();

    private void Register() => _s.Coordinator.Tell(new RegisterWorker(ProtocolInfo.Version, _s.JobId, _s.DatasetSha256, _s.Node), Self);

    /// <summary>The coordinator dropped this worker (it looked dead: a pause, a network blip) and has seen it alive
    /// again. Nothing here is trusted any more: register again; the coordinator re-admits it at the next step with
    /// the full parameters. A step still running is orphaned: the next StartStep cancels it.</summary>
    private void OnDropped(WorkerDropped m)
    {
        _log.Warning("Worker {Worker} on {Node:l} was dropped ({Reason:l}); registering again", _id, _s.Node, m.Reason);
        Register();
    }

    protected override void PostStop()
    {
        _stepCts?.Cancel();
        // The chain observes the cancellation at its next await; the MatMul is released when it has finished.
        _chain.ContinueWith(_ => { _matMul.Dispose(); _region?.Dispose(); _bnExchange?.Dispose(); _update?.Dispose(); }, TaskScheduler.Default);
    }

    /// <summary>Runs <paramref name="work"/> after everything queued before it, on the thread pool.</summary>
    private void Enqueue(string what, Func<Task> work)
    {
        var previous = _chain;
        _chain = Task.Run(async () =>
        {
            await previous.ConfigureAwait(false); // never faults: failures are caught below
            try { await work().ConfigureAwait(false); }
            catch (OperationCanceledException) { _log.Debug("Worker {Worker}: {What:l} cancelled", _id, what); }
            catch (Exception e) { _log.Error(e, "Worker {Worker} on {Node:l} failed in {What:l}", _id, _s.Node, what); }
        });
    }

    /// <summary>
    /// Opens the coordinator's shared-memory file (in the chain: a running step may still use the old one) and
    /// answers; a file that is not there or holds another token means another machine, and the socket it is.
    /// </summary>
    private void OnSharedMemoryOffer(SharedMemoryOffer m)
    {
        var coordinator = _s.Coordinator;
        var self = Self;
        Enqueue("shared-memory offer", () =>
        {
            _region?.Dispose();
            _region = null;
            string reason = "";
            try
            {
                _region = SharedTensorRegion.Open(m.Path, m.Token, _p);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
            {
                reason = e.Message;
                _log.Debug("Worker {Worker}: shared-memory file not taken, tensors over TCP: {Reason:l}", _id, reason);
            }
            coordinator.Tell(new SharedMemoryAnswer(m.Path, _region is not null, reason), self);
            return Task.CompletedTask;
        });
    }

    /// <summary>Opens the coordinator's new batch-norm exchange file (in the chain: a running step may still use the old one) and answers.</summary>
    private void OnBatchNormExchangeOffer(BatchNormExchangeOffer m)
    {
        var coordinator = _s.Coordinator;
        var self = Self;
        Enqueue("batch-norm exchange offer", () =>
        {
            _bnExchange?.Dispose();
            _update?.Dispose();
            _bnExchange = null;
            _update = null;
            string reason = "";
            try
            {
                _bnExchange = SharedBatchNormExchange.Open(m.Path, m.Token, _p, m.Ranks);
                if (m.UpdatePath.Length > 0) _update = SharedShardedUpdate.Open(m.UpdatePath, m.UpdateToken ?? [], _p, m.Ranks);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or ArgumentException)
            {
                reason = e.Message;
                _bnExchange?.Dispose(); // both or neither
                _bnExchange = null;
                _log.Debug("Worker {Worker}: batch-norm exchange not taken, partials over TCP: {Reason:l}", _id, reason);
            }
            coordinator.Tell(new BatchNormExchangeAnswer(m.Path, _bnExchange is not null, reason), self);
            return Task.CompletedTask;
        });
    }

    private void OnInputStats(InputStatsRequest m)
    {
        var coordinator = _s.Coordinator;
        var self = Self;
        Enqueue("input statistics", () =>
        {
            var stats = InputNormalizer.SliceStats(_s.Train, m.Start, m.Count);
            coordinator.Tell(new InputStatsReply(m.Round, stats.Count, stats.Mean, stats.M2), self);
            return Task.CompletedTask;
        });
    }

    private void OnSetInput(SetInputNormalization m) => Enqueue("input normalization", () =>
    {
        var input = new InputNormalizer(m.Mean, m.Variance, m.Epsilon);
        _trainN = input.Apply(_s.Train);
        _testN = input.Apply(_s.Test);
        return Task.CompletedTask;
    });

    private void OnStartStep(StartStep m)
    {
        EndGradientExchange();
        _stepCts?.Cancel();
        var cts = _stepCts = new CancellationTokenSource();
        _running = (m.Step, m.Attempt);
        var coordinator = _s.Coordinator;
        var self = Self;
        Enqueue($"step {m.Step} attempt {m.Attempt}", async () =>
        {
            // Parameters first, even when this attempt is already cancelled: the coordinator counts them as delivered.
            if (m.Parameters is { } snapshot) RestoreAndRelease(snapshot);
            if (m.SharedParameters && _region?.TryReadParameters(m.ParametersVersion, _p) != true)
                throw new InvalidOperationException($"the parameters of version {m.ParametersVersion} are not in the shared-memory file (it was replaced, or they were overwritten)");
            cts.Token.ThrowIfCancellationRequested();
            if (m.SharedBatchNormRanks > 0 && (_bnExchange is null || _bnExchange.Ranks < m.SharedBatchNormRanks))
                throw new InvalidOperationException($"the step's batch-norm partials go through a shared exchange of {m.SharedBatchNormRanks} ranks this worker does not have");
            var update = m.UpdateStep > 0 ? _update ?? throw new InvalidOperationException("the step's update is sharded in a file this worker does not have") : null;
            update?.ReadParameters(m.ParametersVersion, _p);
            var train = _trainN ?? throw new InvalidOperationException("a step arrived before the input normalization");
            var ws = EnsureWorkspace(m.Rows.Length);
            ws.ContributesBatchNormGradients = m.Rank == 0;
            _collective.Begin(m.Step, m.Attempt, m.Rank, _bnExchange, m.SharedBatchNormRanks);
            long start = Stopwatch.GetTimestamp();
            var loss = await TrainingStep.ForwardBackwardAsync(_p, ws, train, m.Rows, m.GlobalBatchSize, _collective, cts.Token).ConfigureAwait(false);
            var compute = Stopwatch.GetElapsedTime(start) - _collective.WaitTotal;
            long barrier = 0;
            if (update is not null)
            {
                // Gradients into this rank's slot; once every rank's are there, this rank's slice of the update (compute);
                // the wait for the others counts as the gradient exchange.
                int flags = update.WriteGradients(m.Rank, m.Step, m.Attempt, ws.Gradients.Tensors) ? 0 : SharedShardedUpdate.OwnNonFinite;
                long waitStart = Stopwatch.GetTimestamp();
                update.WaitForGradients(m.SharedBatchNormRanks, m.Step, m.Attempt, cts.Token);
                long updateStart = Stopwatch.GetTimestamp();
                barrier = updateStart - waitStart;
                flags |= update.UpdateSlice(m.Rank, m.SharedBatchNormRanks, m.Step, m.Attempt, m.ParametersVersion, m.UpdateStep);
                update.PublishUpdate(m.Rank, m.Step, m.Attempt, flags);
                compute += Stopwatch.GetElapsedTime(updateStart);
            }
            // Through the shared-memory file, or as pooled copies the message owns (the workspace's gradients are
            // overwritten next step; the coordinator returns them). Non-finite gradients always go in the message: the
            // coordinator checks those before its update, which reads the last files as it goes.
            bool viaFile = update is not null || _region?.WriteGradients(m.Step, m.Attempt, ws.Gradients.Tensors) == true;
            float[][] tensors = viaFile ? [] : TensorPool.RentCopies(ws.Gradients.Tensors);
            StepTimings timings;
            lock (_exchangeGate)
            {
                var (exchangeStep, exchangeEpoch, exchangeMs) = _exchange ?? (0, 0, 0);
                _exchange = null;
                timings = new StepTimings(compute.TotalMilliseconds, _collective.Waits(), exchangeStep, exchangeEpoch, exchangeMs);
                _gradientsSent = (m.Step, m.Epoch, Stopwatch.GetTimestamp() - barrier);
            }
            coordinator.Tell(new StepGradients(m.Step, m.Attempt, loss.SumLoss, loss.Correct, loss.Count, tensors, timings, Shared: viaFile), self);
        });
    }

    private void OnAborted(StepAborted m)
    {
        if (_running != (m.Step, m.Attempt)) return;
        _log.Debug("Worker {Worker}: step {Step} attempt {Attempt} aborted: {Reason:l}", _id, m.Step, m.Attempt, m.Reason);
        _stepCts?.Cancel();
    }

    private void OnEvaluate(Evaluate m)
    {
        EndGradientExchange();
        var coordinator = _s.Coordinator;
        var self = Self;
        Enqueue($"evaluation round {m.Round}", () =>
        {
            if (m.Parameters is { } snapshot) RestoreAndRelease(snapshot);
            var test = _testN ?? throw new InvalidOperationException("an evaluation arrived before the input normalization");
            var ws = EnsureWorkspace(Math.Max(1, Math.Min(m.Count, 1024)));
            var result = TrainingStep.Evaluate(_p, ws, test, m.Start, m.Count);
            coordinator.Tell(new EvalResult(m.Round, result.SumLoss, result.Correct, result.Count), self);
            return Task.CompletedTask;
        });
    }

    /// <summary>
    /// Time from sending the gradients to the next work arriving (the coordinator's sum and optimizer, and the
    /// parameters' travel), kept until the next gradients carry it to the coordinator.
    /// </summary>
    private void EndGradientExchange()
    {
        lock (_exchangeGate)
        {
            if (_gradientsSent is { } s) _exchange = (s.Step, s.Epoch, Stopwatch.GetElapsedTime(s.SentAt).TotalMilliseconds);
            _gradientsSent = null;
        }
    }

    /// <summary>Copies a received parameter snapshot into this worker's parameters and gives the snapshot back to the pool.</summary>
    private void RestoreAndRelease(float[][] snapshot)
    {
        ParameterSnapshot.Restore(_p, snapshot);
        TensorPool.Release(snapshot);
    }

    /// <summary>The workspace, grown (rarely: only when the shards grow after a worker left) to hold <paramref name="rows"/>.</summary>
    private Workspace EnsureWorkspace(int rows)
    {
        if (_ws is null || _ws.MaxRows < rows) _ws = new Workspace(_p, Math.Max(1, rows), _matMul);
        return _ws;
    }
}
