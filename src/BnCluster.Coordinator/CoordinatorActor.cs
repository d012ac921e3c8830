using System.Diagnostics;
using System.Numerics.Tensors;
using Akka.Actor;
using Akka.Cluster;
using BnCluster.Collectives;
using BnCluster.Coordinator.DataPlane;
using BnCluster.Coordinator.Messages;
using BnCluster.Core.Training;
using Serilog;

namespace BnCluster.Coordinator;

/// <summary>
/// The coordinator (docs/design.md, "One training step"). It owns the roster (rank = position in join order), the parameters, the
/// optimizer state, the running averages and the seeded epoch plan; workers own nothing but a copy of the
/// committed parameters. Per step it sends each worker its shard, merges the BN statistics and sums the BN
/// gradient sums in rank order, sums the gradients in rank order, applies the optimizer and the running-average
/// update, and commits. Nothing changes before the commit, so an aborted attempt is re-run with the same global
/// batch on whoever is left (attempt + 1).
///
/// Its states are behaviours (Become): waiting for workers, input statistics, training and evaluating (once per
/// epoch), done; waiting for workers again whenever too few are left. A state accepts its own messages; a worker's
/// message of another state is stale. The actor keeps the protocol's flow and hands the work to plain parts: the
/// <see cref="Roster"/>, the <see cref="CommittedModel"/>, an attempt's <see cref="StepReductions"/> and the
/// <see cref="SharedMemoryBroker"/> (the files of the workers on this machine).
///
/// Failure policy:
/// - A worker that terminates (DeathWatch), whose node Akka.Cluster reports unreachable, downed or removed, or that,
///   when the step timeout fires, has not sent the contribution the coordinator is waiting for (silent but alive) is
///   removed from the roster; the attempt is aborted (StepAborted to the others) and re-run on the survivors (an
///   input-statistics or evaluation round is re-run the same way). A removed worker gets no more work; to come back
///   it registers again and enters at the next step. A worker dropped alive (not Terminated) is told so
///   (WorkerDropped) when its node is reachable again, or a late message shows it alive; it re-enters with its old
///   id and rank (a node removed from the cluster comes back as a new incarnation, whose worker registers by itself).
/// - Fewer than MinWorkers left: the coordinator waits for joins and warns every WaitWarningInterval.
/// - A contribution that cannot be used (a non-finite statistic, gradient or loss; shared-memory data of another
///   stamp, or torn): the attempt is aborted and retried once with the same workers (a transient fault recovers); a
///   second one in the same step stops training with an error naming the worker (the numbers are deterministic, so
///   it would repeat forever).
/// - Training also stops on invalid input statistics, on shared-memory gradients that changed or were not finite
///   while the update read them (the update is applied by then), on a worker's WorkerFailed, and when a handler
///   throws (the actor is then stopped, not restarted).
/// - Messages of another state, step, attempt or round are ignored (debug log); a second answer of the same worker
///   for the same slot is ignored, and so is a malformed one (warning).
/// </summary>
public sealed class CoordinatorActor : ReceiveActor, IWithTimers
{
    /// <summary>Timer message: the step attempt has run for the step timeout.</summary>
    public sealed record StepTimeout(long Step, int Attempt) : INoSerializationVerificationNeeded;
    /// <summary>Timer message: the input-statistics or evaluation round has run for the step timeout.</summary>
    public sealed record RoundTimeout(long Round) : INoSerializationVerificationNeeded;
    private sealed record WaitWarning : INoSerializationVerificationNeeded;

    /// <summary>A node that stopped answering or left the cluster (Akka.Cluster's events, <see cref="FromClusterEvent"/>): its workers are dropped.</summary>
    public sealed record NodeLost(Address Node, string Reason) : INoSerializationVerificationNeeded;
    /// <summary>A node that answers again (a GC pause, a network blip): its dropped workers are told to register again.</summary>
    public sealed record NodeBack(Address Node, string Why) : INoSerializationVerificationNeeded;

    /// <summary>What the roster takes from a cluster event (null: nothing). A node removed from the cluster comes back, if
    /// ever, as a new incarnation whose worker registers by itself.</summary>
    public static object? FromClusterEvent(ClusterEvent.IClusterDomainEvent e) => e switch
    {
        ClusterEvent.UnreachableMember u => new NodeLost(u.Member.Address, "unreachable"),
        ClusterEvent.MemberDowned d => new NodeLost(d.Member.Address, "downed"),
        ClusterEvent.MemberRemoved r => new NodeLost(r.Member.Address, "removed from the cluster"),
        ClusterEvent.ReachableMember r => new NodeBack(r.Member.Address, "reachable again"),
        _ => null,
    };

    public ITimerScheduler Timers { get; set; } = null!;

    private readonly ClusterTrainingOptions _options;
    private readonly ClusterDataShape _shape;
    private readonly TaskCompletionSource<TrainingResult> _completion;
    private readonly IProgress<EpochMetrics>? _epochProgress;
    private readonly IProgress<BatchProgress>? _batchProgress;
    private readonly ILogger _log;
    private readonly TimeSpan _timeout;

    private readonly Roster _roster = new();
    private readonly DataPlaneListener? _dataPlane;
    private readonly CommittedModel _model;
    private readonly SharedMemoryBroker _shared;
    private readonly StepReductions _reductions;
    private bool _started; // the first round ran: from then on MinWorkers are enough
    // The state, where a handler cannot tell it from the behaviour: a failure aborts a running attempt first (training),
    // and nothing is started or told once the run is over (done), which the actor stopping from outside must know too.
    private bool _training, _done;
    private InputNormalizer? _input;
    // The attempt the next step starts as, announced to the running attempt's workers (StartStep.NextRows), who may run
    // it ahead; an abort after that announcement moves it on, so that no slot stamped by a step run ahead on the
    // aborted attempt's parameters ever matches the real one.
    private int _nextStepAttempt = 1;
    // The step last announced: started as anything but the work announced (other participants, not sharded), it takes
    // a new attempt number too.
    private (long Step, int Attempt, Member[] Participants, SharedShardedUpdate? Update)? _announcement;

    // What `bncluster status` is told (StatusQuery): the state's name, and the last committed step's batch loss.
    private string _state = "";
    private double _lastLoss = double.NaN, _lastAccuracy = double.NaN;

    private int _epoch;
    private EpochPlan? _plan;
    private int _batch;
    private LossPartial _epochTrain;
    private TimeSpan _epochStepElapsed;
    private readonly Stopwatch _total = new();
    private readonly List<EpochMetrics> _epochs = [];

    // The running attempt (step) or round (input statistics, evaluation); its participants are the roster's, by rank.
    private long _step;
    private int _attempt;
    private int _unusableRetries;
    private readonly Stopwatch _stepTime = new();
    private long _round;
    private object?[] _roundReplies = [];

    // Where the coordinator's own time goes, per epoch (logged at Debug with the epoch): handler time by kind
    // and this process's garbage collections.
    private readonly HandlerClock _clock = new();

    /// <param name="dataPlane">The data-plane port of a coordinator on a cluster over TCP: each worker on another node is
    /// offered a channel there for the step's messages (null: every message goes through Akka).</param>
    public CoordinatorActor(ClusterTrainingOptions options, ClusterDataShape shape, TaskCompletionSource<TrainingResult> completion,
        ILogger log, IProgress<EpochMetrics>? epochProgress = null, IProgress<BatchProgress>? batchProgress = null,
        DataPlaneListener? dataPlane = null)
    {
        _dataPlane = dataPlane;
        _options = options.Validate();
        _shape = shape;
        if (shape.TrainRows <= 0) throw new ArgumentException("the training set is empty");
        if (shape.Features != options.Trainer.Spec.Inputs) throw new ArgumentException($"dataset has {shape.Features} features, network expects {options.Trainer.Spec.Inputs}");
        _completion = completion;
        _log = log.ForContext("SourceContext", "coordinator");
        _epochProgress = epochProgress;
        _batchProgress = batchProgress;
        _timeout = options.EffectiveStepTimeout;
        try
        {
            _model = new CommittedModel(options.Trainer);
        }
        catch (Exception e) when (e is OutOfMemoryException or OverflowException or ArgumentException)
        {
            // A network too large to hold (or settings the optimizer refuses) fails the run with the reason at once,
            // rather than leaving it waiting; the actor stops without starting (PostStop finds no model).
            completion.TrySetException(new InvalidOperationException($"the coordinator cannot start: {e.Message}", e));
            _done = true;
            _model = null!;
            _shared = null!;
            _reductions = null!;
            Context.Stop(Self);
            return;
        }
        _shared = new SharedMemoryBroker(_options, _model, _roster, _log, Send);
        _reductions = new StepReductions(_model);
        WaitingForWorkers(InputStatistics, StartInputRound);
    }

    // ---- States ----
    // A state's behaviour registers the messages it accepts, then the ones every state handles, then the ones it
    // ignores; a message takes the first handler that matches it.

    /// <summary>
    /// Too few workers are up: registrations until there are enough, then <paramref name="start"/> runs in
    /// <paramref name="state"/> (at first the input statistics; later the attempt or round that lost its workers).
    /// </summary>
    private void WaitingForWorkers(Action state, Action start)
    {
        _state = "waiting for workers";
        Receive<WaitWarning>(_ => _log.Warning("Waiting for workers: {Members} up, {Needed} needed", _roster.Count, Needed));
        CommonReceives(rerun: null, joined: () =>
        {
            if (_roster.Count < Needed) return;
            Become(state);
            RunOrWait(state, start);
        });
        IgnoreOtherStates();
    }

    /// <summary>A round of the workers' input statistics, merged into the input normalization; then training.</summary>
    private void InputStatistics()
    {
        _state = "input statistics";
        void Rerun(string why) => RerunRound("InputStats", why, InputStatistics, StartInputRound);
        Receive<InputStatsReply>(OnInputStats);
        Receive<RoundTimeout>(t => OnRoundTimeout(t, Rerun));
        CommonReceives(Rerun);
        IgnoreOtherStates();
    }

    /// <summary>The epoch's steps, each run in attempts until one commits: its BN reductions and gradients; then the evaluation.</summary>
    private void Training()
    {
        _state = "training";
        ReceiveTimed<BnStats>(HandlerClock.Kind.BnStats, OnBnStats);
        ReceiveTimed<BnGradStats>(HandlerClock.Kind.BnGradStats, OnBnGradStats);
        ReceiveTimed<StepGradients>(HandlerClock.Kind.Gradients, OnGradients);
        Receive<StepTimeout>(OnStepTimeout);
        CommonReceives(RerunAttempt);
        IgnoreOtherStates();
    }

    /// <summary>A round of evaluation on the test rows; then the next epoch, or done.</summary>
    private void Evaluating()
    {
        _state = "evaluating";
        void Rerun(string why) => RerunRound("Evaluating", why, Evaluating, StartEvalRound);
        Receive<EvalResult>(OnEvalResult);
        Receive<RoundTimeout>(t => OnRoundTimeout(t, Rerun));
        CommonReceives(Rerun);
        IgnoreOtherStates();
    }

    /// <summary>The run is over and every worker was told (TrainingDone): nothing runs any more.</summary>
    private void Done()
    {
        _state = "done";
        Receive<Terminated>(_ => { }); // the workers stop by themselves now: nothing to report
        CommonReceives(rerun: null);
        IgnoreOtherStates();
    }

    /// <summary>
    /// What every state handles alike: membership (registrations, deaths, Akka.Cluster's node events, a worker's
    /// failure) and the answers to the shared-memory offers. <paramref name="rerun"/>: what the state does when
    /// participants of its attempt or round are lost (null: none runs); <paramref name="joined"/>: after a new member joined.
    /// </summary>
    private void CommonReceives(Action<string>? rerun, Action? joined = null)
    {
        Receive<RegisterWorker>(r => { if (Register(r)) joined?.Invoke(); });
        Receive<Terminated>(t => { if (_roster.Find(t.ActorRef) is { } m) Lose([m], "terminated", rerun, alive: false); });
        Receive<WorkerFailed>(OnWorkerFailed);
        // Akka.Cluster's failure detector: a node that stops answering (or is downed, removed) takes its workers with it;
        // a node that answers again gets its dropped workers back: they are told, and register again.
        Receive<ClusterEvent.IClusterDomainEvent>(e => { if (FromClusterEvent(e) is { } roster) Self.Forward(roster); });
        Receive<NodeLost>(e => LoseAt(e.Node, e.Reason, rerun));
        Receive<NodeBack>(e => TellDroppedAt(e.Node, e.Why));
        Receive<SharedMemoryAnswer>(a => { if (_roster.Find(Sender) is { } m) _shared.OnAnswer(m, a); });
        Receive<DataPlaneListener.Opened>(OnChannelOpened);
        Receive<DataPlaneListener.Closed>(OnChannelClosed);
        Receive<BatchNormExchangeAnswer>(a => { if (_roster.Find(Sender) is { } m) _shared.OnExchangeAnswer(m, a); });
        Receive<StatusQuery>(_ => Sender.Tell(Status(), Self));
    }

    /// <summary>The run as `bncluster status` shows it; reads the state, changes nothing.</summary>
    private TrainingStatus Status()
    {
        double seconds = _epochStepElapsed.TotalSeconds;
        double samplesPerSecond = seconds > 0 ? _epochTrain.Count / seconds : _epochs.Count > 0 ? _epochs[^1].SamplesPerSecond : 0;
        var workers = _roster.Members.Select(m => new RosterEntry(m.Id, m.Node)).ToArray();
        return new TrainingStatus(_state, _epoch, _options.Trainer.Epochs, _model.Version, _options.Trainer.MaxSteps ?? 0, _batch, _plan?.BatchCount ?? 0,
            samplesPerSecond, _lastLoss, _lastAccuracy, Needed, workers, _total.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// What a state does not accept but may receive: a worker's answer of another state, or of an attempt or round
    /// already over, is stale (Debug log; a dropped sender is told); another state's timer is dropped. Any other
    /// message is unhandled, as Akka reports it.
    /// </summary>
    private void IgnoreOtherStates()
    {
        Receive<InputStatsReply>(Stale);
        ReceiveTimed<BnStats>(HandlerClock.Kind.BnStats, Stale);
        ReceiveTimed<BnGradStats>(HandlerClock.Kind.BnGradStats, Stale);
        ReceiveTimed<StepGradients>(HandlerClock.Kind.Gradients, Stale);
        Receive<EvalResult>(Stale);
        Receive<StepTimeout>(_ => { });
        Receive<RoundTimeout>(_ => { });
        Receive<WaitWarning>(_ => { });
    }

    /// <summary>A step's message whose handler time counts in the epoch's <see cref="HandlerClock"/>, accepted or stale.</summary>
    private void ReceiveTimed<T>(HandlerClock.Kind kind, Action<T> handler) =>
        Receive<T>(m => { long t = HandlerClock.Now; handler(m); _clock.Add(kind, t); });

    /// <summary>
    /// Runs <paramref name="start"/>, an attempt or round of the current <paramref name="state"/>, now; or, with too
    /// few workers up, waits for joins and runs it then.
    /// </summary>
    private void RunOrWait(Action state, Action start)
    {
        if (_roster.Count < Needed)
        {
            _log.Warning("Waiting for workers: {Members} up, {Needed} needed", _roster.Count, Needed);
            _roster.ClearParticipants();
            Become(() => WaitingForWorkers(state, start));
            return;
        }
        _started = true;
        start();
    }

    /// <summary>Training's answer to lost participants or an unusable contribution: the attempt is aborted and run again (attempt + 1).</summary>
    private void RerunAttempt(string why)
    {
        AbortAttempt(why);
        RunOrWait(Training, StartAttempt);
    }

    private void RerunRound(string name, string why, Action state, Action start)
    {
        _log.Warning("Round {Round} of {Phase:l} restarted: {Reason:l}", _round, name, why);
        RunOrWait(state, start);
    }

    /// <summary>The run is over: no timer fires any more, and what still arrives changes nothing.</summary>
    private void BecomeDone()
    {
        _done = true;
        Timers.CancelAll();
        Become(Done);
    }

    /// <summary>Whatever a handler throws fails the run (one line naming the cause); the actor is then stopped, not restarted.</summary>
    protected override bool AroundReceive(Receive receive, object message)
    {
        try { return base.AroundReceive(receive, message); }
        catch (Exception e)
        {
            Fail(e);
            throw;
        }
    }

    protected override void PostStop()
    {
        if (!_done) // stopped from outside (the run was cancelled, the system shut down)
        {
            _done = true;
            TellDone(new TrainingDone(false, "the coordinator stopped"));
            _completion.TrySetException(new InvalidOperationException("the coordinator stopped before training finished"));
        }
        if (InCluster) Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);
        foreach (var m in _roster.Members) CloseChannel(m);
        _model?.Dispose(); // (null when it could not start)
        _shared?.Dispose();
    }

    /// <summary>A node of a cluster over TCP (the in-process cluster's system has no cluster provider).</summary>
    private bool InCluster => Context.System.Settings.ProviderClass.Contains("Cluster", StringComparison.Ordinal);

    protected override void PreStart()
    {
        if (_model is null) return; // it could not start and is stopping
        _model.StartThreads();
        _total.Start();
        Timers.StartPeriodicTimer("wait-warning", new WaitWarning(), _options.WaitWarningInterval);
        // In a cluster over TCP the roster follows Akka.Cluster's view of the nodes (the in-process cluster has none).
        if (InCluster)
            Akka.Cluster.Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents,
                typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));
    }

    private int Needed => _started ? _options.MinWorkers : _options.Workers;
    private int Epoch => _epoch;

    // ---- Membership ----

    /// <summary>Checks a registration and admits the worker, or takes a known one's again. True: a new member joined.</summary>
    private bool Register(RegisterWorker r)
    {
        string? refusal =
            r.ProtocolVersion != ProtocolInfo.Version ? $"protocol version {r.ProtocolVersion}, coordinator speaks {ProtocolInfo.Version}" :
            r.JobId != _options.JobId ? $"job '{r.JobId}', coordinator runs '{_options.JobId}'" :
            _options.DatasetSha256.Length > 0 && !string.Equals(r.DatasetSha256, _options.DatasetSha256, StringComparison.OrdinalIgnoreCase)
                ? $"dataset sha256 {r.DatasetSha256}, coordinator has {_options.DatasetSha256}" : null;
        if (refusal is not null)
        {
            _log.ForContext(ClusterLog.Phase, ClusterLog.Membership).Warning("Worker on {Node:l} refused: {Reason:l}", r.Node, refusal);
            Sender.Tell(new RegistrationRefused(refusal), Self);
            return false;
        }
        if (_roster.Find(Sender) is { } known)
        {
            // Registering again (a restarted worker): it holds nothing, so send it everything again.
            known.SentVersion = -1;
            Send(known, new WorkerRegistered(known.Id, _roster.Count));
            OfferDataChannel(known);
            _shared.OfferTensorFile(known);
            if (_input is not null) Send(known, NormalizationMessage(_input));
            return false;
        }
        // A dropped worker that was alive after all gets its old id and rank back (the roster stays in id order, so the
        // shards are those of an uninterrupted run); it holds nothing we can rely on (SentVersion -1).
        var member = _roster.Admit(Sender, r.Node, out bool rejoined);
        _log.ForContext(ClusterLog.Phase, ClusterLog.Membership).Information(rejoined ? ClusterLog.WorkerRejoinedTemplate : ClusterLog.WorkerJoinedTemplate,
            member.Id, member.Node, _roster.Count);
        Context.Watch(member.Actor);
        Send(member, new WorkerRegistered(member.Id, _roster.Count));
        OfferDataChannel(member);
        _shared.OfferTensorFile(member);
        if (_input is not null) Send(member, NormalizationMessage(_input));
        return true;
    }

    private void LoseAt(Address address, string reason, Action<string>? rerun)
    {
        var lost = _roster.At(address);
        if (lost.Count > 0) Lose(lost, $"{reason} ({address})", rerun);
        foreach (var dropped in _roster.DroppedAt(address))
            _log.ForContext(ClusterLog.Phase, ClusterLog.Membership).Information("Node {Address:l} of dropped worker {Worker}: {Reason:l}",
                    address.ToString(), dropped.Id, reason);
    }

    /// <summary>The node at <paramref name="address"/> is back: its dropped workers are told to register again.</summary>
    private void TellDroppedAt(Address address, string why)
    {
        foreach (var dropped in _roster.DroppedAt(address)) TellDropped(dropped.Actor, dropped, why);
    }

    private void TellDropped(IActorRef actor, Dropped dropped, string why)
    {
        if (_done) return; // (it was told TrainingDone)
        dropped.Told = true;
        _log.Information("Dropped worker {Worker} on {Node:l} is {Why:l}: telling it to register again", dropped.Id, dropped.Node, why);
        actor.Tell(new WorkerDropped(dropped.Reason), Self);
    }

    /// <summary>A message from a dropped worker shows it is alive: told once per drop (the node events tell it again).</summary>
    private void TellIfDropped(IActorRef sender)
    {
        foreach (var dropped in _roster.DroppedWorkers)
            if (dropped.Actor.Equals(sender) && !dropped.Told) TellDropped(sender, dropped, "alive after all");
    }

    /// <summary>
    /// Every message to a member goes through here (to a worker that is not one, dropped or refused, it goes straight to
    /// its actor): the one place to change how a member is reached.
    /// </summary>
    private void Send(Member member, object message)
    {
        if (member.Channel is { } channel && message is ITrainingMessage m)
        {
            if (channel.TrySend(m)) return;
            _log.Warning("Worker {Worker} on {Node:l}: the data channel failed; the step's messages go through Akka", member.Id, member.Node);
            CloseChannel(member);
        }
        member.Actor.Tell(message, Self);
    }

    // ---- The data plane (a worker on another node) ----

    /// <summary>Offers a worker on another node a data channel (a new one at every registration); in this process there is none.</summary>
    private void OfferDataChannel(Member member)
    {
        CloseChannel(member);
        if (_dataPlane is null || !member.Actor.Path.Address.HasGlobalScope) return;
        var offer = _dataPlane.Offer(member.Actor, Self, DataChannel.FrameLimit(_model.Parameters));
        member.ChannelToken = offer.Token;
        member.Actor.Tell(offer, Self); // (Akka: the offer is what opens the channel)
    }

    private void OnChannelOpened(DataPlaneListener.Opened opened)
    {
        var member = _roster.Members.FirstOrDefault(m => m.ChannelToken is { } t && t.AsSpan().SequenceEqual(opened.Token));
        if (member is null || _done)
        {
            opened.Channel.Dispose(); // its worker left or registered again meanwhile
            return;
        }
        member.Channel = opened.Channel;
        _log.Information("Worker {Worker} on {Node:l}: data channel open ({Remote:l})", member.Id, member.Node, opened.Channel.Remote);
    }

    private void OnChannelClosed(DataPlaneListener.Closed closed)
    {
        closed.Channel.Dispose();
        var member = _roster.Members.FirstOrDefault(m => ReferenceEquals(m.Channel, closed.Channel));
        if (member is null) return;
        member.Channel = null;
        if (!_done)
            _log.Warning("Worker {Worker} on {Node:l}: the data channel closed ({Reason:l}); the step's messages go through Akka", member.Id, member.Node, closed.Reason);
    }

    private void CloseChannel(Member member)
    {
        if (member.ChannelToken is { } token) _dataPlane?.Withdraw(token);
        member.Channel?.Dispose();
        member.Channel = null;
        member.ChannelToken = null;
    }

    private Member[] Participants => _roster.Participants;

    /// <summary>
    /// Removes workers from the roster. When some took part in the running attempt or round, the state's
    /// <paramref name="rerun"/> aborts and re-runs it.
    /// </summary>
    private void Lose(IReadOnlyList<Member> lost, string reason, Action<string>? rerun, bool alive = true)
    {
        bool participated = false;
        foreach (var m in lost)
        {
            if (!_roster.Remove(m, reason, alive)) continue; // (alive: it may come back)
            Context.Unwatch(m.Actor);
            m.DisposeRegions(); // a worker that comes back registers again and gets a new file
            CloseChannel(m);
            participated |= _roster.IsParticipant(m);
            // After the run a worker leaving is the expected end, not a warning.
            _log.ForContext(ClusterLog.Phase, ClusterLog.Membership).Write(_state == "done" ? Serilog.Events.LogEventLevel.Information : Serilog.Events.LogEventLevel.Warning,
                ClusterLog.WorkerLeftTemplate, m.Id, m.Node, reason, _roster.Count);
        }
        _shared.RenewExchange();
        if (!participated || rerun is null) return;
        rerun(lost.Count == 1 ? $"worker {lost[0].Id} on {lost[0].Node} {reason}" : $"workers {string.Join(", ", lost.Select(m => m.Id))} {reason}");
    }

    private void Fail(Exception error)
    {
        if (_done) return;
        if (_training) foreach (var m in Participants) Send(m, new StepAborted(_step, _attempt, error.Message));
        BecomeDone();
        _log.Error(error, "Training stopped: {Reason:l}", error.Message);
        TellDone(new TrainingDone(false, error.Message));
        _completion.TrySetException(error);
    }

    /// <summary>Every worker learns that the run is over: a worker process then exits, with code 0 only when it succeeded.</summary>
    private void TellDone(TrainingDone done)
    {
        foreach (var m in _roster.Members) Send(m, done);
        foreach (var d in _roster.DroppedWorkers) d.Actor.Tell(done, Self);
    }

    private void OnWorkerFailed(WorkerFailed f)
    {
        string who = _roster.Find(Sender) is { } m ? $"worker {m.Id} on {m.Node}" : $"worker {Sender.Path}";
        Fail(new InvalidOperationException($"{who} failed: {f.Reason}"));
    }

    // ---- Input normalization ----

    private void StartInputRound()
    {
        _round++;
        _roster.Choose(_shape.TrainRows);
        _roundReplies = new object?[Participants.Length];
        for (int r = 0; r < Participants.Length; r++)
        {
            var (start, count) = ShardSplit.Shard(_shape.TrainRows, Participants.Length, r);
            Send(Participants[r], new InputStatsRequest(_round, start, count));
        }
        Timers.StartSingleTimer("round-timeout", new RoundTimeout(_round), _timeout);
    }

    private void OnInputStats(InputStatsReply m)
    {
        int rank = _roster.RankOf(Sender);
        if (m.Round != _round || rank < 0) { Stale(m); return; }
        if (_roundReplies[rank] is not null) { Duplicate(m, rank); return; }
        var (_, expected) = ShardSplit.Shard(_shape.TrainRows, Participants.Length, rank);
        if (m.Count != expected || m.Mean.Length != _shape.Features || m.M2.Length != _shape.Features || !AllFinite(m.Mean) || !AllFinite(m.M2))
        {
            Fail(new InvalidOperationException($"worker {Participants[rank].Id} on {Participants[rank].Node} sent invalid input statistics ({m.Count} rows of {m.Mean.Length} features, expected {expected} of {_shape.Features})"));
            return;
        }
        _roundReplies[rank] = m;
        if (Array.Exists(_roundReplies, x => x is null)) return;
        Timers.Cancel("round-timeout");
        var merged = new BatchNormStats(_shape.Features);
        foreach (InputStatsReply reply in _roundReplies.Cast<InputStatsReply>()) merged.Merge(new BatchNormStats(reply.Count, reply.Mean, reply.M2));
        _input = InputNormalizer.FromStats(merged);
        foreach (var member in _roster.Members) Send(member, NormalizationMessage(_input));
        StartEpoch(1);
    }

    private static SetInputNormalization NormalizationMessage(InputNormalizer input) =>
        new((float[])input.Mean.Clone(), (float[])input.Variance.Clone(), input.Epsilon);

    // ---- Steps ----

    private void StartEpoch(int epoch)
    {
        _epoch = epoch;
        _plan = new EpochPlan(_shape.TrainRows, _options.Trainer.BatchSize, _options.Trainer.Seed, epoch);
        _batch = 0;
        _epochTrain = new LossPartial(0, 0, 0);
        _epochStepElapsed = TimeSpan.Zero;
        _training = true;
        Become(Training);
        NextStep();
    }

    private void NextStep()
    {
        bool maxed = _options.Trainer.MaxSteps is { } max && _model.Version >= max;
        if (maxed || _batch >= _plan!.BatchCount)
        {
            _training = false;
            Become(Evaluating);
            RunOrWait(Evaluating, StartEvalRound);
            return;
        }
        _step = _model.Version + 1;
        _attempt = _nextStepAttempt - 1; // (StartAttempt counts it up)
        _nextStepAttempt = 1;
        _unusableRetries = 0;
        RunOrWait(Training, StartAttempt);
    }

    private void StartAttempt()
    {
        _attempt++;
        var rows = _plan!.Batch(_batch);
        int n = rows.Length;
        int k = _roster.Choose(n).Length;
        // BN partials through the exchange, the update sharded over the workers, when they all hold those files.
        bool sharded = _shared.BeginAttempt(Participants);
        _stepTime.Restart();
        if (_announcement is { } a && a.Step == _step && a.Attempt == _attempt
            && !(sharded && ReferenceEquals(a.Update, _shared.AttemptUpdate) && a.Participants.AsSpan().SequenceEqual(Participants)))
            _attempt++;
        _announcement = null;
        _reductions.Begin(_step, _attempt, Participants);
        if (sharded)
        {
            // Every worker reads the committed parameters from the file and updates its slice there. The next
            // step of the epoch, when it has as many rows, is announced: the workers may run it ahead.
            bool last = _batch + 1 >= _plan.BatchCount || _options.Trainer.MaxSteps is { } max && _model.Version + 1 >= max;
            ReadOnlyMemory<int>? next = last ? null : _plan.Batch(_batch + 1);
            if (next is { } batch && batch.Length != n) next = null;
            if (next is not null) _announcement = (_step + 1, _nextStepAttempt, Participants, _shared.AttemptUpdate);
            for (int r = 0; r < k; r++)
            {
                var m = Participants[r];
                Send(m, new StartStep(_step, _epoch, _attempt, n, r, ShardSplit.Slice(rows, k, r).ToArray(), _model.Version, null,
                    SharedBatchNormRanks: k, UpdateStep: _model.Optimizer.Step + 1,
                    NextRows: next is { } following ? ShardSplit.Slice(following, k, r).ToArray() : null, NextAttempt: _nextStepAttempt));
                // A worker that runs the next step ahead reads the next version into its parameters, which it may then
                // hold when this attempt is aborted: not known, so anything else sends it the parameters again.
                m.SentVersion = _announcement is not null ? -1 : _model.Version;
            }
            Timers.StartSingleTimer("step-timeout", new StepTimeout(_step, _attempt), _timeout);
            return;
        }
        float[][]? snapshot = _model.SnapshotFor(Participants, viaRegions: true);
        for (int r = 0; r < k; r++)
        {
            var m = Participants[r];
            int[] shard = ShardSplit.Slice(rows, k, r).ToArray();
            bool holds = m.SentVersion == _model.Version, viaFile = !holds && m.Region is not null;
            // (The commit writes the participants' files as it updates; this is for a worker new to the step.)
            if (viaFile && m.Region!.WrittenParametersVersion != _model.Version)
                m.Region.WriteParameters(_model.Version, _model.Parameters, _model.Threads); // every worker waits for it: all cores
            Send(m, new StartStep(_step, _epoch, _attempt, n, r, shard, _model.Version, holds || viaFile ? null : snapshot, viaFile, _shared.AttemptBnRanks));
            m.SentVersion = _model.Version;
        }
        Timers.StartSingleTimer("step-timeout", new StepTimeout(_step, _attempt), _timeout);
    }

    private void AbortAttempt(string reason)
    {
        Timers.Cancel("step-timeout");
        if (_announcement is not null) _nextStepAttempt++;
        _announcement = null;
        _log.ForContext(ClusterLog.Phase, ClusterLog.Abort).Warning(ClusterLog.StepAbortedTemplate, _step, Epoch, reason);
        foreach (var m in Participants)
            if (_roster.Contains(m)) Send(m, new StepAborted(_step, _attempt, reason));
    }

    private bool Current(long step, int attempt, out int rank)
    {
        rank = _roster.RankOf(Sender);
        return step == _step && attempt == _attempt && rank >= 0;
    }

    private void OnBnStats(BnStats m)
    {
        if (!Current(m.Step, m.Attempt, out int rank) || _shared.AttemptBnRanks > 0) { Stale(m); return; }
        if (!ValidLayer(m.Layer, m.Mean.Length, m.M2.Length)) { BadMessage(m, rank); return; }
        if (_reductions.HasStats(m.Layer, rank)) { Duplicate(m, rank); return; }
        if (!AllFinite(m.Mean) || !AllFinite(m.M2)) { NonFinite(rank, $"BN statistic of layer {m.Layer}"); return; }
        // Chan's merge in rank order, once every rank's is in: the result does not depend on arrival order.
        if (_reductions.AddStats(rank, m) is not { } merged) return;
        // The layer's buffers go to all participants: receivers only read them (see StepReductions).
        foreach (var p in Participants)
            Send(p, new BnGlobal(_step, _attempt, m.Layer, merged.Count, merged.Mean, merged.M2));
    }

    private void OnBnGradStats(BnGradStats m)
    {
        if (!Current(m.Step, m.Attempt, out int rank) || _shared.AttemptBnRanks > 0) { Stale(m); return; }
        if (!ValidLayer(m.Layer, m.SumDy.Length, m.SumDyXhat.Length)) { BadMessage(m, rank); return; }
        if (_reductions.HasGradSums(m.Layer, rank)) { Duplicate(m, rank); return; }
        if (!AllFinite(m.SumDy) || !AllFinite(m.SumDyXhat)) { NonFinite(rank, $"BN gradient sum of layer {m.Layer}"); return; }
        if (_reductions.AddGradSums(rank, m) is not { } sum) return;
        foreach (var p in Participants) // the layer's buffers, read-only, as BnGlobal's
            Send(p, new BnGradGlobal(_step, _attempt, m.Layer, sum.SumDy, sum.SumDyXhat));
    }

    private void OnGradients(StepGradients m)
    {
        // A message that is not used here is left to the garbage collector rather than returned: a stale or
        // duplicate message's arrays are not known to be unshared.
        if (!Current(m.Step, m.Attempt, out int rank)) { Stale(m); return; }
        if (_reductions.HasGradients(rank)) { Duplicate(m, rank); return; }
        if (m.Shared && Participants[rank].Region is null) { Unusable(rank, "gradients in shared memory, but it has no shared-memory file"); return; }
        if (!m.Shared && !ValidGradients(m.Tensors)) { BadMessage(m, rank); return; }
        if (_shared.AttemptExchange is { } exchange) // its BN partials (the first to go non-finite): all there before its gradients, and finite
            switch (exchange.Check(rank, _step, _attempt, out int layer))
            {
                case SharedBatchNormExchange.SlotState.Missing: Unusable(rank, $"gradients without its BN partials of layer {layer} in the shared exchange"); return;
                case SharedBatchNormExchange.SlotState.NonFinite: NonFinite(rank, $"BN statistic of layer {layer}"); return;
            }
        if (!double.IsFinite(m.SumLoss)) { NonFinite(rank, "loss"); return; }
        var loss = new LossPartial(m.SumLoss, m.Correct, m.Count);
        if (_shared.AttemptUpdate is { } update)
        {
            if (!m.Shared) { Unusable(rank, "gradients in its message in a step whose update the workers make"); return; }
            _reductions.AddLoss(rank, loss);
            LogWorkerTimings(m.Step, Participants[rank], m.Timings);
            if (_reductions.AllGradientsIn && Usable(_reductions.CheckSlices(update)) && Usable(_reductions.MergeSharedStats(_shared.AttemptExchange))) Commit();
            return;
        }
        for (int i = 0; i < m.Tensors.Length; i++) // (shared-memory gradients are checked as they are added)
            if (!TensorPrimitives.IsFiniteAll<float>(m.Tensors[i])) { NonFinite(rank, $"gradient of {_model.Parameters.Trainable[i].Name}"); return; }
        _reductions.AddGradients(rank, loss, m.Shared ? null : m.Tensors);
        LogWorkerTimings(m.Step, Participants[rank], m.Timings);
        if (Usable(_reductions.SumInRankOrder()) && _reductions.AllSummed && Usable(_reductions.MergeSharedStats(_shared.AttemptExchange))) Commit();
    }

    /// <summary>
    /// Logs a worker's own timings of the step (StepPhase events, the same wherever the worker runs: workers do
    /// not log them themselves, so a --processes or multi-machine run log has the per-worker split too).
    /// </summary>
    private void LogWorkerTimings(long step, Member worker, StepTimings t)
    {
        if (!_log.IsEnabled(Serilog.Events.LogEventLevel.Debug)) return;
        if (t.ExchangeStep > 0)
            _log.Debug(ClusterLog.StepPhaseTemplate, t.ExchangeStep, t.ExchangeEpoch, worker.Id, worker.Node, ClusterLog.GradExchange, t.ExchangeMs);
        foreach (var w in t.BnWaits)
            _log.Debug(ClusterLog.StepLayerPhaseTemplate, step, Epoch, worker.Id, worker.Node, ClusterLog.BnWait, w.Layer, w.Ms);
        _log.Debug(ClusterLog.StepComputeTemplate, step, Epoch, worker.Id, worker.Node, ClusterLog.Compute, t.ComputeMs, t.Gen0Collections, t.AllocatedBytes);
    }

    private void Commit()
    {
        Timers.Cancel("step-timeout");
        // The gradients are summed already (in rank order); the optimizer and running averages make the commit.
        var loss = _reductions.Loss();
        if (_shared.AttemptUpdate is not null) _model.CommitShardedUpdate(_reductions.Merged);
        else if (_model.CommitUpdate(_reductions, Participants) is { } problem)
        {
            // (Only a process that broke the protocol makes the shared-memory gradients change or go non-finite unseen.)
            Fail(new InvalidOperationException($"the shared-memory gradients {problem} at step {_step}; the parameters cannot be trusted, training stopped"));
            return;
        }
        _stepTime.Stop();
        _epochStepElapsed += _stepTime.Elapsed; // step time only, like the single-node trainer's samples/s
        _epochTrain = _epochTrain.Add(loss);
        (_lastLoss, _lastAccuracy) = loss.Count > 0 ? (loss.SumLoss / loss.Count, (double)loss.Correct / loss.Count) : (double.NaN, double.NaN);
        _log.ForContext(ClusterLog.Phase, ClusterLog.Commit).Debug(ClusterLog.StepCommittedTemplate, _step, Epoch,
            loss.Count > 0 ? loss.SumLoss / loss.Count : double.NaN, loss.Count > 0 ? (double)loss.Correct / loss.Count : double.NaN, _stepTime.Elapsed.TotalMilliseconds);
        _batchProgress?.Report(new BatchProgress(_epoch, _batch, _plan!.BatchCount, _model.Version,
            _epochTrain.SumLoss / _epochTrain.Count, (double)_epochTrain.Correct / _epochTrain.Count, _lastLoss, _lastAccuracy, loss.Count));
        _batch++;
        NextStep();
    }

    private void NonFinite(int rank, string what) => Reject(UnusableContribution.NonFinite(rank, what));

    private void Unusable(int rank, string what) => Reject(new UnusableContribution(rank, what));

    /// <summary>False (and the contribution rejected) when a part found one that cannot be used.</summary>
    private bool Usable(UnusableContribution? problem)
    {
        if (problem is { } unusable) Reject(unusable);
        return problem is null;
    }

    /// <summary>A contribution that cannot be used: the attempt is aborted and retried once, then training stops.</summary>
    private void Reject(UnusableContribution unusable)
    {
        var (rank, what, hint) = unusable;
        var m = Participants[rank];
        _log.ForContext(ClusterLog.Phase, ClusterLog.Abort).Error("Worker {Worker} on {Node:l} sent {What:l} at step {Step} attempt {Attempt}",
            m.Id, m.Node, what, _step, _attempt);
        string reason = $"worker {m.Id} on {m.Node} sent {what}";
        if (_unusableRetries++ == 0) RerunAttempt(reason);
        else Fail(new InvalidOperationException($"{reason} at step {_step} twice; training stopped{hint}"));
    }

    private void OnStepTimeout(StepTimeout t)
    {
        if (t.Step != _step || t.Attempt != _attempt) return;
        Lose(_reductions.MissingAtFirstIncompleteStage(_shared.AttemptExchange), $"sent nothing within the step timeout of {_timeout.TotalSeconds:0.###} s", RerunAttempt);
    }

    // ---- Evaluation ----

    private void StartEvalRound()
    {
        _shared.PullState(); // the workers evaluate the parameters the coordinator sends, and the result is taken from the model
        _round++;
        int testRows = _shape.TestRows;
        if (testRows == 0)
        {
            EndEpoch(new LossPartial(0, 0, 0));
            return;
        }
        _roster.Choose(testRows);
        _roundReplies = new object?[Participants.Length];
        float[][]? snapshot = _model.SnapshotFor(Participants, viaRegions: false);
        for (int r = 0; r < Participants.Length; r++)
        {
            var m = Participants[r];
            var (start, count) = ShardSplit.Shard(testRows, Participants.Length, r);
            Send(m, new Evaluate(_round, start, count, _model.Version, m.SentVersion == _model.Version ? null : snapshot));
            m.SentVersion = _model.Version;
        }
        Timers.StartSingleTimer("round-timeout", new RoundTimeout(_round), _timeout);
    }

    private void OnEvalResult(EvalResult m)
    {
        int rank = _roster.RankOf(Sender);
        if (m.Round != _round || rank < 0) { Stale(m); return; }
        if (_roundReplies[rank] is not null) { Duplicate(m, rank); return; }
        _roundReplies[rank] = m;
        if (Array.Exists(_roundReplies, x => x is null)) return;
        Timers.Cancel("round-timeout");
        var total = new LossPartial(0, 0, 0);
        foreach (var r in _roundReplies.Cast<EvalResult>()) total = total.Add(new LossPartial(r.SumLoss, r.Correct, r.Count));
        EndEpoch(total);
    }

    private void EndEpoch(LossPartial test)
    {
        double seconds = _epochStepElapsed.TotalSeconds;
        var metrics = new EpochMetrics(_epoch, _model.Version,
            _epochTrain.Count > 0 ? _epochTrain.SumLoss / _epochTrain.Count : double.NaN,
            _epochTrain.Count > 0 ? (double)_epochTrain.Correct / _epochTrain.Count : double.NaN,
            test.Count > 0 ? test.SumLoss / test.Count : double.NaN,
            test.Count > 0 ? (double)test.Correct / test.Count : double.NaN,
            seconds > 0 ? _epochTrain.Count / seconds : 0,
            _total.Elapsed.TotalSeconds);
        _epochStepElapsed = TimeSpan.Zero;
        _epochs.Add(metrics);
        _clock.LogAndReset(_log, _epoch);
        // Debug: the host reports the epoch to the user (it also gets _epochProgress); this is for the log file.
        _log.ForContext(ClusterLog.Phase, ClusterLog.EpochEnd).Debug(ClusterLog.EpochTemplate, metrics.Epoch, metrics.Step, metrics.TrainLoss,
            metrics.TrainAccuracy, metrics.TestLoss, metrics.TestAccuracy, metrics.SamplesPerSecond, metrics.Seconds * 1000);
        _epochProgress?.Report(metrics);
        bool maxed = _options.Trainer.MaxSteps is { } max && _model.Version >= max;
        if (maxed || _epoch >= _options.Trainer.Epochs)
        {
            BecomeDone();
            TellDone(new TrainingDone(true, ""));
            _completion.TrySetResult(new TrainingResult(_model.Parameters.Clone(), _input!, _epochs.ToArray(), _model.Version));
            return;
        }
        StartEpoch(_epoch + 1);
    }

    private void OnRoundTimeout(RoundTimeout t, Action<string> rerun)
    {
        if (t.Round != _round) return;
        var missing = new List<Member>();
        for (int r = 0; r < Participants.Length; r++) if (_roundReplies[r] is null) missing.Add(Participants[r]);
        Lose(missing, $"sent nothing within the step timeout of {_timeout.TotalSeconds:0.###} s", rerun);
    }

    // ---- Checks ----

    private bool ValidLayer(int layer, int a, int b) =>
        (uint)layer < (uint)_model.Parameters.HiddenLayers && _model.Parameters.BatchNorm[layer] is not null && a == _model.Parameters.Spec.Hidden[layer] && b == a;

    private bool ValidGradients(float[][] tensors)
    {
        if (tensors.Length != _model.Parameters.Trainable.Count) return false;
        for (int i = 0; i < tensors.Length; i++) if (tensors[i].Length != _model.Parameters.Trainable[i].Values.Length) return false;
        return true;
    }

    private static bool AllFinite(ReadOnlySpan<double> values) => TensorPrimitives.IsFiniteAll(values);

    private void Stale(object message)
    {
        TellIfDropped(Sender);
        _log.Debug("Ignored {MessageType:l} from {Sender:l}: not of the running step/attempt/round (step {Step} attempt {Attempt} round {Round})",
            message.GetType().Name, Sender.Path.ToString(), _step, _attempt, _round);
    }

    private void Duplicate(object message, int rank) =>
        _log.Debug("Ignored a second {MessageType:l} from worker {Worker} at step {Step} attempt {Attempt}", message.GetType().Name, Participants[rank].Id, _step, _attempt);

    private void BadMessage(object message, int rank) =>
        _log.Warning("Ignored a malformed {MessageType:l} from worker {Worker} at step {Step}: shape does not match the network", message.GetType().Name, Participants[rank].Id, _step);
}
