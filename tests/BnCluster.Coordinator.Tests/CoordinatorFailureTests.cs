using Akka.Actor;
using BnCluster.Coordinator.Messages;
using Xunit;
using static BnCluster.Coordinator.Tests.CoordinatorHarness;

namespace BnCluster.Coordinator.Tests;

/// <summary>
/// Failures end runs, they never hang them: under cluster.hocon's settings a coordinator whose handler throws fails the
/// run with the cause, tells its workers, and is stopped rather than restarted with empty state (which would wait for
/// workers for ever).
/// </summary>
public sealed class CoordinatorFailureTests() : Akka.TestKit.Xunit2.TestKit(ClusterConfig.InProcess())
{
    [Fact]
    public async Task A_handler_that_throws_fails_the_run_tells_the_workers_and_stops_the_coordinator()
    {
        var h = new CoordinatorHarness(this, workers: 2);
        var (a, b, sa, sb) = h.StartTwo();
        Watch(h.Coordinator);
        // Gradients without tensors (a decoder would never make one): the handler throws a NullReferenceException.
        h.Coordinator.Tell(new StepGradients(sa.Step, sa.Attempt, 1, 1, 2, null!, StepTimings.None), a.Ref);
        var error = await Assert.ThrowsAnyAsync<Exception>(() => h.Completion.Task.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.IsType<NullReferenceException>(error);
        foreach (var probe in new[] { a, b })
        {
            Assert.Equal(sa.Step, probe.ExpectMsg<StepAborted>().Step);
            var done = probe.ExpectMsg<TrainingDone>();
            Assert.False(done.Succeeded);
        }
        ExpectTerminated(h.Coordinator); // stopped, not restarted
        Assert.Contains(h.Sink.Events, e => e.Level == Serilog.Events.LogEventLevel.Error && e.RenderMessage().StartsWith("Training stopped", StringComparison.Ordinal));
    }

    /// <summary>The host's epoch callback writes the run folder inside the coordinator: a full disk or a read-only folder fails the run.</summary>
    [Fact]
    public async Task A_run_folder_that_cannot_be_written_fails_the_run_with_the_cause()
    {
        var h = new CoordinatorHarness(this, workers: 1, maxSteps: 1,
            epochProgress: new ThrowingProgress(new IOException("No space left on device : '/runs/x/metrics.jsonl'")));
        var a = h.Join("a");
        AnswerInputStats(a);
        FinishAlone(a, a.ExpectMsg<StartStep>());
        var eval = a.ExpectMsg<Evaluate>();
        Watch(h.Coordinator);
        a.Reply(new EvalResult(eval.Round, 1.0, 1, eval.Count));
        var error = await Assert.ThrowsAsync<IOException>(() => h.Completion.Task.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.StartsWith("No space left on device", error.Message);
        Assert.False(a.FishForMessage<TrainingDone>(_ => true).Succeeded);
        ExpectTerminated(h.Coordinator);
    }

    [Fact]
    public async Task A_network_too_large_to_hold_fails_the_run_instead_of_leaving_it_waiting()
    {
        var kit = this;
        var trainer = new Core.Training.TrainerOptions(new Core.Model.NetworkSpec(2_000_000, [2_000_000_000], 2, Core.Model.Activation.Relu, Core.Model.BatchNormPlacement.Before),
            new Core.Optimizers.OptimizerSettings(Core.Optimizers.OptimizerKind.Gd, 0.1f), BatchSize: 4, Epochs: 1, MaxSteps: 1, Seed: 3);
        var completion = new TaskCompletionSource<Core.Training.TrainingResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        var coordinator = kit.Sys.ActorOf(Props.Create(() => new CoordinatorActor(new ClusterTrainingOptions(trainer, 1, 1, null, "job", ""),
            new ClusterDataShape(8, 4, 2_000_000), completion, Serilog.Core.Logger.None, null, null, null)));
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => completion.Task.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.StartsWith("the coordinator cannot start: ", error.Message);
        Watch(coordinator);
        ExpectTerminated(coordinator);
    }

    private sealed class ThrowingProgress(Exception error) : IProgress<Core.Training.EpochMetrics>
    {
        public void Report(Core.Training.EpochMetrics value) => throw error;
    }

    [Fact]
    public async Task A_worker_that_fails_fails_the_run_naming_it_and_its_cause()
    {
        var h = new CoordinatorHarness(this, workers: 2);
        var (a, b, _, _) = h.StartTwo();
        h.Coordinator.Tell(new WorkerFailed("step 1 attempt 1: out of memory"), b.Ref);
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => h.Completion.Task.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal("worker 1 on b failed: step 1 attempt 1: out of memory", error.Message);
        a.FishForMessage<TrainingDone>(_ => true);
        Assert.False(b.FishForMessage<TrainingDone>(_ => true).Succeeded);
    }

    [Fact]
    public async Task A_coordinator_stopped_from_outside_fails_the_run_instead_of_leaving_it_pending()
    {
        var h = new CoordinatorHarness(this, workers: 2);
        var a = h.Join("a");
        Sys.Stop(h.Coordinator);
        await Assert.ThrowsAsync<InvalidOperationException>(() => h.Completion.Task.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.False(a.FishForMessage<TrainingDone>(_ => true).Succeeded);
    }
}
