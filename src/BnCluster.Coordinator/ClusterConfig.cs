using System.Globalization;
using Akka.Configuration;

namespace BnCluster.Coordinator;

/// <summary>
/// The Akka configuration of a node: cluster.hocon (embedded; every setting and why) with the node's own values on top.
/// </summary>
public static class ClusterConfig
{
    /// <summary>Every node's actor system has this name: Akka.Cluster joins only systems of the same name.</summary>
    public const string SystemName = "bncluster";

    public const string CoordinatorRole = "coordinator", WorkerRole = "worker";

    /// <summary>Milliseconds between heartbeats; shortens every failure-detection timing with it (tests).</summary>
    public const string HeartbeatEnvironmentVariable = "BNCLUSTER_HEARTBEAT_MS";

    private static readonly Lazy<Config> File = new(() =>
    {
        using var stream = typeof(ClusterConfig).Assembly.GetManifestResourceStream("BnCluster.Coordinator.cluster.hocon")
            ?? throw new InvalidOperationException("cluster.hocon is not embedded in BnCluster.Coordinator");
        using var reader = new StreamReader(stream);
        return ConfigurationFactory.ParseString(reader.ReadToEnd());
    });

    /// <summary>The settings of cluster.hocon as they are.</summary>
    public static Config Base => File.Value;

    /// <summary>
    /// The in-process cluster: one actor system, no remoting, no socket. <paramref name="serializeMessages"/>: every
    /// message is serialized and deserialized on its way anyway (tests: each message is proven to survive the wire).
    /// </summary>
    public static Config InProcess(bool serializeMessages = false) =>
        ConfigurationFactory.ParseString($$"""
            akka.actor.provider = local
            akka.actor.serialize-messages = {{(serializeMessages ? "on" : "off")}}
            """).WithFallback(Base);

    /// <summary>
    /// A node of a cluster over TCP: it listens on <paramref name="host"/>:<paramref name="port"/> (0: a free port) and has
    /// <paramref name="role"/>. <paramref name="joinTimeout"/>: how long it tries to join its seed before it shuts down (null:
    /// for ever).
    /// </summary>
    public static Config Node(string host, int port, string role, TimeSpan? joinTimeout = null)
    {
        var node = ConfigurationFactory.ParseString($$"""
            akka.remote.dot-netty.tcp.hostname = "{{host}}"
            akka.remote.dot-netty.tcp.port = {{port.ToString(CultureInfo.InvariantCulture)}}
            akka.cluster.roles = ["{{role}}"]
            akka.cluster.shutdown-after-unsuccessful-join-seed-nodes = {{(joinTimeout is { } t ? Duration(t) : "off")}}
            """);
        return node.WithFallback(HeartbeatOverride()).WithFallback(Base);
    }

    /// <summary>The actor system name of `bncluster status`: another name than the cluster's, so it can never join it.</summary>
    public const string ObserverSystemName = "bncluster-status";

    /// <summary>
    /// `bncluster status`: remoting only (no cluster provider: never a member, so nothing in the cluster counts, watches or
    /// downs it), on <paramref name="host"/> and a free port, silent (its one line is the command's to print). The answer
    /// comes back over the connection it opened (Akka.Remote's passive connections), so the coordinator need not reach it.
    /// </summary>
    public static Config Observer(string host) =>
        ConfigurationFactory.ParseString($$"""
            akka.actor.provider = remote
            akka.remote.dot-netty.tcp.hostname = "{{host}}"
            akka.remote.dot-netty.tcp.port = 0
            akka.loglevel = OFF
            akka.stdout-loglevel = OFF
            akka.log-dead-letters = off
            """).WithFallback(Base);

    /// <summary>Failure-detection timings scaled from BNCLUSTER_HEARTBEAT_MS, or nothing (cluster.hocon's).</summary>
    private static Config HeartbeatOverride()
    {
        if (!int.TryParse(Environment.GetEnvironmentVariable(HeartbeatEnvironmentVariable), NumberStyles.Integer, CultureInfo.InvariantCulture, out int ms) || ms <= 0)
            return Config.Empty;
        var beat = TimeSpan.FromMilliseconds(ms);
        return ConfigurationFactory.ParseString($$"""
            akka.cluster.failure-detector.heartbeat-interval = {{Duration(beat)}}
            akka.cluster.failure-detector.acceptable-heartbeat-pause = {{Duration(3 * beat)}}
            akka.cluster.failure-detector.min-std-deviation = {{Duration(TimeSpan.FromMilliseconds(Math.Max(10, ms / 5)))}}
            akka.cluster.unreachable-nodes-reaper-interval = {{Duration(beat)}}
            akka.cluster.gossip-interval = {{Duration(beat)}}
            akka.cluster.split-brain-resolver.stable-after = {{Duration(4 * beat)}}
            """);
    }

    private static string Duration(TimeSpan t) => ((long)t.TotalMilliseconds).ToString(CultureInfo.InvariantCulture) + "ms";
}
