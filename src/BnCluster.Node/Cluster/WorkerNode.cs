using Akka.Actor;
using Akka.Cluster;
using BnCluster.Coordinator;
using BnCluster.Coordinator.Messages;
using BnCluster.Core.Data;
using Serilog;

namespace BnCluster.Node.Cluster;

/// <summary>
/// A worker process (`bncluster worker --join HOST:PORT`): an Akka.Cluster node of role worker that joins the coordinator's
/// node, asks it for the job, and runs a <see cref="WorkerActor"/> until the run is over. A node cut off from its coordinator
/// long enough is downed (the side without the coordinator downs itself); it then joins again as a new node on the same
/// address, and the coordinator gives it its old rank back. When it cannot (the coordinator is gone), it gives up.
/// </summary>
public sealed class WorkerNode(DatasetSplit dataset, string datasetName, string? labelColumn, int threads, ILogger log)
{
    /// <summary>How long a worker whose node was downed tries to join again before it takes the coordinator for gone.</summary>
    public static readonly TimeSpan RejoinTimeout = TimeSpan.FromSeconds(15);

    private static readonly TimeSpan AskTimeout = TimeSpan.FromSeconds(15);

    /// <summary>What ended one incarnation of the node.</summary>
    private abstract record Outcome
    {
        public sealed record Done(TrainingDone Message) : Outcome;
        public sealed record Failed(string Reason) : Outcome;
        /// <summary>The coordinator will not take this worker (another dataset file or protocol): wrong input, not a failure.</summary>
        public sealed record Refused(string Reason) : Outcome;
        public sealed record NotJoined : Outcome;
        public sealed record CutOff(string Reason) : Outcome;
    }

    /// <summary>Joins <paramref name="seed"/> from <paramref name="endpoint"/> and works until the run ends; returns the exit code.</summary>
    public async Task<int> RunAsync(Address seed, NodeEndpoint endpoint, TimeSpan? joinTimeout, CancellationToken cancel)
    {
        string host = endpoint.Host;
        while (true)
        {
            var (outcome, boundPort) = await RunOnceAsync(seed, endpoint, joinTimeout, cancel).ConfigureAwait(false);
            switch (outcome)
            {
                case Outcome.Done { Message.Succeeded: true }:
                    log.Information("Worker on {Host:l}:{Port}: training done", host, boundPort);
                    return 0;
                case Outcome.Done done:
                    log.Error("Worker on {Host:l}:{Port}: the run failed: {Reason:l}", host, boundPort, done.Message.Reason);
                    return 1;
                case Outcome.Failed failed:
                    log.Error("Worker on {Host:l}:{Port}: {Reason:l}", host, boundPort, failed.Reason);
                    return 1;
                case Outcome.Refused refused:
                    // Exit 2 like any wrong input: a supervisor (systemd's RestartPreventExitStatus=2) does not retry it.
                    log.Error("Worker on {Host:l}:{Port}: refused by the coordinator: {Reason:l}", host, boundPort, refused.Reason);
                    return 2;
                case Outcome.NotJoined:
                    log.Error("Worker on {Host:l}:{Port}: could not join the coordinator at {Seed:l} within {Seconds:0} s (is it running, and is --join its address?)",
                        host, boundPort, seed.ToString(), (joinTimeout ?? RejoinTimeout).TotalSeconds);
                    return 1;
                case Outcome.CutOff cut:
                    // Same address again: the coordinator recognizes the node and gives the worker its old rank.
                    log.Warning("Worker {Node:l} was dropped: {Reason:l}; joining again", RemoteCluster.NodeAddress(host, boundPort).ToString(), cut.Reason);
                    endpoint = endpoint with { Port = boundPort };
                    joinTimeout = joinTimeout is { } t && t < RejoinTimeout ? t : RejoinTimeout;
                    break;
            }
        }
    }

    private async Task<(Outcome, int Port)> RunOnceAsync(Address seed, NodeEndpoint endpoint, TimeSpan? joinTimeout, CancellationToken cancel)
    {
        var system = ActorSystem.Create(ClusterConfig.SystemName, ClusterConfig.Node(endpoint, ClusterConfig.WorkerRole, joinTimeout));
        var cluster = Akka.Cluster.Cluster.Get(system);
        int boundPort = cluster.SelfAddress.Port ?? endpoint.Port;
        try
        {
            var up = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            cluster.RegisterOnMemberUp(() => up.TrySetResult());
            string node = cluster.SelfAddress.ToString();
            log.Information("Worker {Node:l} joining {Seed:l} with {Dataset:l} (sha256 {Sha256:l})", node, seed.ToString(), datasetName, dataset.Sha256);
            cluster.JoinSeedNodes([seed]);
            if (await Task.WhenAny(up.Task, system.WhenTerminated).WaitAsync(cancel).ConfigureAwait(false) != up.Task)
                return (new Outcome.NotJoined(), boundPort);

            JobDescription job;
            IActorRef coordinator;
            try
            {
                var answer = await system.ActorSelection(RemoteCluster.JobPath(seed))
                    .Ask<ITrainingMessage>(new JobQuery(ProtocolInfo.Version, dataset.Sha256, node), AskTimeout, cancel).ConfigureAwait(false);
                if (answer is RegistrationRefused refused) return (new Outcome.Refused(refused.Reason), boundPort);
                job = (JobDescription)answer;
                coordinator = await system.ActorSelection(RemoteCluster.CoordinatorPath(seed)).ResolveOne(AskTimeout, cancel).ConfigureAwait(false);
            }
            catch (Exception e) when (e is AskTimeoutException or ActorNotFoundException or TimeoutException)
            {
                return (new Outcome.CutOff($"no answer from the coordinator's node {seed} ({e.Message})"), boundPort);
            }

            // IDX splits do not depend on the seed: loading again would hold the dataset twice.
            var data = (job.Seed == 0 || !dataset.SplitDependsOnSeed) && job.LabelColumn == labelColumn
                ? dataset : DatasetCatalog.Load(datasetName, job.Seed, job.LabelColumn ?? labelColumn);
            var spec = RemoteCluster.ToSpec(job, data.Train.FeatureCount, data.Train.ClassCount);
            var settings = new WorkerSettings(coordinator, spec, data.Train, data.Test, data.Sha256, job.JobId, node, log, threads);
            StepThreads.Reserve(workers: 1);
            var outcome = new TaskCompletionSource<Outcome>(TaskCreationOptions.RunContinuationsAsynchronously);
            var worker = system.ActorOf(Props.Create(() => new WorkerActor(settings)), "worker");
            system.ActorOf(Props.Create(() => new WorkerWatch(coordinator, worker, outcome)), "watch");
            _ = system.WhenTerminated.ContinueWith(_ => outcome.TrySetResult(new Outcome.CutOff("this node was downed (cut off from the coordinator)")), TaskScheduler.Default);
            return (await outcome.Task.WaitAsync(cancel).ConfigureAwait(false), boundPort);
        }
        finally
        {
            // Leaves the cluster gracefully (the coordinator sees the worker go at once) and stops the actor system.
            await CoordinatedShutdown.Get(system).Run(CoordinatedShutdown.ClrExitReason.Instance).ConfigureAwait(false);
        }
    }

    /// <summary>Waits for the end of the run (published by the worker actor), the worker actor's stop, or the coordinator's.</summary>
    private sealed class WorkerWatch : ReceiveActor
    {
        public WorkerWatch(IActorRef coordinator, IActorRef worker, TaskCompletionSource<Outcome> outcome)
        {
            // (Block bodies: a handler that returns a bool is taken by Akka as "handled or not".)
            Receive<TrainingDone>(done => { outcome.TrySetResult(new Outcome.Done(done)); });
            Receive<Terminated>(t =>
            {
                outcome.TrySetResult(t.ActorRef.Equals(worker)
                    ? new Outcome.Failed("the worker stopped (refused or failed, see above)")
                    : new Outcome.CutOff("the coordinator is unreachable or gone"));
            });
            Context.System.EventStream.Subscribe(Self, typeof(TrainingDone));
            Context.Watch(coordinator);
            Context.Watch(worker);
        }
    }
}
