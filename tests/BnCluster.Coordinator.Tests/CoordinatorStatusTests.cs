using Akka.Actor;
using BnCluster.Coordinator.Messages;
using Xunit;
using static BnCluster.Coordinator.Tests.CoordinatorHarness;

namespace BnCluster.Coordinator.Tests;

/// <summary>`bncluster status`: the coordinator answers a status query in every state, and the query changes nothing.</summary>
public sealed class CoordinatorStatusTests : Akka.TestKit.Xunit2.TestKit
{
    private TrainingStatus Ask(CoordinatorHarness h)
    {
        var asker = CreateTestProbe();
        h.Coordinator.Tell(new StatusQuery(ProtocolInfo.Version), asker.Ref);
        return asker.ExpectMsg<TrainingStatus>();
    }

    [Fact]
    public void The_status_says_the_state_the_step_the_last_loss_and_the_workers_and_a_query_changes_nothing()
    {
        var h = new CoordinatorHarness(this, workers: 2, maxSteps: 3);
        var waiting = Ask(h);
        Assert.Equal(("waiting for workers", 0L, 2, 0), (waiting.State, waiting.Step, waiting.WorkersNeeded, waiting.Workers.Length));
        Assert.True(double.IsNaN(waiting.LastLoss));

        var (a, b, sa, sb) = h.StartTwo();
        var training = Ask(h);
        Assert.Equal(("training", 1, 0L, 3L, 0, 2), (training.State, training.Epoch, training.Step, training.MaxSteps, training.Batch, training.BatchesInEpoch));
        Assert.Equal([(0, "a"), (1, "b")], training.Workers.Select(w => (w.Id, w.Node)));

        // A query in the middle of a step: the step goes on as if there had been none.
        ReduceBatchNorm(a, sa, b, sb);
        Ask(h);
        a.Reply(Gradients(sa));
        b.Reply(Gradients(sb) with { SumLoss = 0.3 * sb.Rows.Length, Correct = sb.Rows.Length });
        var next = a.ExpectMsg<StartStep>();
        Assert.Equal(2, next.Step);
        b.ExpectMsg<StartStep>();

        var committed = Ask(h);
        Assert.Equal(("training", 1L, 1), (committed.State, committed.Step, committed.Batch));
        Assert.Equal((0.7 * 2 + 0.3 * 2) / 4, committed.LastLoss, 12); // the step's own batch: Σ loss / rows over both workers
        Assert.Equal((1 + 2) / 4.0, committed.LastAccuracy, 12);
        Assert.True(committed.SamplesPerSecond > 0);
    }
}

/// <summary>The status actor on a coordinator's node (a one-node cluster here): the members as Akka.Cluster sees them, and the coordinator's status.</summary>
public sealed class StatusActorTests() : Akka.TestKit.Xunit2.TestKit(ClusterConfig.Node("127.0.0.1", 0, ClusterConfig.CoordinatorRole))
{
    private static readonly TrainingStatus Training = new("training", 1, 5, 7, 0, 7, 15, 1000, 0.5, 0.75, 2, [], 1.5);

    [Fact]
    public async Task The_status_actor_answers_with_the_members_and_the_coordinators_status_or_without_it_once_it_has_stopped()
    {
        var cluster = Akka.Cluster.Cluster.Get(Sys);
        var up = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        cluster.RegisterOnMemberUp(() => up.TrySetResult());
        cluster.Join(cluster.SelfAddress);
        await up.Task.WaitAsync(TimeSpan.FromSeconds(20));

        var coordinator = CreateTestProbe();
        var status = Sys.ActorOf(Props.Create(() => new StatusActor(coordinator.Ref)), "status");
        status.Tell(new StatusQuery(ProtocolInfo.Version), TestActor);
        coordinator.ExpectMsg<StatusQuery>();
        coordinator.Reply(Training);
        var answer = ExpectMsg<ClusterStatus>();
        Assert.Equal(cluster.SelfAddress.ToString(), answer.Node);
        Assert.Same(Training, answer.Training);
        var member = Assert.Single(answer.Members);
        Assert.Equal((cluster.SelfAddress.ToString(), "Up", true), (member.Address, member.Status, member.Reachable));
        Assert.Equal([ClusterConfig.CoordinatorRole], member.Roles.Where(r => !r.StartsWith("dc-", StringComparison.Ordinal)));

        // Gone: answered at once without it (no wait for the coordinator's timeout).
        Watch(coordinator.Ref);
        coordinator.Ref.Tell(PoisonPill.Instance);
        ExpectTerminated(coordinator.Ref);
        AwaitAssert(() =>
        {
            status.Tell(new StatusQuery(ProtocolInfo.Version), TestActor);
            Assert.Null(ExpectMsg<ClusterStatus>(StatusActor.CoordinatorTimeout / 2).Training);
        }, TimeSpan.FromSeconds(10));
    }
}
