using Akka.Actor;
using BnCluster.Collectives;
using BnCluster.Coordinator.Messages;
using Akka.TestKit;
using Serilog.Events;
using Xunit;
using static BnCluster.Coordinator.Tests.CoordinatorHarness;

namespace BnCluster.Coordinator.Tests;

/// <summary>
/// A worker dropped while alive (its node unreachable or removed, or silent past the step timeout) is told so once it
/// shows up again, registers again and re-enters at the next step with its old id and rank and the full parameters.
/// </summary>
public sealed class CoordinatorRejoinTests : Akka.TestKit.Xunit2.TestKit
{
    private static readonly TimeSpan Quiet = TimeSpan.FromMilliseconds(200);

    private static Address NodeOf(TestProbe probe) => probe.Ref.Path.Address;

    /// <summary>A coordinator with worker a here and worker b on another (test) node, past the input statistics.</summary>
    private (CoordinatorHarness H, TestProbe A, TestProbe B, Akka.TestKit.Xunit2.TestKit Remote) StartWithRemoteWorker(int minWorkers = 1, long maxSteps = 2)
    {
        var remote = new Akka.TestKit.Xunit2.TestKit("akka.actor.provider = local", "remote");
        var h = new CoordinatorHarness(this, workers: 2, minWorkers: minWorkers, maxSteps: maxSteps);
        var a = h.Join("a");
        var b = remote.CreateTestProbe("b");
        h.Coordinator.Tell(new RegisterWorker(ProtocolInfo.Version, "job", "abc", "b"), b.Ref);
        Assert.Equal(1, b.ExpectMsg<WorkerRegistered>().WorkerId);
        AnswerInputStats(a, b);
        return (h, a, b, remote);
    }

    /// <summary>b, told it was dropped, registers again; it gets its old id back and the normalization.</summary>
    private static void Reregister(CoordinatorHarness h, TestProbe b)
    {
        var dropped = b.FishForMessage<WorkerDropped>(_ => true);
        Assert.Contains("unreachable", dropped.Reason);
        h.Coordinator.Tell(new RegisterWorker(ProtocolInfo.Version, "job", "abc", "b"), b.Ref);
        Assert.Equal(1, b.ExpectMsg<WorkerRegistered>().WorkerId);
        b.ExpectMsg<SetInputNormalization>();
    }

    private static void FinishTogether(TestProbe a, StartStep sa, TestProbe b, StartStep sb)
    {
        a.Reply(Stats(sa));
        b.Reply(Stats(sb));
        a.ExpectMsg<BnGlobal>();
        b.ExpectMsg<BnGlobal>();
        a.Reply(GradStats(sa));
        b.Reply(GradStats(sb));
        a.ExpectMsg<BnGradGlobal>();
        b.ExpectMsg<BnGradGlobal>();
        a.Reply(Gradients(sa));
        b.Reply(Gradients(sb));
    }

    private static async Task FinishRun(CoordinatorHarness h, long steps, params TestProbe[] workers)
    {
        var evals = workers.Select(w => w.ExpectMsg<Evaluate>()).ToArray();
        for (int i = 0; i < workers.Length; i++) workers[i].Reply(new EvalResult(evals[i].Round, 1.0, evals[i].Count / 2, evals[i].Count));
        var result = await h.Completion.Task.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(steps, result.Steps);
    }

    [Fact]
    public async Task A_worker_lost_as_unreachable_and_reachable_again_re_enters_in_its_rank_and_the_run_completes()
    {
        var (h, a, b, remote) = StartWithRemoteWorker();
        using var _ = remote;
        var first = a.ExpectMsg<StartStep>();
        b.ExpectMsg<StartStep>();
        h.Coordinator.Tell(new CoordinatorActor.NodeLost(NodeOf(b), "unreachable"), ActorRefs.NoSender);
        a.ExpectMsg<StepAborted>();
        var alone = a.ExpectMsg<StartStep>();
        Assert.Equal((first.Step, first.Attempt + 1, 4), (alone.Step, alone.Attempt, alone.Rows.Length));
        b.ExpectNoMsg(Quiet); // dropped: no work, and not told anything while its node is unreachable

        h.Coordinator.Tell(new CoordinatorActor.NodeBack(NodeOf(b), "reachable again"), ActorRefs.NoSender);
        Reregister(h, b);
        b.ExpectNoMsg(Quiet); // enters at the next step, not the running one
        FinishAlone(a, alone);

        var sa = a.ExpectMsg<StartStep>();
        var sb = b.ExpectMsg<StartStep>();
        Assert.Equal((first.Step + 1, 0, 1), (sa.Step, sa.Rank, sb.Rank)); // b is back in its rank
        Assert.NotNull(sb.Parameters); // everything: b holds nothing the coordinator can rely on
        Assert.Equal(2, sb.Rows.Length);
        FinishTogether(a, sa, b, sb);
        await FinishRun(h, 2, a, b);

        var membership = h.Sink.Events.Select(e => e.RenderMessage()).ToList();
        Assert.Contains(membership, m => m.Contains("Worker 1 on b left: unreachable"));
        Assert.Contains(membership, m => m.Contains("Worker 1 on b joined again (2 members)"));

        // Lost during the run: a warning. Leaving after it: the expected end, information.
        Assert.Equal(LogEventLevel.Warning, h.Sink.Events.Single(e => e.RenderMessage().Contains("Worker 1 on b left: unreachable")).Level);
        h.Coordinator.Tell(new CoordinatorActor.NodeLost(NodeOf(b), "removed from the cluster"), ActorRefs.NoSender);
        AwaitAssert(() => Assert.Equal(LogEventLevel.Information,
            h.Sink.Events.Single(e => e.RenderMessage().Contains("Worker 1 on b left: removed from the cluster")).Level));
    }

    [Fact]
    public async Task Below_min_workers_the_run_waits_for_the_dropped_worker_removed_and_up_again()
    {
        var (h, a, b, remote) = StartWithRemoteWorker(minWorkers: 2, maxSteps: 1);
        using var _ = remote;
        var first = a.ExpectMsg<StartStep>();
        b.ExpectMsg<StartStep>();
        h.Coordinator.Tell(new CoordinatorActor.NodeLost(NodeOf(b), "unreachable"), ActorRefs.NoSender);
        a.ExpectMsg<StepAborted>();
        h.Coordinator.Tell(new CoordinatorActor.NodeLost(NodeOf(b), "downed"), ActorRefs.NoSender);
        h.Coordinator.Tell(new CoordinatorActor.NodeLost(NodeOf(b), "removed from the cluster"), ActorRefs.NoSender);
        a.ExpectNoMsg(Quiet); // 1 of 2 needed: waiting

        // Its node joined the cluster again as a new incarnation on the same address, whose worker registers by itself:
        // the coordinator knows it by its node and gives it its old id and rank.
        var b2 = remote.CreateTestProbe("b2");
        h.Coordinator.Tell(new RegisterWorker(ProtocolInfo.Version, "job", "abc", "b"), b2.Ref);
        Assert.Equal(1, b2.ExpectMsg<WorkerRegistered>().WorkerId);
        b2.ExpectMsg<SetInputNormalization>();
        b = b2;
        var sa = a.ExpectMsg<StartStep>();
        var sb = b.ExpectMsg<StartStep>();
        Assert.Equal((first.Step, first.Attempt + 1), (sa.Step, sa.Attempt));
        Assert.Equal(first.Rows, sa.Rows); // the same shards as the first attempt
        Assert.Equal(1, sb.Rank);
        Assert.NotNull(sb.Parameters);
        FinishTogether(a, sa, b, sb);
        await FinishRun(h, 1, a, b);
    }

    [Fact]
    public void A_worker_dropped_for_silence_is_told_once_when_a_late_answer_shows_it_alive()
    {
        var h = new CoordinatorHarness(this, workers: 2, stepTimeout: TimeSpan.FromSeconds(1));
        var a = h.Join("a");
        var slow = h.Join("slow");
        AnswerInputStats(a, slow);
        var first = a.ExpectMsg<StartStep>();
        var slowStart = slow.ExpectMsg<StartStep>();
        a.Reply(Stats(first));
        a.ExpectMsg<StepAborted>(duration: TimeSpan.FromSeconds(3));
        a.ExpectMsg<StartStep>();

        slow.Reply(Stats(slowStart)); // late: it was alive all along
        Assert.Contains("step timeout", slow.ExpectMsg<WorkerDropped>().Reason);
        slow.Reply(GradStats(slowStart));
        slow.ExpectNoMsg(Quiet); // told once per drop
        h.Coordinator.Tell(new RegisterWorker(ProtocolInfo.Version, "job", "abc", "slow"), slow.Ref);
        Assert.Equal(1, slow.ExpectMsg<WorkerRegistered>().WorkerId);
    }

    [Fact]
    public void A_terminated_worker_is_gone_for_good_and_never_told()
    {
        var (h, a, b, remote) = StartWithRemoteWorker();
        using var _ = remote;
        a.ExpectMsg<StartStep>();
        b.ExpectMsg<StartStep>();
        remote.Sys.Stop(b.Ref);
        a.ExpectMsg<StepAborted>();
        h.Coordinator.Tell(new CoordinatorActor.NodeBack(NodeOf(b), "reachable again"), ActorRefs.NoSender);
        b.ExpectNoMsg(Quiet);
        Assert.DoesNotContain(h.Sink.Events, e => e.RenderMessage().Contains("register again"));
    }
}
