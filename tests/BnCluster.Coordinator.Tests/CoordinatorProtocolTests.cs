using Akka.Actor;
using BnCluster.Collectives;
using BnCluster.Coordinator.Messages;
using Akka.TestKit;
using Serilog.Events;
using Xunit;
using static BnCluster.Coordinator.Tests.CoordinatorHarness;

namespace BnCluster.Coordinator.Tests;

public sealed class CoordinatorProtocolTests : Akka.TestKit.Xunit2.TestKit
{
    private static readonly TimeSpan Quiet = TimeSpan.FromMilliseconds(200);

    [Fact]
    public void A_step_reduces_in_rank_order_and_sends_every_worker_its_shard_with_the_parameters()
    {
        var h = new CoordinatorHarness(this, workers: 2);
        var a = h.Join("a");
        var b = h.Join("b");
        AnswerInputStats(a, b);
        var sa = a.ExpectMsg<StartStep>();
        var sb = b.ExpectMsg<StartStep>();
        Assert.Equal((0, 1), (sa.Rank, sb.Rank));
        Assert.Equal(4, sa.GlobalBatchSize);
        Assert.Equal(2, sa.Rows.Length);
        Assert.Empty(sa.Rows.Intersect(sb.Rows));
        Assert.NotNull(sa.Parameters);
        // b answers first: the merge still waits for a, and the result is the rank-order merge.
        b.Reply(Stats(sb, value: 3));
        a.ExpectNoMsg(Quiet);
        h.Coordinator.Tell(Stats(sa, value: 1), a.Ref); // (ExpectNoMsg leaves the probe no sender to reply to)
        var g = a.ExpectMsg<BnGlobal>();
        Assert.Equal(4, g.Count);
        Assert.Equal(2.0, g.Mean[0], 12);              // (2·1 + 2·3)/4
        Assert.Equal(2 + 2 + 4.0 * 2 * 2 / 4, g.M2[0], 12); // M2a + M2b + δ²·na·nb/n
        var gb = b.ExpectMsg<BnGlobal>();
        Assert.Equal((g.Count, g.Mean, g.M2), (gb.Count, gb.Mean, gb.M2)); // the same global moments for every worker
    }

    [Fact]
    public void Every_step_merges_into_the_same_buffers_which_the_replies_carry()
    {
        // The coordinator allocates no statistics per step: each BN layer's merged moments and gradient sums live in
        // one pair of buffers, which every reply carries (a receiver copies them before it sends its gradients).
        var h = new CoordinatorHarness(this, workers: 2, maxSteps: 3);
        var (a, b, sa, sb) = h.StartTwo();
        a.Reply(Stats(sa, value: 1)); b.Reply(Stats(sb, value: 3));
        var first = a.ExpectMsg<BnGlobal>();
        Assert.Same(first.Mean, b.ExpectMsg<BnGlobal>().Mean);
        Assert.Equal(2.0, first.Mean[0], 12);
        a.Reply(GradStats(sa, value: 0.5)); b.Reply(GradStats(sb, value: 0.25));
        var firstSums = a.ExpectMsg<BnGradGlobal>();
        b.ExpectMsg<BnGradGlobal>();
        Assert.Equal(0.75, firstSums.SumDy[0], 12);
        a.Reply(Gradients(sa)); b.Reply(Gradients(sb));

        sa = a.ExpectMsg<StartStep>();
        sb = b.ExpectMsg<StartStep>();
        a.Reply(Stats(sa, value: 5)); b.Reply(Stats(sb, value: 9));
        var second = a.ExpectMsg<BnGlobal>();
        Assert.Same(first.Mean, second.Mean);
        Assert.Same(first.M2, second.M2);
        Assert.Equal(7.0, second.Mean[0], 12); // this step's merge, not the last one's
        Assert.Equal(2 + 2 + 16.0 * 2 * 2 / 4, second.M2[0], 12);
        b.ExpectMsg<BnGlobal>();
        a.Reply(GradStats(sa, value: 1)); b.Reply(GradStats(sb, value: 2));
        var secondSums = a.ExpectMsg<BnGradGlobal>();
        Assert.Same(firstSums.SumDy, secondSums.SumDy);
        Assert.Equal(3.0, secondSums.SumDyXhat[0], 12);
    }

    [Fact]
    public void The_coordinator_logs_each_workers_own_timings_of_the_step_it_accepts()
    {
        var h = new CoordinatorHarness(this, workers: 2);
        var (a, b, sa, sb) = h.StartTwo();
        ReduceBatchNorm(a, sa, b, sb);
        b.Reply(Gradients(sb) with { Timings = new StepTimings(7.5, [new BnWait(0, false, 1.25), new BnWait(0, true, 0.5)], 0, 0, 0, 2, 123_456) });
        b.Reply(Gradients(sb) with { Timings = new StepTimings(99, [], 0, 0, 0) }); // a duplicate: not logged
        a.Reply(Gradients(sa) with { Timings = new StepTimings(6.5, [], 0, 0, 0) });
        b.ExpectMsg<StartStep>();
        b.Reply(Gradients(sb) with { Timings = new StepTimings(1, [], 0, 0, 0) }); // of a committed step: not logged
        b.ExpectNoMsg(Quiet);

        string Prop(LogEvent e, string name) => e.Properties.TryGetValue(name, out var v) ? v.ToString().Trim('"') : "";
        var phases = h.Sink.Events.Where(e => Prop(e, ClusterLog.Phase) is ClusterLog.Compute or ClusterLog.BnWait or ClusterLog.GradExchange)
            .Select(e => (Worker: Prop(e, ClusterLog.Worker), Node: Prop(e, ClusterLog.Node), Phase: Prop(e, ClusterLog.Phase), Step: Prop(e, ClusterLog.Step),
                Layer: Prop(e, ClusterLog.Layer), Ms: Prop(e, ClusterLog.ElapsedMs)))
            .ToList();
        Assert.Equal(
        [
            ("1", "b", ClusterLog.BnWait, "1", "0", "1.25"),
            ("1", "b", ClusterLog.BnWait, "1", "0", "0.5"),
            ("1", "b", ClusterLog.Compute, "1", "", "7.5"),
            ("0", "a", ClusterLog.Compute, "1", "", "6.5"),
        ], phases);
        // The compute event carries the worker process's GC counters it sent (bench takes their differences).
        var compute = h.Sink.Events.Single(e => Prop(e, ClusterLog.Phase) == ClusterLog.Compute && Prop(e, ClusterLog.Worker) == "1");
        Assert.Equal(("2", "123456"), (Prop(compute, ClusterLog.Gen0), Prop(compute, ClusterLog.AllocatedBytes)));
    }

    [Fact]
    public void A_second_answer_from_the_same_worker_is_ignored()
    {
        var h = new CoordinatorHarness(this, workers: 2);
        var a = h.Join("a");
        var b = h.Join("b");
        AnswerInputStats(a, b);
        var sa = a.ExpectMsg<StartStep>();
        var sb = b.ExpectMsg<StartStep>();
        a.Reply(Stats(sa));
        a.Reply(Stats(sa, count: 50));
        a.ExpectNoMsg(Quiet);             // not "all present": b has not answered
        b.Reply(Stats(sb));
        Assert.Equal(4, a.ExpectMsg<BnGlobal>().Count);
        a.ExpectNoMsg(Quiet);             // exactly one global reply
    }

    [Fact]
    public void An_answer_for_a_stale_step_or_attempt_is_ignored()
    {
        var h = new CoordinatorHarness(this, workers: 2);
        var a = h.Join("a");
        var b = h.Join("b");
        AnswerInputStats(a, b);
        var sa = a.ExpectMsg<StartStep>();
        var sb = b.ExpectMsg<StartStep>();
        a.Reply(Stats(sa with { Attempt = sa.Attempt + 5 }, count: 100));
        a.Reply(Stats(sa with { Step = sa.Step - 1 }, count: 100));
        b.Reply(Stats(sb));
        b.ExpectNoMsg(Quiet);
        a.Reply(Stats(sa));
        Assert.Equal(4, b.ExpectMsg<BnGlobal>().Count);
        Assert.Contains(h.Sink.Events, e => e.Level == LogEventLevel.Debug && e.RenderMessage().Contains("Ignored BnStats"));
    }

    [Fact]
    public void A_silent_worker_is_dropped_after_the_step_timeout_and_the_same_batch_is_rerun_on_the_survivors()
    {
        var h = new CoordinatorHarness(this, workers: 2, stepTimeout: TimeSpan.FromSeconds(1));
        var a = h.Join("a");
        var silent = h.Join("silent");
        AnswerInputStats(a, silent);
        var first = a.ExpectMsg<StartStep>();
        var silentStart = silent.ExpectMsg<StartStep>();
        a.Reply(Stats(first));
        var aborted = a.ExpectMsg<StepAborted>(duration: TimeSpan.FromSeconds(3));
        Assert.Equal((first.Step, first.Attempt), (aborted.Step, aborted.Attempt));
        var rerun = a.ExpectMsg<StartStep>();
        Assert.Equal(first.Step, rerun.Step);
        Assert.Equal(first.Attempt + 1, rerun.Attempt);
        Assert.Equal(first.Rows.Concat(silentStart.Rows).Order(), rerun.Rows.Order()); // the same global batch
        Assert.Null(rerun.Parameters);   // a already holds the committed parameters
        Assert.Contains(h.Sink.Events, e => e.RenderMessage().Contains("step timeout") && e.Properties.ContainsKey("Worker"));
    }

    [Fact]
    public async Task A_worker_that_dies_mid_step_aborts_it_and_the_batch_is_rerun_on_the_survivors()
    {
        var h = new CoordinatorHarness(this, workers: 2, maxSteps: 1);
        var a = h.Join("a");
        var b = h.Join("b");
        AnswerInputStats(a, b);
        var first = a.ExpectMsg<StartStep>();
        b.ExpectMsg<StartStep>();
        a.Reply(Stats(first));
        Sys.Stop(b.Ref);
        a.ExpectMsg<StepAborted>();
        var rerun = a.ExpectMsg<StartStep>();
        Assert.Equal((first.Step, first.Attempt + 1, 4), (rerun.Step, rerun.Attempt, rerun.Rows.Length));
        FinishAlone(a, rerun);
        var eval = a.ExpectMsg<Evaluate>();
        Assert.NotNull(eval.Parameters);
        a.Reply(new EvalResult(eval.Round, 2.0, 3, eval.Count));
        var result = await h.Completion.Task.WaitAsync(TimeSpan.FromSeconds(3));
        Assert.Equal(1, result.Steps);
        Assert.Equal(0.75, result.Epochs.Single().TestAccuracy, 12);
        Assert.Contains(h.Sink.Events, e => e.Properties.TryGetValue("Phase", out var p) && p.ToString() == "\"abort\"");
    }

    [Fact]
    public void A_worker_joining_mid_step_enters_at_the_next_step()
    {
        var h = new CoordinatorHarness(this, workers: 1);
        var a = h.Join("a");
        AnswerInputStats(a);
        var first = a.ExpectMsg<StartStep>();
        Assert.Equal(4, first.Rows.Length);
        var c = h.Join("c");
        c.ExpectMsg<SetInputNormalization>();
        c.ExpectNoMsg(Quiet);           // not part of the running step
        FinishAlone(a, first);
        var next = PlayStepStarts(a, c);
        Assert.Equal(first.Step + 1, next[0].Step);
        Assert.Equal((2, 2), (next[0].Rows.Length, next[1].Rows.Length));
        Assert.NotNull(next[0].Parameters);  // the commit changed them
        Assert.NotNull(next[1].Parameters);
    }

    private static StartStep[] PlayStepStarts(params TestProbe[] probes) => probes.Select(p => p.ExpectMsg<StartStep>()).ToArray();

    [Fact]
    public async Task A_non_finite_gradient_is_not_applied_the_worker_is_named_and_a_second_one_stops_training()
    {
        var h = new CoordinatorHarness(this, workers: 2);
        var (a, b, sa, sb) = h.StartTwo();
        var starts = new[] { sa, sb };
        ReduceBatchNorm(a, sa, b, sb);
        a.Reply(Gradients(starts[0]));
        b.Reply(Gradients(starts[1], float.NaN));
        Assert.Equal(starts[0].Attempt, a.ExpectMsg<StepAborted>().Attempt);
        var error = Assert.Single(h.Sink.Events, e => e.Level == LogEventLevel.Error);
        Assert.Equal("\"b\"", error.Properties["Node"].ToString());
        // The retry (attempt 2) runs on the same workers with the same parameters: nothing was applied.
        var retry = a.ExpectMsg<StartStep>();
        Assert.Equal((starts[0].Step, starts[0].Attempt + 1), (retry.Step, retry.Attempt));
        Assert.Null(retry.Parameters);
        var retryB = b.FishForMessage<StartStep>(_ => true);
        a.Reply(Stats(retry));
        b.Reply(Stats(retryB, value: double.PositiveInfinity));
        var failure = await Assert.ThrowsAsync<InvalidOperationException>(() => h.Completion.Task.WaitAsync(TimeSpan.FromSeconds(3)));
        Assert.Contains("on b", failure.Message);
    }

    [Fact]
    public void Gradients_said_to_be_in_shared_memory_from_a_worker_without_a_file_abort_the_attempt_naming_it()
    {
        // In-process workers are never offered a file; a message claiming one cannot be summed.
        var h = new CoordinatorHarness(this, workers: 2);
        var (a, b, sa, sb) = h.StartTwo();
        ReduceBatchNorm(a, sa, b, sb);
        a.Reply(Gradients(sa));
        b.Reply(Gradients(sb) with { Tensors = [], Shared = true });
        Assert.Equal(sa.Attempt, a.ExpectMsg<StepAborted>().Attempt);
        var error = Assert.Single(h.Sink.Events, e => e.Level == LogEventLevel.Error);
        Assert.Contains("no shared-memory file", error.RenderMessage());
        Assert.Equal("\"b\"", error.Properties["Node"].ToString());
        Assert.Equal(sa.Attempt + 1, a.ExpectMsg<StartStep>().Attempt); // retried on the same workers
    }

    [Fact]
    public void A_worker_with_another_dataset_is_refused_with_the_reason()
    {
        var h = new CoordinatorHarness(this, workers: 1);
        var probe = CreateTestProbe("other");
        h.Coordinator.Tell(new RegisterWorker(ProtocolInfo.Version, "job", "def", "other"), probe.Ref);
        Assert.Contains("sha256 def", probe.ExpectMsg<RegistrationRefused>().Reason);
        h.Coordinator.Tell(new RegisterWorker(ProtocolInfo.Version + 1, "job", "abc", "other"), probe.Ref);
        Assert.Contains("protocol version", probe.ExpectMsg<RegistrationRefused>().Reason);
    }

    [Fact]
    public void Below_min_workers_the_coordinator_waits_for_a_join_and_warns()
    {
        var h = new CoordinatorHarness(this, workers: 2, minWorkers: 2);
        var a = h.Join("a");
        var b = h.Join("b");
        AnswerInputStats(a, b);
        var first = a.ExpectMsg<StartStep>();
        b.ExpectMsg<StartStep>();
        Sys.Stop(b.Ref);
        a.ExpectMsg<StepAborted>();
        a.ExpectNoMsg(Quiet);            // one worker is below min-workers 2: nothing runs
        Assert.Contains(h.Sink.Events, e => e.Level == LogEventLevel.Warning && e.RenderMessage().Contains("Waiting for workers"));
        var c = h.Join("c");
        c.ExpectMsg<SetInputNormalization>();
        var rerun = a.ExpectMsg<StartStep>();
        Assert.Equal((first.Step, first.Attempt + 1), (rerun.Step, rerun.Attempt));
        Assert.NotNull(c.ExpectMsg<StartStep>().Parameters);
    }

    [Fact]
    public void A_node_reported_unreachable_loses_its_workers_and_the_step_is_rerun()
    {
        using var remote = new Akka.TestKit.Xunit2.TestKit("akka.actor.provider = local", "remote");
        var h = new CoordinatorHarness(this, workers: 2);
        var a = h.Join("a");
        var b = remote.CreateTestProbe("b");
        h.Coordinator.Tell(new RegisterWorker(ProtocolInfo.Version, "job", "abc", "b"), b.Ref);
        b.ExpectMsg<WorkerRegistered>();
        AnswerInputStats(a, b);
        var first = a.ExpectMsg<StartStep>();
        b.ExpectMsg<StartStep>();
        h.Coordinator.Tell(new CoordinatorActor.NodeLost(b.Ref.Path.Address, "unreachable"), ActorRefs.NoSender);
        a.ExpectMsg<StepAborted>();
        var rerun = a.ExpectMsg<StartStep>();
        Assert.Equal((first.Attempt + 1, 4), (rerun.Attempt, rerun.Rows.Length));
        Assert.Contains(h.Sink.Events, e => e.RenderMessage().Contains("unreachable"));
    }

    [Fact]
    public void A_worker_registering_again_gets_the_normalization_and_the_parameters_again()
    {
        var h = new CoordinatorHarness(this, workers: 2);
        var a = h.Join("a");
        var b = h.Join("b");
        AnswerInputStats(a, b);
        var first = a.ExpectMsg<StartStep>();
        Assert.NotNull(b.ExpectMsg<StartStep>().Parameters);
        h.Coordinator.Tell(new RegisterWorker(ProtocolInfo.Version, "job", "abc", "b"), b.Ref); // e.g. restarted
        b.ExpectMsg<WorkerRegistered>();
        b.ExpectMsg<SetInputNormalization>();
        Sys.Stop(a.Ref); // forces a re-run with unchanged parameters
        var rerun = b.FishForMessage<StartStep>(_ => true);
        Assert.Equal(first.Attempt + 1, rerun.Attempt);
        Assert.NotNull(rerun.Parameters); // without the re-registration b would get null (it held this version)
    }
}
