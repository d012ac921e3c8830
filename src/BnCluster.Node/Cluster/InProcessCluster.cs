using Akka.Actor;
using BnCluster.Coordinator;
using BnCluster.Core.Data;
using BnCluster.Core.Training;
using Serilog;

namespace BnCluster.Node.Cluster;

/// <summary>
/// The in-process cluster: one Akka <see cref="ActorSystem"/> without remoting (no socket), the coordinator and K worker
/// actors exchanging message objects without serialization. <see cref="RunAsync"/> is what `bncluster train --workers K`
/// calls; worker processes and other machines run the same actors on a cluster over TCP (<see cref="RemoteCluster"/>).
/// </summary>
public sealed class InProcessCluster : IAsyncDisposable
{
    private readonly TaskCompletionSource<TrainingResult> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<IActorRef> _workers = [];

    private InProcessCluster(ActorSystem system) => System = system;

    public ActorSystem System { get; }
    public IActorRef Coordinator { get; private set; } = ActorRefs.Nobody;
    public IReadOnlyList<IActorRef> Workers => _workers;

    /// <summary>Completes with the trained model, or fails with the coordinator's error.</summary>
    public Task<TrainingResult> Completion => _completion.Task;

    /// <summary>
    /// Trains on <paramref name="options"/>.Workers in-process workers and returns the same result type as the
    /// single-node <see cref="Trainer"/> (parameters, input normalization, per-epoch metrics, steps).
    /// </summary>
    public static async Task<TrainingResult> RunAsync(ClusterTrainingOptions options, Dataset train, Dataset test,
        IProgress<Core.Training.EpochMetrics>? epochProgress, ILogger log, CancellationToken ct = default, IProgress<BatchProgress>? batchProgress = null)
    {
        await using var cluster = Start(options, train, test, log, epochProgress, batchProgress);
        return await cluster.Completion.WaitAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Starts the actors; training runs until <see cref="Completion"/>. Dispose to shut everything down.</summary>
    /// <param name="serializeMessages">Every message is serialized and deserialized on its way (tests: the protocol survives the wire).</param>
    public static InProcessCluster Start(ClusterTrainingOptions options, Dataset train, Dataset test, ILogger log,
        IProgress<Core.Training.EpochMetrics>? epochProgress = null, IProgress<BatchProgress>? batchProgress = null, bool serializeMessages = false)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var spec = options.Trainer.Spec;
        if (train.FeatureCount != spec.Inputs) throw new ArgumentException($"training set '{train.Name}' has {train.FeatureCount} features, network expects {spec.Inputs}");
        if (test.FeatureCount != spec.Inputs) throw new ArgumentException($"test set '{test.Name}' has {test.FeatureCount} features, network expects {spec.Inputs}");
        if (train.ClassCount != spec.Classes) throw new ArgumentException($"training set '{train.Name}' has {train.ClassCount} classes, network expects {spec.Classes}");
        if (train.Count == 0) throw new ArgumentException($"training set '{train.Name}' is empty");

        StepThreads.Reserve(options.Workers);
        var cluster = new InProcessCluster(ActorSystem.Create(ClusterConfig.SystemName, ClusterConfig.InProcess(serializeMessages)));
        var shape = new ClusterDataShape(train.Count, test.Count, train.FeatureCount);
        cluster.Coordinator = cluster.System.ActorOf(
            Props.Create(() => new CoordinatorActor(options, shape, cluster._completion, log, epochProgress, batchProgress)), "coordinator");
        for (int i = 0; i < options.Workers; i++)
        {
            var settings = new WorkerSettings(cluster.Coordinator, spec, train, test, options.DatasetSha256, options.JobId, $"in-process/{i}", log,
                options.Trainer.Threads);
            cluster._workers.Add(cluster.System.ActorOf(Props.Create(() => new WorkerActor(settings)), $"worker-{i}"));
        }
        return cluster;
    }

    /// <summary>Stops worker <paramref name="index"/> as if its process had died (the coordinator sees Terminated).</summary>
    public void StopWorker(int index) => System.Stop(_workers[index]);

    public async ValueTask DisposeAsync()
    {
        _completion.TrySetCanceled();
        await System.Terminate().ConfigureAwait(false);
    }
}
