using Akka.Actor;
using BnCluster.Coordinator.Messages;

namespace BnCluster.Coordinator;

/// <summary>
/// On the coordinator's node (/user/status): answers <see cref="StatusQuery"/> from outside (`bncluster status`) with the
/// cluster's members as Akka.Cluster sees them here and the coordinator actor's <see cref="TrainingStatus"/>. The asker
/// does not join the cluster: it is no member, so it is never counted, heartbeated, downed or waited for, and it cannot
/// make the split-brain resolver act. It only reads: a coordinator that does not answer in time (busy, or gone) leaves
/// the training part out, rather than the asker waiting for it.
/// </summary>
public sealed class StatusActor : ReceiveActor
{
    /// <summary>How long the coordinator actor has to answer before the members are sent without its status.</summary>
    public static readonly TimeSpan CoordinatorTimeout = TimeSpan.FromSeconds(2);

    private sealed record Answer(IActorRef ReplyTo, TrainingStatus? Training) : INoSerializationVerificationNeeded;

    private readonly IActorRef _coordinator;

    public StatusActor(IActorRef coordinator)
    {
        _coordinator = coordinator;
        Context.Watch(coordinator);
        Become(CoordinatorRunning);
    }

    /// <summary>The coordinator actor is alive: ask it (briefly) and answer with whatever it said in time.</summary>
    private void CoordinatorRunning()
    {
        Receive<StatusQuery>(_ =>
        {
            var replyTo = Sender;
            _coordinator.Ask<TrainingStatus>(new StatusQuery(ProtocolInfo.Version), CoordinatorTimeout)
                .ContinueWith(t => new Answer(replyTo, t.IsCompletedSuccessfully ? t.Result : null), TaskScheduler.Default)
                .PipeTo(Self);
        });
        Receive<Answer>(Reply);
        Receive<Terminated>(_ => Become(CoordinatorGone));
    }

    /// <summary>The coordinator actor has stopped (the run is over): answer with the members alone, at once.</summary>
    private void CoordinatorGone()
    {
        Receive<StatusQuery>(_ => Reply(new Answer(Sender, null)));
        Receive<Answer>(Reply); // asked before it stopped
    }

    private void Reply(Answer a) =>
        a.ReplyTo.Tell(new ClusterStatus(ProtocolInfo.Version, Akka.Cluster.Cluster.Get(Context.System).SelfAddress.ToString(), Members(), a.Training), Self);

    /// <summary>Akka.Cluster's current view on this node, oldest first as Akka orders members (by address).</summary>
    private MemberEntry[] Members()
    {
        var state = Akka.Cluster.Cluster.Get(Context.System).State;
        return state.Members
            .Select(m => new MemberEntry(m.Address.ToString(), m.Roles.Order(StringComparer.Ordinal).ToArray(), m.Status.ToString(), !state.Unreachable.Contains(m)))
            .ToArray();
    }
}
