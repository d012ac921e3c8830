using Akka.Actor;
using Akka.Cluster;
using BnCluster.Coordinator;
using BnCluster.Coordinator.DataPlane;
using BnCluster.Coordinator.Messages;
using BnCluster.Core.Model;
using BnCluster.Core.Training;
using Serilog;

namespace BnCluster.Node.Cluster;

/// <summary>
/// Answers <see cref="JobQuery"/> with the job, so a worker started with only --join and --dataset learns the network and
/// the split seed; a worker of another protocol version or with another dataset file is refused, with the reason logged
/// on both sides.
/// </summary>
public sealed class JobInfoActor : ReceiveActor
{
    public JobInfoActor(JobDescription job, ILogger log) => Receive<JobQuery>(q =>
    {
        string? refusal =
            q.ProtocolVersion != job.ProtocolVersion ? $"protocol version {q.ProtocolVersion}, the coordinator speaks {job.ProtocolVersion}" :
            !string.Equals(q.DatasetSha256, job.DatasetSha256, StringComparison.OrdinalIgnoreCase)
                ? $"dataset sha256 {q.DatasetSha256} differs from the coordinator's {job.DatasetSha256} (every node needs the same dataset file)" : null;
        if (refusal is null)
        {
            Sender.Tell(job, Self);
            return;
        }
        log.Warning("Worker on {Node:l} refused: {Reason:l}", q.Node, refusal);
        Sender.Tell(new RegistrationRefused(refusal), Self);
    });
}

/// <summary>The cluster over TCP (`coordinator`, `worker`, `train --processes`): Akka.Cluster nodes of cluster.hocon.</summary>
public static class RemoteCluster
{
    public const string JobId = "bncluster";

    /// <summary>The job actor's and the coordinator actor's paths on the coordinator's node.</summary>
    public static ActorPath JobPath(Address coordinatorNode) => new RootActorPath(coordinatorNode) / "user" / "job";
    public static ActorPath CoordinatorPath(Address coordinatorNode) => new RootActorPath(coordinatorNode) / "user" / "coordinator";
    /// <summary>The status actor's path on the coordinator's node (`bncluster status`).</summary>
    public static ActorPath StatusPath(Address coordinatorNode) => new RootActorPath(coordinatorNode) / "user" / "status";

    public static Address NodeAddress(string host, int port) => new("akka.tcp", ClusterConfig.SystemName, host, port);

    public static JobDescription Describe(int seed, string? labelColumn, NetworkSpec spec, string datasetSha256) =>
        new(ProtocolInfo.Version, JobId, datasetSha256, seed, labelColumn, spec.Hidden.ToArray(), spec.Activation.ToString(),
            spec.BatchNorm.ToString(), spec.BnEpsilon, spec.BnMomentum);

    public static NetworkSpec ToSpec(JobDescription job, int inputs, int classes) =>
        new(inputs, job.Hidden, classes, Enum.Parse<Activation>(job.Activation), Enum.Parse<BatchNormPlacement>(job.BatchNorm), job.BnEpsilon, job.BnMomentum);

    /// <summary>
    /// Runs the coordinator on <paramref name="host"/>:<paramref name="port"/> (0 = a free port) as the first node of the
    /// cluster (its own seed, hence the oldest, which the downing strategy keeps); <paramref name="onListening"/> gets the
    /// bound port (e.g. to start worker processes). Completes with the trained model when training is done; the workers
    /// are told the outcome and given a moment to leave, and the actor system is shut down on return, failure or cancellation.
    /// </summary>
    public static async Task<TrainingResult> RunCoordinatorAsync(string host, int port, ClusterTrainingOptions options,
        JobDescription job, ClusterDataShape shape, ILogger log, IProgress<Core.Training.EpochMetrics>? epochProgress,
        IProgress<BatchProgress>? batchProgress, Func<int, Task>? onListening, CancellationToken cancel)
    {
        options.Validate();
        var system = ActorSystem.Create(ClusterConfig.SystemName, ClusterConfig.Node(host, port, ClusterConfig.CoordinatorRole));
        var completion = new TaskCompletionSource<TrainingResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        // The step's messages to workers on other nodes (tensors included) go over a port of their own, not Akka.Remote.
        using var dataPlane = new DataPlaneListener(host, 0, refusal => log.Warning("{Refusal:l}", refusal));
        try
        {
            var cluster = Akka.Cluster.Cluster.Get(system);
            var self = cluster.SelfAddress;
            cluster.Join(self);
            int boundPort = self.Port ?? port;
            log.Information("Coordinator listening on {Address:l} (workers join with --join {Host:l}:{Port}), data plane on port {DataPort}; waiting for {Workers} worker(s)",
                self.ToString(), host, boundPort, dataPlane.Port, options.Workers);
            var coordinator = system.ActorOf(Props.Create(() => new CoordinatorActor(options, shape, completion, log, epochProgress, batchProgress, dataPlane)), "coordinator");
            system.ActorOf(Props.Create(() => new StatusActor(coordinator)), "status");
            system.ActorOf(Props.Create(() => new JobInfoActor(job, log)), "job");
            if (onListening is not null) await onListening(boundPort).ConfigureAwait(false);
            var result = await completion.Task.WaitAsync(cancel).ConfigureAwait(false);
            await WorkersLeft(system, TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            return result;
        }
        catch (Exception) when (completion.Task.IsFaulted && !cancel.IsCancellationRequested)
        {
            await WorkersLeft(system, TimeSpan.FromSeconds(5)).ConfigureAwait(false); // they were told the run failed
            throw;
        }
        finally
        {
            completion.TrySetCanceled();
            await CoordinatedShutdown.Get(system).Run(CoordinatedShutdown.ClrExitReason.Instance).ConfigureAwait(false);
        }
    }

    /// <summary>Waits until no worker node is left in the cluster (they leave once told the run is over), at most <paramref name="limit"/>.</summary>
    private static async Task WorkersLeft(ActorSystem system, TimeSpan limit)
    {
        if (system.WhenTerminated.IsCompleted) return;
        var left = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        IActorRef watcher;
        try { watcher = system.ActorOf(Props.Create(() => new WorkersLeftWatcher(left))); }
        catch (InvalidOperationException) { return; } // the system is shutting down already
        try { await left.Task.WaitAsync(limit).ConfigureAwait(false); }
        catch (TimeoutException) { /* a worker that did not leave in time is shut out with the node */ }
        finally { system.Stop(watcher); }
    }

    private sealed class WorkersLeftWatcher : ReceiveActor
    {
        public WorkersLeftWatcher(TaskCompletionSource left)
        {
            var cluster = Akka.Cluster.Cluster.Get(Context.System);
            void Check()
            {
                if (!cluster.State.Members.Any(m => m.HasRole(ClusterConfig.WorkerRole) && m.Status is MemberStatus.Up or MemberStatus.Joining or MemberStatus.WeaklyUp or MemberStatus.Leaving))
                    left.TrySetResult();
            }
            ReceiveAny(_ => Check());
            cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsSnapshot, typeof(ClusterEvent.IMemberEvent));
        }

        protected override void PostStop() => Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);
    }
}
