using System.Diagnostics;
using Akka.Actor;
using Akka.Event;
using BnCluster.Coordinator.DataPlane;
using BnCluster.Collectives;
using BnCluster.Coordinator.Messages;
using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Training;
using BnCluster.Node.Logging;
using Serilog;

namespace BnCluster.Node.Cluster;

/// <summary>What a worker needs: its coordinator, the network, its local copy of the dataset and who it is.</summary>
public sealed record WorkerSettings(
    IActorRef Coordinator, NetworkSpec Spec, Dataset Train, Dataset Test, string DatasetSha256, string JobId, string Node,
    ILogger Log, int Threads = 1);

/// <summary>
/// A worker (docs/design.md, "One training step"): registers with the coordinator, computes input statistics of the slices it is asked
/// for, runs its shard of each step with a <see cref="ClusterCollective"/>, sends its gradients, and evaluates
/// test slices. All work runs as a chain of tasks outside the actor (one at a time, in arrival order), so the
/// actor keeps receiving BnGlobal, BnGradGlobal and StepAborted while a step awaits; StepAborted cancels it.
/// The actor and the chain share no mutable state and no lock. The actor hands each piece of work what it needs
/// (its message, a cancellation token, the time it arrived); the chain keeps its own state (workspace, shared files,
/// the gradient exchange's timing) to itself and tells the actor what it must decide on as messages: a step it runs
/// ahead (<see cref="Lookahead"/>, which the actor confirms or cancels; the next one after a confirmed step the actor
/// registers itself as it confirms) and work that failed (<see cref="WorkFailed"/>: the coordinator is told, the run
/// fails with the reason, and the actor stops). The end of the run
/// (<see cref="TrainingDone"/>) is published on the event stream, where a worker process waits for it, and stops the actor.
/// </summary>
public sealed class WorkerActor : ReceiveActor
{
    /// <summary>The step chain → the actor: a piece of work threw.</summary>
    private sealed record WorkFailed(string What, Exception Error) : INoSerializationVerificationNeeded;
    /// <summary>The connection to the coordinator's data plane is up (piped from the connect task).</summary>
    private sealed record DataChannelReady(DataChannel Channel) : INoSerializationVerificationNeeded;
    /// <summary>Connecting to the coordinator's data plane failed (piped from the connect task).</summary>
    private sealed record DataChannelFailed(Exception Error) : INoSerializationVerificationNeeded;

    private readonly CoordinatorLink _link;

    private readonly WorkerSettings _s;
    private readonly ILogger _log;
    private readonly Parameters _p; // (values: the chain's; the actor reads only their shapes)
    private readonly MatMul _matMul;
    private readonly ClusterCollective _collective; // the step awaits its replies, the actor delivers them
    private readonly IActorRef _self; // for the step chain, which runs outside the actor

    // The actor's own: only its handlers touch them.
    private Task _chain = Task.CompletedTask;
    private CancellationTokenSource? _stepCts;
    private (long Step, int Attempt) _running = (-1, -1);
    private int _id = -1; // (the chain reads it for its logs)

    // The step chain's own: only work in the chain touches them (and PostStop, once the chain has finished).
    private Workspace? _ws;
    private Dataset? _trainN, _testN;
    // The coordinator's shared-memory file once opened (same machine): step tensors go through it. Chain only.
    private SharedTensorRegion? _region;
    // The coordinator's batch-norm exchange file once opened (same machine): the steps that say so all-reduce through it. Chain only.
    private SharedBatchNormExchange? _bnExchange;
    // …and the sharded-update file offered with it: the steps that say so make their slice of the update in it. Chain only.
    private SharedShardedUpdate? _update;
    // The gradient exchange (sending the gradients → the next work arriving), reported with the next gradients. Chain
    // only: the actor stamps the work's arrival and hands the stamp over with it (EndGradientExchange).
    private (long Step, int Epoch, long Sent, long Barrier)? _gradientsSent;
    private (long Step, int Epoch, double Ms)? _exchange;

    public WorkerActor(WorkerSettings settings)
    {
        _s = settings;
        _log = settings.Log.ForContext(LogEvents.Node, settings.Node);
        try
        {
            _p = new Parameters(settings.Spec);
            _matMul = new MatMul(settings.Threads);
        }
        catch (Exception e) when (e is OutOfMemoryException or OverflowException or ArgumentException)
        {
            // The run fails with the reason instead of waiting for a worker that never registers; the actor stops
            // without starting (PreStart does not register it, PostStop finds nothing to release).
            settings.Coordinator.Tell(new WorkerFailed($"cannot start: {e.Message}"), Self);
            _p = null!;
            _matMul = null!;
            _link = null!;
            _collective = null!;
            _self = Self;
            Context.Stop(Self);
            return;
        }
        _self = Self;
        _link = new CoordinatorLink(settings.Coordinator, Self);
        _collective = new ClusterCollective(_link, _log);

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
        Receive<Lookahead>(OnLookahead);
        Receive<LookaheadDropped>(d => CancelLookahead(d.Lookahead));
        Receive<Evaluate>(OnEvaluate);
        Receive<DataChannelOffer>(OnDataChannelOffer);
        Receive<DataChannelReady>(r =>
        {
            _link.Channel = r.Channel;
            _log.Information("Worker {Worker} on {Node:l}: the step's messages over the data plane ({Remote:l})", _id, _s.Node, r.Channel.Remote);
        });
        Receive<DataChannelFailed>(f =>
            _log.Warning("Worker {Worker} on {Node:l}: no data plane ({Reason:l}); the step's messages go through Akka", _id, _s.Node, f.Error.Message));
        Receive<DataPlaneListener.Closed>(c =>
        {
            c.Channel.Dispose();
            if (!ReferenceEquals(_link.Channel, c.Channel)) return;
            _link.Channel = null;
            _log.Warning("Worker {Worker} on {Node:l}: the data channel closed ({Reason:l}); the step's messages go through Akka", _id, _s.Node, c.Reason);
        });
        Receive<TrainingDone>(done =>
        {
            Context.System.EventStream.Publish(done);
            Context.Stop(Self);
        });
        Receive<WorkFailed>(f =>
        {
            _link.Tell(new WorkerFailed($"{f.What}: {f.Error.Message}"));
            throw new InvalidOperationException($"worker {_id} on {_s.Node} failed in {f.What}: {f.Error.Message}", f.Error);
        });
    }

    protected override void PreStart()
    {
        if (_p is not null) Register(); // (null: it could not start and is stopping)
    }

    private void Register() => _s.Coordinator.Tell(new RegisterWorker(ProtocolInfo.Version, _s.JobId, _s.DatasetSha256, _s.Node), Self);

    /// <summary>The coordinator dropped this worker (it looked dead: a pause, a network blip) and has seen it alive
    /// again. Nothing here is trusted any more: register again; the coordinator re-admits it at the next step with
    /// the full parameters. A step still running is orphaned: the next StartStep cancels it.</summary>
    private void OnDropped(WorkerDropped m)
    {
        CancelLookahead();
        _log.Warning("Worker {Worker} on {Node:l} was dropped ({Reason:l}); registering again", _id, _s.Node, m.Reason);
        Register();
    }

    protected override void PostStop()
    {
        _link?.Channel?.Dispose(); // (null when it could not start)
        CancelLookahead();
        _stepCts?.Cancel();
        // The chain observes the cancellation at its next await; the MatMul is released when it has finished.
        _chain.ContinueWith(_ => { _matMul?.Dispose(); _region?.Dispose(); _bnExchange?.Dispose(); _update?.Dispose(); }, TaskScheduler.Default);
    }

    /// <summary>
    /// The coordinator's data plane, for a worker that shares no memory with it: connected outside the actor, the result
    /// piped back. Until it is up (or if it never is) the step's messages go as Akka messages.
    /// </summary>
    private void OnDataChannelOffer(DataChannelOffer offer)
    {
        _link.Channel?.Dispose();
        _link.Channel = null;
        var self = Self;
        DataChannel.ConnectAsync(offer, DataChannel.FrameLimit(_p), self, _s.Coordinator,
                (channel, reason) => self.Tell(new DataPlaneListener.Closed(channel, reason)), CancellationToken.None)
            .PipeTo(self, success: channel => new DataChannelReady(channel), failure: e => new DataChannelFailed(e));
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
            catch (Exception e)
            {
                _log.Error(e, "Worker {Worker} on {Node:l} failed in {What:l}", _id, _s.Node, what);
                _self.Tell(new WorkFailed(what, e));
            }
        });
    }

    /// <summary>
    /// Opens the coordinator's shared-memory file (in the chain: a running step may still use the old one) and
    /// answers; a file that is not there or holds another token means another machine, and the socket it is.
    /// </summary>
    private void OnSharedMemoryOffer(SharedMemoryOffer m)
    {
        CancelLookahead();
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
            _link.Tell(new SharedMemoryAnswer(m.Path, _region is not null, reason));
            return Task.CompletedTask;
        });
    }

    /// <summary>Opens the coordinator's new batch-norm exchange file (in the chain: a running step may still use the old one) and answers.</summary>
    private void OnBatchNormExchangeOffer(BatchNormExchangeOffer m)
    {
        CancelLookahead();
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
            _link.Tell(new BatchNormExchangeAnswer(m.Path, _bnExchange is not null, reason));
            return Task.CompletedTask;
        });
    }

    private void OnInputStats(InputStatsRequest m)
    {
        Enqueue("input statistics", () =>
        {
            var stats = InputNormalizer.SliceStats(_s.Train, m.Start, m.Count);
            _link.Tell(new InputStatsReply(m.Round, stats.Count, stats.Mean, stats.M2));
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

    /// <summary>
    /// A step run ahead of its StartStep (StartStep.NextRows): <see cref="Announced"/>, run after step
    /// <see cref="After"/>. The actor learns of it before <see cref="After"/>'s gradients go (the coordinator sends the
    /// announced StartStep only once it has them all, so the actor always knows of it first): the chain tells it this
    /// object as a message, or, for a step run ahead after a confirmed one, the actor registers it itself when it
    /// confirms that one (the chain then goes straight to sending the gradients). The actor alone decides: it cancels
    /// <see cref="Cts"/>, or completes <see cref="Confirmed"/> with the coordinator's own StartStep and the step that one
    /// announces, registered, which the chain awaits (an answer, like a reply message; the chain never writes to it).
    /// </summary>
    private sealed class Lookahead(StartStep announced, (long Step, int Attempt) after) : INoSerializationVerificationNeeded, IDeadLetterSuppression
    {
        public StartStep Announced { get; } = announced;
        public (long Step, int Attempt) After { get; } = after;
        public CancellationTokenSource Cts { get; } = new();
        public TaskCompletionSource<Confirmation> Confirmed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>A step run ahead, confirmed: the coordinator's StartStep, and the step it announces, which the chain runs ahead next (null: none).</summary>
    private readonly record struct Confirmation(StartStep Step, Lookahead? Next);

    /// <summary>The step chain → the actor: the look-ahead ended on the chain's side (a slice of the step before was not clean).</summary>
    private sealed record LookaheadDropped(Lookahead Lookahead) : INoSerializationVerificationNeeded, IDeadLetterSuppression;

    // The actor's own.
    private bool _ranAhead; // (said once)
    private Lookahead? _lookahead; // the step the chain runs ahead, from its notice or registration until confirmed or cancelled

    /// <summary>
    /// The chain runs a step ahead (the first after a StartStep it was not running ahead). Kept, unless the step it
    /// follows was aborted or replaced by another StartStep since (those messages came before this notice, while the
    /// chain was past its last look at the step's token): then it is cancelled at once, as they would have done had
    /// they come after it, rather than hold up the chain.
    /// </summary>
    private void OnLookahead(Lookahead la)
    {
        if (_running == la.After && _stepCts is { IsCancellationRequested: false }) _lookahead = la;
        else Cancel(la);
    }

    /// <summary>Anything but the announced StartStep ends a look-ahead: its step is not the next one after all.</summary>
    private void CancelLookahead(Lookahead? only = null)
    {
        if (_lookahead is not { } la || (only is not null && !ReferenceEquals(la, only))) return;
        _lookahead = null;
        Cancel(la);
    }

    private static void Cancel(Lookahead la)
    {
        la.Cts.Cancel();
        la.Confirmed.TrySetCanceled();
    }

    private void OnStartStep(StartStep m)
    {
        if (_lookahead is { } la && la.Announced.SameWork(m))
        {
            // The step this worker is running ahead: it goes on as this message's, with this message's look-ahead,
            // which the chain runs once it has sent this step's gradients. It is registered here rather than told by the
            // chain, which would wake the actor on the step's core every step (measured: ~2,400 more context switches
            // in a 200-step bench of 2 worker processes, and more waiting).
            _stepCts = la.Cts;
            _running = (m.Step, m.Attempt);
            _lookahead = m.Announced() is { } next ? new Lookahead(next, _running) : null;
            la.Confirmed.TrySetResult(new Confirmation(m, _lookahead));
            if (!_ranAhead) _log.Information("Worker {Worker}: step {Step} run ahead of its StartStep and confirmed; the steps go on without waiting for the coordinator", _id, m.Step);
            _ranAhead = true;
            return;
        }
        CancelLookahead();
        long arrivedAt = Stopwatch.GetTimestamp(); // (the previous gradient exchange ends here)
        _stepCts?.Cancel();
        var cts = _stepCts = new CancellationTokenSource();
        _running = (m.Step, m.Attempt);
        EnqueueSteps(m, arrivedAt, cts.Token);
    }

    // (Its own method: the closure is allocated only for a step that is not confirmed.)
    private void EnqueueSteps(StartStep m, long arrivedAt, CancellationToken token) =>
        Enqueue($"step {m.Step} attempt {m.Attempt}", () => RunSteps(m, arrivedAt, token));

    /// <summary>What a step's forward and backward gave.</summary>
    private readonly record struct StepResult(LossPartial Loss, TimeSpan Compute, BnWait[] Waits);

    /// <summary>
    /// Runs step <paramref name="m"/>, then, while the coordinator announces the next step (sharded steps), that one
    /// ahead, whole: once every rank has reported a clean slice of this step's update, the next state version is
    /// complete and is the one the coordinator will commit (it only counts the step), so the next step's forward,
    /// backward and slice of the update go on without waiting for it. They write only slots stamped with the announced
    /// attempt and the state version after the next, which the coordinator never holds as committed while this step
    /// is unconfirmed (three versions); the gradients go to the coordinator only once its StartStep for that step has
    /// come, and anything else cancels the step run ahead.
    /// </summary>
    private async Task RunSteps(StartStep m, long arrivedAt, CancellationToken token)
    {
        EndGradientExchange(arrivedAt);
        var result = await ForwardBackward(m, token).ConfigureAwait(false);
        Lookahead? running = null; // the look-ahead m is, while unconfirmed
        while (true)
        {
            var (compute, barrier) = UpdateSlice(m, result, token);
            Lookahead? lookahead;
            if (running is null)
            {
                lookahead = m.UpdateStep > 0 && _update is not null && m.Announced() is { } announced ? new Lookahead(announced, (m.Step, m.Attempt)) : null;
                if (lookahead is not null) _self.Tell(lookahead); // before the gradients: the announced StartStep comes after them
            }
            else
            {
                long confirmStart = Stopwatch.GetTimestamp();
                try { (m, lookahead) = await running.Confirmed.Task.WaitAsync(running.Cts.Token).ConfigureAwait(false); }
                catch (OperationCanceledException)
                {
                    _log.Debug("Worker {Worker}: step {Step} run ahead cancelled", _id, running.Announced.Step);
                    return;
                }
                AddToExchange(Stopwatch.GetElapsedTime(confirmStart)); // (the previous step's: waiting for the coordinator)
            }
            Send(m, result, compute, barrier, lookahead is not null);
            if (lookahead is null) return;
            try
            {
                long waitStart = Stopwatch.GetTimestamp();
                if (!_update!.WaitForUpdates(m.SharedBatchNormRanks, m.Step, m.Attempt, lookahead.Cts.Token))
                {
                    _self.Tell(new LookaheadDropped(lookahead)); // a slice was not clean: the coordinator will abort this step
                    return;
                }
                AddToExchange(Stopwatch.GetElapsedTime(waitStart));
                result = await ForwardBackward(lookahead.Announced, lookahead.Cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                _log.Debug("Worker {Worker}: step {Step} run ahead cancelled", _id, lookahead.Announced.Step);
                return;
            }
            (m, running, token) = (lookahead.Announced, lookahead, lookahead.Cts.Token);
        }
    }

    /// <summary>The parameters of <paramref name="m"/>'s version, then its forward and backward on this worker's rows.</summary>
    private async Task<StepResult> ForwardBackward(StartStep m, CancellationToken token)
    {
        // Parameters first, even when this attempt is already cancelled: the coordinator counts them as delivered.
        if (m.Parameters is { } snapshot) RestoreAndRelease(snapshot);
        if (m.SharedParameters && _region?.TryReadParameters(m.ParametersVersion, _p) != true)
            throw new InvalidOperationException($"the parameters of version {m.ParametersVersion} are not in the shared-memory file (it was replaced, or they were overwritten)");
        token.ThrowIfCancellationRequested();
        if (m.SharedBatchNormRanks > 0 && (_bnExchange is null || _bnExchange.Ranks < m.SharedBatchNormRanks))
            throw new InvalidOperationException($"the step's batch-norm partials go through a shared exchange of {m.SharedBatchNormRanks} ranks this worker does not have");
        if (m.UpdateStep > 0) (_update ?? throw new InvalidOperationException("the step's update is sharded in a file this worker does not have")).ReadParameters(m.ParametersVersion, _p);
        var train = _trainN ?? throw new InvalidOperationException("a step arrived before the input normalization");
        var ws = EnsureWorkspace(m.Rows.Length);
        ws.ContributesBatchNormGradients = m.Rank == 0;
        _collective.Begin(m.Step, m.Attempt, m.Rank, _bnExchange, m.SharedBatchNormRanks);
        long start = Stopwatch.GetTimestamp();
        var loss = await TrainingStep.ForwardBackwardAsync(_p, ws, train, m.Rows, m.GlobalBatchSize, _collective, token).ConfigureAwait(false);
        return new StepResult(loss, Stopwatch.GetElapsedTime(start) - _collective.WaitTotal, _collective.Waits());
    }

    /// <summary>
    /// A sharded step's gradients into this rank's slot; once every rank's are there, this rank's slice of the update
    /// (compute) and its report. Returns the compute time so far and the wait for the others' gradients (ticks, part
    /// of the gradient exchange). Not sharded: nothing to do here.
    /// </summary>
    private (TimeSpan Compute, long Barrier) UpdateSlice(StartStep m, StepResult result, CancellationToken token)
    {
        if (m.UpdateStep <= 0 || _update is not { } update) return (result.Compute, 0);
        var ws = _ws!;
        int flags = update.WriteGradients(m.Rank, m.SharedBatchNormRanks, m.Step, m.Attempt, ws.Gradients.Tensors) ? 0 : SharedShardedUpdate.OwnNonFinite;
        long waitStart = Stopwatch.GetTimestamp();
        update.WaitForGradients(m.SharedBatchNormRanks, m.Step, m.Attempt, token);
        long updateStart = Stopwatch.GetTimestamp();
        flags |= update.UpdateSlice(m.Rank, m.SharedBatchNormRanks, m.Step, m.Attempt, m.ParametersVersion, m.UpdateStep, ws.Gradients.Tensors);
        update.PublishUpdate(m.Rank, m.Step, m.Attempt, flags);
        return (result.Compute + Stopwatch.GetElapsedTime(updateStart), updateStart - waitStart);
    }

    /// <summary>Step <paramref name="m"/>'s gradients (and timings) to the coordinator; <paramref name="runAhead"/>: the step it announces is run ahead.</summary>
    private void Send(StartStep m, StepResult result, TimeSpan compute, long barrier, bool runAhead)
    {
        var ws = _ws!;
        // Through the shared-memory file, or as pooled copies the message owns (the workspace's gradients are
        // overwritten next step; the coordinator returns them). Non-finite gradients always go in the message: the
        // coordinator checks those before its update, which reads the last files as it goes.
        bool sharded = m.UpdateStep > 0 && _update is not null;
        bool viaFile = sharded || _region?.WriteGradients(m.Step, m.Attempt, ws.Gradients.Tensors) == true;
        float[][] tensors = viaFile ? [] : TensorPool.RentCopies(ws.Gradients.Tensors);
        var (exchangeStep, exchangeEpoch, exchangeMs) = _exchange ?? (0, 0, 0);
        _exchange = null;
        var timings = new StepTimings(compute.TotalMilliseconds, result.Waits, exchangeStep, exchangeEpoch, exchangeMs,
            GC.CollectionCount(0), GC.GetTotalAllocatedBytes(precise: true));
        // Run ahead, this step's exchange is its waits, added as they end; else it ends when the next work arrives.
        if (!runAhead) _gradientsSent = (m.Step, m.Epoch, Stopwatch.GetTimestamp(), barrier);
        else _exchange = (m.Step, m.Epoch, Stopwatch.GetElapsedTime(0, barrier).TotalMilliseconds);
        _link.Tell(new StepGradients(m.Step, m.Attempt, result.Loss.SumLoss, result.Loss.Correct, result.Loss.Count, tensors, timings, Shared: viaFile));
    }

    private void OnAborted(StepAborted m)
    {
        CancelLookahead(); // the step it ran ahead of may be the one aborted
        if (_running != (m.Step, m.Attempt)) return;
        _log.Debug("Worker {Worker}: step {Step} attempt {Attempt} aborted: {Reason:l}", _id, m.Step, m.Attempt, m.Reason);
        _stepCts?.Cancel();
    }

    private void OnEvaluate(Evaluate m)
    {
        CancelLookahead();
        long arrivedAt = Stopwatch.GetTimestamp(); // (the previous gradient exchange ends here)
        Enqueue($"evaluation round {m.Round}", () =>
        {
            EndGradientExchange(arrivedAt);
            if (m.Parameters is { } snapshot) RestoreAndRelease(snapshot);
            var test = _testN ?? throw new InvalidOperationException("an evaluation arrived before the input normalization");
            // Evaluate in chunks of the training shard's rows when it has 128 or more: a bigger workspace just for
            // the evaluation would replace the training one (tens of MB allocated once, and peak RSS up as much).
            var ws = EnsureWorkspace(Math.Max(1, Math.Min(m.Count, 128)));
            var result = TrainingStep.Evaluate(_p, ws, test, m.Start, m.Count);
            _link.Tell(new EvalResult(m.Round, result.SumLoss, result.Correct, result.Count));
            return Task.CompletedTask;
        });
    }

    /// <summary>
    /// Chain, first thing in the work that arrived at <paramref name="arrivedAt"/> (the actor's stamp): the time from
    /// sending the gradients to that arrival (the coordinator's sum and optimizer, and the parameters' travel), kept
    /// until the next gradients carry it to the coordinator. Gradients sent after that arrival (a cancelled step that
    /// still got there) are left for the next work, as when the actor ended the exchange itself.
    /// </summary>
    private void EndGradientExchange(long arrivedAt)
    {
        if (_gradientsSent is not { } s || s.Sent > arrivedAt) return;
        _exchange = (s.Step, s.Epoch, Stopwatch.GetElapsedTime(s.Sent - s.Barrier, arrivedAt).TotalMilliseconds);
        _gradientsSent = null;
    }

    /// <summary>Chain: a wait of the step run ahead of, added to its gradient exchange.</summary>
    private void AddToExchange(TimeSpan wait)
    {
        if (_exchange is { } e) _exchange = e with { Ms = e.Ms + wait.TotalMilliseconds };
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
