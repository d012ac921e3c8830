using Akka.Actor;
using Akka.TestKit;
using BnCluster.Collectives;
using BnCluster.Coordinator;
using BnCluster.Coordinator.Messages;
using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Training;
using BnCluster.Node.Cluster;

namespace BnCluster.Node.Tests;

/// <summary>
/// The worker actor's side of the protocol, with a TestProbe playing the coordinator (no shared memory, no cluster):
/// it registers, answers the input statistics, runs a step through the BN reductions the probe answers and sends the
/// gradients one worker computes alone, stops on abort, registers again when dropped, and fails the run when its work fails.
/// </summary>
public sealed class WorkerProtocolTests() : Akka.TestKit.Xunit2.TestKit(ClusterConfig.InProcess())
{
    private static readonly NetworkSpec Spec = new(2, [3], 2, Activation.Relu, BatchNormPlacement.Before);
    private static readonly Dataset Train = new("train", [0.5f, 1f, -1f, 2f, 3f, -0.5f, 1.5f, 0f, -2f, 1f, 0.25f, 0.75f], [0, 1, 1, 0, 1, 0], 2, ["a", "b"]);
    private static readonly Dataset Test = new("test", [1f, 1f, -1f, 0f], [1, 0], 2, ["a", "b"]);
    private static readonly TimeSpan Quiet = TimeSpan.FromMilliseconds(200);

    private (TestProbe Coordinator, IActorRef Worker) StartWorker()
    {
        var coordinator = CreateTestProbe("coordinator");
        var settings = new WorkerSettings(coordinator.Ref, Spec, Train, Test, "sha", "job", "node-a", Serilog.Core.Logger.None);
        var worker = Sys.ActorOf(Props.Create(() => new WorkerActor(settings)), "worker");
        var register = coordinator.ExpectMsg<RegisterWorker>();
        Assert.Equal((ProtocolInfo.Version, "job", "sha", "node-a"), (register.ProtocolVersion, register.JobId, register.DatasetSha256, register.Node));
        coordinator.Reply(new WorkerRegistered(0, 1));
        return (coordinator, worker);
    }

    private static readonly InputNormalizer Input = new([0.5f, 0.5f], [2f, 1f]);

    [Fact]
    public async Task A_step_through_the_probe_gives_the_gradients_of_one_worker_alone_bit_for_bit()
    {
        var (coordinator, worker) = StartWorker();
        worker.Tell(new InputStatsRequest(1, 0, 6), coordinator.Ref);
        var stats = coordinator.ExpectMsg<InputStatsReply>();
        Assert.Equal((1L, 6L, 2), (stats.Round, stats.Count, stats.Mean.Length));
        worker.Tell(new SetInputNormalization(Input.Mean, Input.Variance, Input.Epsilon), coordinator.Ref);

        var p = Parameters.Initialize(Spec, 7);
        int[] rows = [4, 1, 3, 0];
        worker.Tell(new StartStep(1, 1, 1, 4, 0, rows, 0, ParameterSnapshot.Capture(p)), coordinator.Ref);
        // One worker: the global moments and sums are its own, as LocalCollective answers them.
        var bn = coordinator.ExpectMsg<BnStats>();
        coordinator.Reply(new BnGlobal(bn.Step, bn.Attempt, bn.Layer, bn.Count, bn.Mean, bn.M2));
        var sums = coordinator.ExpectMsg<BnGradStats>();
        coordinator.Reply(new BnGradGlobal(sums.Step, sums.Attempt, sums.Layer, sums.SumDy, sums.SumDyXhat));
        var gradients = coordinator.ExpectMsg<StepGradients>();
        Assert.Equal((1L, 1, 4, false), (gradients.Step, gradients.Attempt, gradients.Count, gradients.Shared));

        using var matMul = new MatMul(1);
        var ws = new Workspace(p, 4, matMul);
        var loss = await TrainingStep.ForwardBackwardAsync(p, ws, Input.Apply(Train), rows, 4, LocalCollective.Instance);
        Assert.Equal(loss.SumLoss, gradients.SumLoss);
        Assert.Equal(loss.Correct, gradients.Correct);
        Assert.Equal(ws.Gradients.Tensors.Count, gradients.Tensors.Length);
        for (int i = 0; i < gradients.Tensors.Length; i++) Assert.Equal(ws.Gradients.Tensors[i].Values, gradients.Tensors[i]);
    }

    [Fact]
    public void An_aborted_step_sends_no_gradients_and_the_next_attempt_runs()
    {
        var (coordinator, worker) = StartWorker();
        worker.Tell(new SetInputNormalization(Input.Mean, Input.Variance, Input.Epsilon), coordinator.Ref);
        var p = Parameters.Initialize(Spec, 7);
        worker.Tell(new StartStep(1, 1, 1, 2, 0, [0, 1], 0, ParameterSnapshot.Capture(p)), coordinator.Ref);
        coordinator.ExpectMsg<BnStats>();
        worker.Tell(new StepAborted(1, 1, "worker 1 terminated"), coordinator.Ref);
        coordinator.ExpectNoMsg(Quiet); // waits for no reply and sends nothing for attempt 1
        worker.Tell(new StartStep(1, 1, 2, 2, 0, [0, 1], 0, null), coordinator.Ref); // it holds version 0 already
        var bn = coordinator.ExpectMsg<BnStats>();
        Assert.Equal(2, bn.Attempt);
    }

    [Fact]
    public void A_dropped_worker_registers_again_and_the_end_of_the_run_stops_it()
    {
        var (coordinator, worker) = StartWorker();
        worker.Tell(new WorkerDropped("unreachable"), coordinator.Ref);
        coordinator.ExpectMsg<RegisterWorker>();
        Watch(worker);
        worker.Tell(new TrainingDone(true, ""), coordinator.Ref);
        ExpectTerminated(worker);
    }

    [Fact]
    public void Work_that_fails_is_reported_to_the_coordinator_and_stops_the_worker()
    {
        var (coordinator, worker) = StartWorker();
        Watch(worker);
        // A step before the input normalization cannot run.
        worker.Tell(new StartStep(1, 1, 1, 2, 0, [0, 1], 0, null), coordinator.Ref);
        var failed = coordinator.FishForMessage<WorkerFailed>(_ => true);
        Assert.Contains("before the input normalization", failed.Reason);
        ExpectTerminated(worker);
    }
}
