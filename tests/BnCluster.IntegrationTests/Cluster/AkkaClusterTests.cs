using BnCluster.Coordinator;
using BnCluster.Core.Data;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;
using BnCluster.Node.Cluster;
using Xunit;
using static BnCluster.IntegrationTests.Cluster.ClusterFixtures;

namespace BnCluster.IntegrationTests.Cluster;

/// <summary>
/// A real Akka.Cluster in one test process: a coordinator node and worker nodes, each its own ActorSystem on an ephemeral
/// loopback port, joined over TCP as separate processes would be. Tensors and BN partials go over the data plane (no
/// shared memory): the model is the in-process cluster's to the bit, also when a worker's node is shut down mid-run.
/// </summary>
[Collection(Processes.ProcessCollection.Name)]
public sealed class AkkaClusterTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(90);

    private static readonly DatasetSplit Digits = DatasetCatalog.Load("digits", seed: 7);

    private static TrainerOptions Trainer(long maxSteps) =>
        new(new NetworkSpec(64, [16, 16], 10, Activation.Relu, BatchNormPlacement.Before), new OptimizerSettings(OptimizerKind.Adam, 0.01f),
            BatchSize: 96, Epochs: 2, MaxSteps: maxSteps, Seed: 7);

    private static ClusterTrainingOptions Options(long maxSteps, int workers) =>
        new(Trainer(maxSteps), workers, MinWorkers: 1, StepTimeout: TimeSpan.FromSeconds(30), JobId: RemoteCluster.JobId, DatasetSha256: Digits.Sha256)
        {
            SharedMemory = false,
        };

    /// <summary>
    /// Runs a coordinator node and <paramref name="workers"/> worker nodes; <paramref name="duringRun"/> gets the workers'
    /// cancellation sources; <paramref name="beforeWorkers"/> runs once the coordinator listens (its Akka port), before any worker starts.
    /// </summary>
    private static async Task<TrainingResult> RunCluster(ClusterTrainingOptions options, int workers, CollectingSink sink,
        Func<IReadOnlyList<CancellationTokenSource>, IProgress<BatchProgress>>? duringRun = null, Func<int, Task>? beforeWorkers = null)
    {
        var log = sink.CreateLogger();
        var stops = Enumerable.Range(0, workers).Select(_ => new CancellationTokenSource()).ToList();
        var job = RemoteCluster.Describe(7, null, options.Trainer.Spec, Digits.Sha256);
        var shape = new ClusterDataShape(Digits.Train.Count, Digits.Test.Count, Digits.Train.FeatureCount);
        var workerRuns = new List<Task<int>>();
        try
        {
            var result = await RemoteCluster.RunCoordinatorAsync(new NodeEndpoint("127.0.0.1", 0), options, job, shape, log, null, duringRun?.Invoke(stops),
                async port =>
                {
                    if (beforeWorkers is not null) await beforeWorkers(port);
                    var seed = RemoteCluster.NodeAddress("127.0.0.1", port);
                    for (int i = 0; i < workers; i++)
                    {
                        var stop = stops[i].Token;
                        workerRuns.Add(Task.Run(() => new WorkerNode(Digits, "digits", null, 1, log).RunAsync(seed, new NodeEndpoint("127.0.0.1", 0), TimeSpan.FromSeconds(30), stop)));
                    }
                }, CancellationToken.None).WaitAsync(Limit);
            foreach (var w in workerRuns)
                try { Assert.Equal(0, await w.WaitAsync(Limit)); } // told the run is over: a clean exit
                catch (OperationCanceledException) { } // the worker stopped on purpose
            return result;
        }
        finally
        {
            foreach (var s in stops) s.Cancel();
            foreach (var w in workerRuns) try { await w.WaitAsync(Limit); } catch (OperationCanceledException) { }
        }
    }

    [Fact]
    public async Task Two_worker_nodes_over_TCP_train_the_in_process_clusters_model_bitwise()
    {
        var options = Options(maxSteps: 8, workers: 2);
        var inProcess = await InProcessCluster.RunAsync(options, Digits.Train, Digits.Test, null, Serilog.Core.Logger.None).WaitAsync(Limit);
        var sink = new CollectingSink();
        var result = await RunCluster(options, 2, sink);
        Assert.Equal(8, result.Steps);
        AssertBitwiseEqual(inProcess.Parameters, result.Parameters);
        var text = sink.Events.Select(e => e.RenderMessage()).ToList();
        Assert.Equal(2, text.Count(m => m.Contains("the step's messages over the data plane", StringComparison.Ordinal)));
    }

    /// <summary>Random bytes, an HTTP request and frames announcing gigabytes, each on a connection of its own.</summary>
    private static async Task Spray(int port)
    {
        var junk = new byte[4096];
        new Random(5).NextBytes(junk);
        byte[][] garbage =
        [
            junk,
            "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"u8.ToArray(),
            [0xff, 0xff, 0xff, 0x7f, 1, 2, 3],
            [0x00, 0x00, 0x00, 0x40, .. junk[..64]], // 1 GiB announced (big-endian or little-endian: far over any limit)
        ];
        foreach (var bytes in garbage)
        {
            using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            await socket.ConnectAsync("127.0.0.1", port);
            await socket.SendAsync(bytes);
            socket.Shutdown(System.Net.Sockets.SocketShutdown.Both);
        }
    }

    [Fact]
    public async Task Garbage_on_the_akka_port_and_on_the_data_plane_port_costs_the_run_nothing()
    {
        var options = Options(maxSteps: 8, workers: 1);
        var inProcess = await InProcessCluster.RunAsync(options, Digits.Train, Digits.Test, null, Serilog.Core.Logger.None).WaitAsync(Limit);
        var sink = new CollectingSink();
        var result = await RunCluster(options, 1, sink, beforeWorkers: async akkaPort =>
        {
            var listening = sink.Events.Single(e => e.Properties.ContainsKey("DataPort"));
            int dataPort = int.Parse(listening.Properties["DataPort"].ToString());
            await Spray(akkaPort);
            await Spray(dataPort);
        });
        Assert.Equal(8, result.Steps);
        AssertBitwiseEqual(inProcess.Parameters, result.Parameters);
        Assert.Contains(sink.Events, e => e.RenderMessage().Contains("data-plane connection from", StringComparison.Ordinal));
        Assert.Contains(sink.Events, e => e.RenderMessage().Contains("the step's messages over the data plane", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_worker_node_shut_down_mid_run_is_replaced_by_the_survivors()
    {
        var options = Options(maxSteps: 20, workers: 3);
        var inProcess = await InProcessCluster.RunAsync(options, Digits.Train, Digits.Test, null, Serilog.Core.Logger.None).WaitAsync(Limit);
        var sink = new CollectingSink();
        var result = await RunCluster(options, 3, sink, stops => new InlineProgress<BatchProgress>(p => { if (p.Step == 5) stops[1].Cancel(); }));
        Assert.Equal(20, result.Steps);
        AssertClose(inProcess.Parameters, result.Parameters, 1e-4);
        Assert.Contains(sink.WithPhase("membership"), e => e.RenderMessage().Contains(" left: ", StringComparison.Ordinal));
    }
}
