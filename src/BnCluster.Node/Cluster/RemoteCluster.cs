using System.Text.Json;
using BnCluster.Actors;
using BnCluster.Actors.Cluster;
using BnCluster.Actors.Remote;
using BnCluster.Coordinator;
using BnCluster.Core.Model;
using BnCluster.Core.Training;
using Serilog;

namespace BnCluster.Node.Cluster;

/// <summary>What a remote worker needs from the coordinator to build its network and split its dataset copy.</summary>
public sealed record JobDescription(int Seed, string? LabelColumn, int[] Hidden, Activation Activation,
    BatchNormPlacement BatchNorm, float BnEpsilon, float BnMomentum)
{
    public NetworkSpec ToSpec(int inputs, int classes) => new(inputs, Hidden, classes, Activation, BatchNorm, BnEpsilon, BnMomentum);
}

/// <summary>
/// Answers the string "job?" (BuiltInCodec, no protocol change) with the <see cref="JobDescription"/> as JSON, so a
/// worker started with only --join and --dataset learns the network and the split seed.
/// </summary>
public sealed class JobInfoActor : ReceiveActor
{
    public const string Query = "job?";

    public JobInfoActor(JobDescription job)
    {
        string json = JsonSerializer.Serialize(job);
        Receive<string>(s => { if (s == Query) Sender.Tell(json, Self); });
    }
}

/// <summary>Names, settings and the coordinator side of the TCP cluster (`coordinator`, `train --processes`).</summary>
public static class RemoteCluster
{
    public const string CoordinatorSystem = "coordinator";
    public const string WorkerSystem = "worker";
    public const string JobId = "bncluster";
    public const string HeartbeatEnvironmentVariable = "BNCLUSTER_HEARTBEAT_MS";

    /// <summary>Default membership timings, or short ones from BNCLUSTER_HEARTBEAT_MS (tests: fast failure detection).</summary>
    public static MembershipSettings Membership()
    {
        if (int.TryParse(Environment.GetEnvironmentVariable(HeartbeatEnvironmentVariable), out int ms) && ms > 0)
            return new MembershipSettings
            {
                HeartbeatInterval = TimeSpan.FromMilliseconds(ms),
                AcceptableHeartbeatPause = TimeSpan.FromMilliseconds(4 * ms),
                MinStdDeviation = TimeSpan.FromMilliseconds(Math.Max(10, ms / 5)),
                DownUnreachableAfter = TimeSpan.FromMilliseconds(8 * ms),
            };
        return new MembershipSettings();
    }

    public static string CoordinatorPath(string host, int port) => $"bncluster://{CoordinatorSystem}@{host}:{port}/user/coordinator";
    public static string JobPath(string host, int port) => $"bncluster://{CoordinatorSystem}@{host}:{port}/user/job";

    /// <summary>Refuses a peer of another protocol version, job or dataset, with the reason (both sides log it).</summary>
    public static Func<HandshakeInfo, string?> Validator(string datasetSha256) => h =>
        h.ProtocolVersion != Wire.ProtocolVersion ? $"protocol version {h.ProtocolVersion}, this node speaks {Wire.ProtocolVersion}" :
        h.JobId != JobId ? $"job '{h.JobId}', this node runs '{JobId}'" :
        !string.Equals(h.DatasetHash, datasetSha256, StringComparison.OrdinalIgnoreCase)
            ? $"dataset sha256 {h.DatasetHash} differs from this node's {datasetSha256} (every node needs the same dataset file)" : null;

    /// <summary>
    /// Runs the coordinator on <paramref name="host"/>:<paramref name="port"/> (0 = ephemeral) as the cluster's seed and
    /// leader; <paramref name="onListening"/> gets the bound port (e.g. to start worker processes). Completes with the
    /// trained model when training is done; the actor system is shut down on return, failure or cancellation.
    /// </summary>
    public static async Task<TrainingResult> RunCoordinatorAsync(string host, int port, ClusterTrainingOptions options,
        JobDescription job, ClusterDataShape shape, ILogger log, IProgress<Core.Training.EpochMetrics>? epochProgress,
        IProgress<BatchProgress>? batchProgress, Func<int, Task>? onListening, CancellationToken cancel)
    {
        options.Validate();
        var system = ActorSystem.Create(CoordinatorSystem, new ActorSystemOptions
        {
            Logger = log, Host = host, Port = port, Codecs = [TrainingMessageCodec.Instance],
            Remote = new RemoteSettings
            {
                JobId = JobId, DatasetHash = options.DatasetSha256, Roles = [MemberRoles.Coordinator],
                HandshakeValidator = Validator(options.DatasetSha256),
            },
        });
        var completion = new TaskCompletionSource<TrainingResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            int boundPort = system.Address.Port ?? port;
            log.Information("Coordinator listening on {Address:l} (workers join with --join {Host:l}:{Port}); waiting for {Workers} worker(s)",
                system.Address.ToString(), host, boundPort, options.Workers);
            var cluster = ClusterNode.Start(system, new ClusterSettings { SeedNodes = [system.Address], Membership = Membership() });
            var coordinator = system.ActorOf(
                Props.Create(() => new CoordinatorActor(options, shape, completion, log, epochProgress, batchProgress)), "coordinator");
            cluster.Subscribe(coordinator);
            system.ActorOf(Props.Create(() => new JobInfoActor(job)), "job");
            if (onListening is not null) await onListening(boundPort).ConfigureAwait(false);
            return await completion.Task.WaitAsync(cancel).ConfigureAwait(false);
        }
        finally
        {
            completion.TrySetCanceled();
            await system.Terminate().ConfigureAwait(false);
        }
    }
}
