using BnCluster.Collectives;
using BnCluster.Coordinator.Messages;
using Serilog;

namespace BnCluster.Coordinator;

/// <summary>
/// The shared-memory files the coordinator offers the workers of its machine (docs/design.md, "Shared-memory files"):
/// each worker's tensor file, then one batch-norm exchange and one sharded-update file for all the workers that took
/// theirs. It makes the offers, takes the answers, picks the files an attempt uses, and moves the committed state
/// into the update file and back. It owns the files: each is disposed once no offer, attempt or committed state needs
/// it, since a worker dropped while alive may still be writing into an old one. Offers go through the actor's send.
/// </summary>
internal sealed class SharedMemoryBroker(ClusterTrainingOptions options, CommittedModel model, Roster roster, ILogger log,
    Action<Member, object> send) : IDisposable
{
    // The batch-norm exchange file offered to every worker with a shared-memory file (replaced whenever that set
    // changes, so a dropped worker never shares a file with the ones left), and the answers it still waits for.
    private SharedBatchNormExchange? _exchange;
    private int _exchangeAnswersDue;
    // The sharded-update file offered with the exchange, and the one holding the committed parameters and optimizer
    // state (null: the model holds them). A file is disposed once it is neither, nor the running attempt's.
    private SharedShardedUpdate? _update, _stateArea;

    /// <summary>The running attempt's exchange (null: BN partials as messages this attempt).</summary>
    public SharedBatchNormExchange? AttemptExchange { get; private set; }
    /// <summary>The running attempt's exchange ranks (0: BN partials as messages this attempt).</summary>
    public int AttemptBnRanks { get; private set; }
    /// <summary>The file the running attempt's workers make the update in (null: the coordinator makes it).</summary>
    public SharedShardedUpdate? AttemptUpdate { get; private set; }

    /// <summary>
    /// Offers a worker a new shared-memory file for its tensors (a worker on another machine cannot open it, or finds
    /// another token, and answers no). Until it accepts, its tensors go in the messages. Workers in this process take
    /// it too: with the file they also all-reduce their BN partials among themselves and share the update, as worker
    /// processes do, instead of waiting for the coordinator actor at every reduction and for the whole update
    /// (`bench --workers 2 --threads 1` in one process: 7.0–7.5 → 4.3–4.7 ms per step, waiting 43–46% → 8%).
    /// </summary>
    public void OfferTensorFile(Member member)
    {
        member.DisposeRegions(); // a worker registering again starts from nothing
        if (!options.SharedMemory) return;
        string path = System.IO.Path.Combine(SharedTensorRegion.DefaultFolder,
            $"bncluster-{Environment.ProcessId}-{Guid.NewGuid():N}-w{member.Id}.shm");
        try
        {
            member.Offered = SharedTensorRegion.Create(path, model.Parameters);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            log.Information("Worker {Worker} on {Node:l}: tensors over TCP (no shared-memory file: {Reason:l})", member.Id, member.Node, e.Message);
            return;
        }
        send(member, new SharedMemoryOffer(path, member.Offered.Token));
    }

    public void OnAnswer(Member m, SharedMemoryAnswer a)
    {
        if (m.Offered is not { } offered || offered.Path != a.Path) return; // an old offer's answer
        offered.Unlink(); // both sides have it mapped (or never will): nothing stays on disk
        m.Offered = null;
        if (a.Accepted)
        {
            m.Region = offered;
            m.SentVersion = -1; // its next parameters go through the file
            log.Information("Worker {Worker} on {Node:l}: tensors through shared memory", m.Id, m.Node);
            OfferExchange();
        }
        else
        {
            offered.Dispose();
            log.Information("Worker {Worker} on {Node:l}: tensors over TCP ({Reason:l})", m.Id, m.Node, a.Reason);
        }
    }

    /// <summary>After a loss: those left get an exchange of their own, one that a dropped (maybe alive) worker still writes is not shared.</summary>
    public void RenewExchange()
    {
        if (_exchange is not null) OfferExchange();
    }

    /// <summary>
    /// Offers every worker with a shared-memory file a new batch-norm exchange with a slot for each of them (the old
    /// file stays with whoever still has it mapped, a dropped worker included). Until all have accepted, BN partials
    /// travel as messages.
    /// </summary>
    private void OfferExchange()
    {
        ReleaseExchange();
        foreach (var m in roster.Members) m.Exchange = null;
        var local = roster.Members.Where(m => m.Region is not null).ToList();
        if (local.Count == 0) return;
        string prefix = System.IO.Path.Combine(SharedTensorRegion.DefaultFolder, $"bncluster-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            _exchange = SharedBatchNormExchange.Create(prefix + "-bn.shm", model.Parameters, local.Count);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            log.Information("Batch-norm partials over TCP (no exchange file: {Reason:l})", e.Message);
            return;
        }
        try
        {
            if (options.ShardedUpdate) _update = SharedShardedUpdate.Create(prefix + "-update.shm", model.Parameters, local.Count, model.Optimizer.Settings);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            log.Information("The coordinator makes the optimizer update (no sharded-update file: {Reason:l})", e.Message);
        }
        _exchangeAnswersDue = local.Count;
        foreach (var m in local)
            send(m, new BatchNormExchangeOffer(_exchange.Path, _exchange.Token, local.Count, _update?.Path ?? "", _update?.Token ?? []));
    }

    public void OnExchangeAnswer(Member m, BatchNormExchangeAnswer a)
    {
        if (_exchange is not { } exchange || exchange.Path != a.Path) return; // an old offer's answer
        if (a.Accepted) m.Exchange = exchange;
        else log.Information("Worker {Worker} on {Node:l}: batch-norm partials over TCP ({Reason:l})", m.Id, m.Node, a.Reason);
        if (--_exchangeAnswersDue > 0) return;
        exchange.Unlink(); // every worker has it mapped (or never will): nothing stays on disk
        _update?.Unlink();
        var members = roster.Members.Where(x => ReferenceEquals(x.Exchange, exchange)).Select(x => x.Id).ToList();
        if (members.Count == 0) return;
        // (Said once the whole roster is in it; the offers made while workers join one by one are details.)
        var level = members.Count == roster.Count ? Serilog.Events.LogEventLevel.Information : Serilog.Events.LogEventLevel.Debug;
        log.Write(level, "Workers {Workers:l}: batch-norm partials exchanged through shared memory", string.Join(", ", members));
        if (_update is not null) log.Write(level, "Workers {Workers:l}: the optimizer update sharded over them in shared memory", string.Join(", ", members));
    }

    /// <summary>
    /// Picks the files an attempt of <paramref name="participants"/> uses: BN partials through the exchange when every
    /// participant has the current one (else as messages), and the update sharded over the workers when they also hold
    /// its update file (true). A sharded attempt finds the committed state in that file; any other, in the model.
    /// </summary>
    public bool BeginAttempt(Member[] participants)
    {
        int k = participants.Length;
        var previousExchange = AttemptExchange;
        bool shared = _exchange is not null && k <= _exchange.Ranks;
        foreach (var m in participants) shared &= ReferenceEquals(m.Exchange, _exchange);
        AttemptExchange = shared ? _exchange : null;
        AttemptBnRanks = shared ? k : 0;
        if (previousExchange is not null && !ReferenceEquals(previousExchange, AttemptExchange) && !ReferenceEquals(previousExchange, _exchange))
            previousExchange.Dispose(); // replaced while its attempt ran
        // The committed state goes into the update file first unless it is there already; else it comes back here.
        var previousUpdate = AttemptUpdate;
        bool sharded = shared && _update is not null;
        if (sharded && !ReferenceEquals(_stateArea, _update))
        {
            PullState();
            _update!.WriteState(model.Version, model.Parameters, model.Optimizer);
            _stateArea = _update;
        }
        else if (!sharded) PullState();
        AttemptUpdate = sharded ? _update : null;
        if (previousUpdate is not null) DisposeIfUnused(previousUpdate);
        return sharded;
    }

    /// <summary>The committed parameters and optimizer state back into the model, when a sharded-update file holds them.</summary>
    public void PullState()
    {
        if (_stateArea is not { } area) return;
        area.ReadState(model.Version, model.Parameters, model.Optimizer);
        _stateArea = null;
        DisposeIfUnused(area);
    }

    /// <summary>Every file, when the coordinator stops.</summary>
    public void Dispose()
    {
        foreach (var m in roster.Members) m.DisposeRegions();
        ReleaseExchange();
        AttemptExchange?.Dispose();
        foreach (var area in new[] { AttemptUpdate, _stateArea }) area?.Dispose();
    }

    /// <summary>The current exchange file is unlinked; its mapping is released unless the running attempt still uses it.</summary>
    private void ReleaseExchange()
    {
        if (_update is { } oldUpdate)
        {
            _update = null;
            oldUpdate.Unlink();
            if (ReferenceEquals(_stateArea, oldUpdate) && !ReferenceEquals(AttemptUpdate, oldUpdate)) PullState();
            DisposeIfUnused(oldUpdate);
        }
        if (_exchange is not { } old) return;
        _exchange = null;
        old.Unlink();
        if (!ReferenceEquals(old, AttemptExchange)) old.Dispose();
    }

    private void DisposeIfUnused(SharedShardedUpdate area)
    {
        if (!ReferenceEquals(area, _update) && !ReferenceEquals(area, AttemptUpdate) && !ReferenceEquals(area, _stateArea)) area.Dispose();
    }
}
