using Xunit;
using BnCluster.Core.Model;
using BnCluster.Core.Training;
using BnCluster.Node.Cluster;
using Serilog;
using static BnCluster.IntegrationTests.Cluster.ClusterFixtures;

namespace BnCluster.IntegrationTests.Cluster;

public sealed class ClusterExactnessTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);
    private static readonly Core.Data.Dataset Train = Data("train", 97, 1), Test = Data("test", 23, 2);

    [Theory]
    [InlineData(1, BatchNormPlacement.Before)]
    [InlineData(2, BatchNormPlacement.Before)]
    [InlineData(3, BatchNormPlacement.Before)]
    [InlineData(5, BatchNormPlacement.Before)]
    [InlineData(7, BatchNormPlacement.Before)] // the last batch of an epoch (6 rows) leaves a worker idle
    [InlineData(3, BatchNormPlacement.After)]
    [InlineData(2, BatchNormPlacement.None)]
    public async Task Twenty_steps_on_K_workers_give_the_single_node_model(int workers, BatchNormPlacement placement)
    {
        var trainer = Trainer(placement);
        var single = await new Trainer(trainer).RunAsync(Train, Test);
        var cluster = await InProcessCluster.RunAsync(ClusterOptions(trainer, workers), Train, Test, null, Serilog.Core.Logger.None).WaitAsync(Limit);

        Assert.Equal(20, cluster.Steps);
        Assert.Equal(single.Epochs.Count, cluster.Epochs.Count);
        AssertClose(single.Parameters, cluster.Parameters, 1e-4);
        if (workers == 1) AssertBitwiseEqual(single.Parameters, cluster.Parameters);
        for (int e = 0; e < single.Epochs.Count; e++)
        {
            Assert.Equal(single.Epochs[e].Step, cluster.Epochs[e].Step);
            Assert.Equal(single.Epochs[e].TrainLoss, cluster.Epochs[e].TrainLoss, 1e-4);
            Assert.Equal(single.Epochs[e].TestAccuracy, cluster.Epochs[e].TestAccuracy, 1e-9);
        }
    }

    [Fact]
    public async Task Same_seed_and_worker_count_twice_give_bitwise_equal_tensors()
    {
        var options = ClusterOptions(Trainer(), 3);
        var first = await InProcessCluster.RunAsync(options, Train, Test, null, Serilog.Core.Logger.None).WaitAsync(Limit);
        var second = await InProcessCluster.RunAsync(options, Train, Test, null, Serilog.Core.Logger.None).WaitAsync(Limit);
        AssertBitwiseEqual(first.Parameters, second.Parameters);
        Assert.Equal(first.Input.Mean, second.Input.Mean);
    }

    [Fact]
    public async Task The_in_process_cluster_is_one_actor_system_without_remoting()
    {
        await using var cluster = InProcessCluster.Start(ClusterOptions(Trainer(), 2), Train, Test, Serilog.Core.Logger.None);
        Assert.IsType<Akka.Actor.LocalActorRefProvider>(((Akka.Actor.ExtendedActorSystem)cluster.System).Provider); // no remoting: no socket
        Assert.Equal(20, (await cluster.Completion.WaitAsync(Limit)).Steps);
    }

    /// <summary>
    /// With akka.actor.serialize-messages every message is encoded and decoded by TrainingMessageSerializer on its way, as
    /// between processes: the protocol survives the wire, and the model is the same to the bit.
    /// </summary>
    [Theory]
    [InlineData(false)] // every tensor in the messages
    [InlineData(true)]  // tensors through the shared-memory files, BN partials through the exchange
    public async Task Every_message_serialized_on_its_way_gives_the_same_model_bits(bool sharedMemory)
    {
        var options = ClusterOptions(Trainer(), 3) with { SharedMemory = sharedMemory };
        var plain = await InProcessCluster.RunAsync(options, Train, Test, null, Serilog.Core.Logger.None).WaitAsync(Limit);
        await using var serialized = InProcessCluster.Start(options, Train, Test, Serilog.Core.Logger.None, serializeMessages: true);
        var result = await serialized.Completion.WaitAsync(Limit);
        Assert.Equal(20, result.Steps);
        AssertBitwiseEqual(plain.Parameters, result.Parameters);
    }

    [Theory]
    [InlineData(4)] // lands in step 5
    [InlineData(8)] // the last step of epoch 1: lands in the evaluation round or step 9
    public async Task A_worker_stopped_mid_run_is_replaced_by_the_survivors_and_the_result_is_unchanged(long stopAfterStep)
    {
        var trainer = Trainer();
        var single = await new Trainer(trainer).RunAsync(Train, Test);
        var sink = new CollectingSink();
        InProcessCluster? running = null;
        // Reported inside the coordinator's commit, so the stop lands in what the coordinator does next.
        await using var cluster = InProcessCluster.Start(ClusterOptions(trainer, 3), Train, Test, sink.CreateLogger(),
            batchProgress: new InlineProgress<BatchProgress>(p => { if (p.Step == stopAfterStep) running!.StopWorker(1); }));
        running = cluster;
        var result = await cluster.Completion.WaitAsync(Limit);

        Assert.Equal(20, result.Steps);
        AssertClose(single.Parameters, result.Parameters, 1e-4);
        Assert.Contains(sink.WithPhase("membership"), e => e.Level == Serilog.Events.LogEventLevel.Warning);
        Assert.Contains(sink.WithPhase("membership"), e => e.RenderMessage().Contains("in-process/1") && e.RenderMessage().Contains("terminated"));
        Assert.Equal(single.Epochs.Select(e => e.TestAccuracy), result.Epochs.Select(e => e.TestAccuracy));
        if (stopAfterStep == 4) // step 5 cannot finish without worker 1: it was aborted and re-run
            Assert.Contains(sink.WithPhase("abort"), e => e.RenderMessage().Contains("Step 5") && e.RenderMessage().Contains("in-process/1 terminated"));
    }

    [Fact]
    public async Task Workers_log_compute_bn_wait_and_gradient_exchange_with_the_run_log_properties()
    {
        var sink = new CollectingSink();
        await InProcessCluster.RunAsync(ClusterOptions(Trainer(maxSteps: 3), 2), Train, Test, null, sink.CreateLogger()).WaitAsync(Limit);
        foreach (var phase in new[] { "compute", "bn-wait", "grad-exchange", "commit", "epoch" })
            Assert.NotEmpty(sink.WithPhase(phase));
        var wait = sink.WithPhase("bn-wait").First();
        foreach (var name in new[] { "Step", "Epoch", "Worker", "Node", "Layer", "ElapsedMs" }) Assert.True(wait.Properties.ContainsKey(name), name);
    }

    [Fact]
    public async Task Cancellation_stops_the_run_and_shuts_the_actors_down()
    {
        using var cts = new CancellationTokenSource();
        var run = ClusterTraining.RunAsync(ClusterOptions(Trainer(maxSteps: 1_000_000), 2), Train, Test,
            new InlineProgress<Core.Training.EpochMetrics>(_ => cts.Cancel()), Serilog.Core.Logger.None, cts.Token);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run.WaitAsync(Limit));
    }

    [Fact]
    public async Task A_diverging_run_stops_with_an_error_naming_the_worker()
    {
        var trainer = Trainer(maxSteps: 50) with { Optimizer = new Core.Optimizers.OptimizerSettings(Core.Optimizers.OptimizerKind.Gd, 1e36f) };
        var sink = new CollectingSink();
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            ClusterTraining.RunAsync(ClusterOptions(trainer, 2), Train, Test, null, sink.CreateLogger()).WaitAsync(Limit));
        Assert.Matches("worker \\d+ on in-process/\\d+ sent a non-finite", error.Message);
        Assert.Contains(sink.Events, e => e.Level == Serilog.Events.LogEventLevel.Error && e.Properties.ContainsKey("Worker"));
    }
}
