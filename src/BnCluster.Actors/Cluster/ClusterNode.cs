using System.Runtime.InteropServices;
using BnCluster.Actors.Remote;

namespace BnCluster.Actors.Cluster;

public sealed record ClusterSettings
{
    /// <summary>Seed nodes to join through. The first seed is the leader; a node whose address is the
    /// first seed (or with no seeds) is the leader itself.</summary>
    public IReadOnlyList<Address> SeedNodes { get; init; } = [];

    /// <summary>Failure detection and downing (heartbeat 1 s, phi threshold 8, pause 3 s, down after 10 s by default).</summary>
    public MembershipSettings Membership { get; init; } = new();
}

/// <summary>Cluster membership of one <see cref="ActorSystem"/> (Akka's <c>Cluster.Get(system)</c>).
/// A star, not gossip: the leader (first seed) owns the member list, moves Joining → Up,
/// Leaving → Exiting → Removed and unreachable → Down → Removed, and sends the full list to every
/// member each heartbeat interval; members heartbeat to the leader and watch the leader's list as its
/// heartbeat. Member events are published on <see cref="ActorSystem.EventStream"/> on every node.</summary>
public sealed class ClusterNode
{
    private readonly ActorSystem _system;
    private readonly TaskCompletionSource _up = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _removed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile IReadOnlyList<Member> _members = [];

    private ClusterNode(ActorSystem system, ClusterSettings settings, RemoteTransport transport)
    {
        _system = system;
        Settings = settings;
        Transport = transport;
        SelfAddress = system.Address;
        SelfUid = transport.Uid;
        Roles = transport.Settings.Roles;
        IsLeader = settings.SeedNodes.Count == 0 || settings.SeedNodes[0].Equals(SelfAddress);
        LeaderAddress = IsLeader ? SelfAddress : settings.SeedNodes[0];
    }

    /// <summary>Starts the cluster daemon of a remoting-enabled system and joins through the seeds.</summary>
    public static ClusterNode Start(ActorSystem system, ClusterSettings settings)
    {
        ArgumentNullException.ThrowIfNull(system);
        ArgumentNullException.ThrowIfNull(settings);
        var transport = system.Transport ?? throw new InvalidOperationException(
            $"Actor system '{system.Name}' has no remoting: set ActorSystemOptions.Host before starting the cluster.");
        var node = new ClusterNode(system, settings, transport);
        if (!system.Extensions.TryAdd(typeof(ClusterNode), node))
            throw new InvalidOperationException($"Actor system '{system.Name}' already has a cluster node.");
        node.Daemon = system.SystemActorOf(Props.Create(() => new ClusterDaemon(node)), "cluster");
        return node;
    }

    /// <summary>The cluster node started on <paramref name="system"/> with <see cref="Start"/>.</summary>
    public static ClusterNode Get(ActorSystem system) =>
        system.Extensions.TryGetValue(typeof(ClusterNode), out var node) ? (ClusterNode)node
            : throw new InvalidOperationException($"Actor system '{system.Name}' has no cluster node; call ClusterNode.Start first.");

    public ClusterSettings Settings { get; }
    public Address SelfAddress { get; }

    /// <summary>Incarnation id: a node restarted on the same host:port is a different member.</summary>
    public long SelfUid { get; }
    public IReadOnlyList<string> Roles { get; }
    public bool IsLeader { get; }
    public Address LeaderAddress { get; }
    internal RemoteTransport Transport { get; }
    internal IActorRef Daemon { get; private set; } = ActorRefs.Nobody;

    /// <summary>This node's current view of the members (not Removed), ordered by address.</summary>
    public IReadOnlyList<Member> Members => _members;

    /// <summary>Completes when this node is Up.</summary>
    public Task WhenUp => _up.Task;

    /// <summary>Completes when this node has been Removed (after <see cref="Leave"/>, or downed).</summary>
    public Task WhenRemoved => _removed.Task;

    /// <summary>Subscribes an actor to <see cref="MemberEvent"/>s (MemberUp, MemberUnreachable, MemberRemoved…).</summary>
    public void Subscribe(IActorRef subscriber) => _system.EventStream.Subscribe(subscriber, typeof(MemberEvent));

    /// <summary>Graceful leave: Leaving → Exiting → Removed; the task completes once Removed (or after <paramref name="timeout"/>, default 10 s).</summary>
    public async Task Leave(TimeSpan? timeout = null)
    {
        Daemon.Tell(ClusterDaemon.LeaveCommand.Instance);
        await Task.WhenAny(_removed.Task, Task.Delay(timeout ?? TimeSpan.FromSeconds(10))).ConfigureAwait(false);
    }

    /// <summary>For executables: on SIGTERM or Ctrl+C (SIGINT), leave the cluster gracefully and then
    /// terminate the actor system (the process then exits once its main awaits WhenTerminated).
    /// Dispose the result to unregister.</summary>
    public IDisposable LeaveAndTerminateOnShutdownSignals()
    {
        var once = 0;
        void Handler(PosixSignalContext context)
        {
            context.Cancel = true; // we exit ourselves, after leaving
            if (Interlocked.Exchange(ref once, 1) == 1) return;
            _system.Log.Information("Received {Signal}: leaving the cluster, then terminating", context.Signal);
            _ = Task.Run(async () =>
            {
                await Leave().ConfigureAwait(false);
                await _system.Terminate().ConfigureAwait(false);
            });
        }
        var registrations = new[]
        {
            PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handler),
            PosixSignalRegistration.Create(PosixSignal.SIGINT, Handler),
        };
        return new Registrations(registrations);
    }

    private sealed class Registrations(PosixSignalRegistration[] registrations) : IDisposable
    {
        public void Dispose()
        {
            foreach (var r in registrations) r.Dispose();
        }
    }

    /// <summary>Test hook: close every socket at once without leaving, like a crash of this node.</summary>
    internal Task AbortAsync() => Transport.AbortAsync().AsTask();

    /// <summary>Test hook: this node stops (or resumes) heartbeating and reading member lists, like a paused process.</summary>
    internal void Pause(bool paused) => Daemon.Tell(new ClusterDaemon.PauseCommand(paused));

    internal void SetMembers(IReadOnlyList<Member> members)
    {
        _members = members;
        if (members.Any(m => m.Address.Equals(SelfAddress) && m.Status == MemberStatus.Up)) _up.TrySetResult();
    }

    internal void MarkRemoved() => _removed.TrySetResult();
}
