using BnCluster.Actors.Cluster;
using BnCluster.Actors.Remote;
using BnCluster.TestKit;
using Xunit;

namespace BnCluster.Actors.Tests.Remote;

public sealed class ClusterNodeTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    internal static readonly MembershipSettings Fast = new()
    {
        HeartbeatInterval = TimeSpan.FromMilliseconds(100),
        // lenient enough that a loaded 2-core CI machine does not down healthy nodes
        AcceptableHeartbeatPause = TimeSpan.FromMilliseconds(500),
        MinStdDeviation = TimeSpan.FromMilliseconds(50),
        DownUnreachableAfter = TimeSpan.FromMilliseconds(1000),
    };

    private static (RemoteNode Kit, ClusterNode Cluster, TestProbe Events) Start(string name, Address? seed, string role)
    {
        var kit = new RemoteNode(name, new RemoteSettings { JobId = "job-1", Roles = [role] });
        var events = kit.CreateTestProbe("events");
        kit.Sys.EventStream.Subscribe(events.Ref, typeof(MemberEvent));
        var cluster = ClusterNode.Start(kit.Sys, new ClusterSettings { SeedNodes = seed is null ? [] : [seed], Membership = Fast });
        return (kit, cluster, events);
    }

    private static void ExpectUp(TestProbe events, Address address) =>
        events.FishForMessage<MemberUp>(e => e.Member.Address.Equals(address), Timeout);

    [Fact]
    public async Task Nodes_join_through_the_seed_and_all_see_every_member_Up_with_roles()
    {
        var (seedKit, seed, seedEvents) = Start("seed", null, MemberRoles.Coordinator);
        using var _1 = seedKit;
        var (k1, c1, e1) = Start("w1", seedKit.Sys.Address, MemberRoles.Worker);
        using var _2 = k1;
        var (k2, c2, e2) = Start("w2", seedKit.Sys.Address, MemberRoles.Worker);
        using var _3 = k2;

        await Task.WhenAll(seed.WhenUp, c1.WhenUp, c2.WhenUp).WaitAsync(Timeout);
        Assert.True(seed.IsLeader);
        Assert.False(c1.IsLeader);
        foreach (var events in new[] { seedEvents, e1, e2 })
            foreach (var address in new[] { seedKit.Sys.Address, k1.Sys.Address, k2.Sys.Address })
                ExpectUp(events, address);
        seedKit.AwaitCondition(() => c2.Members.Count == 3 && c2.Members.All(m => m.Status == MemberStatus.Up), Timeout);
        Assert.True(c2.Members.Single(m => m.Address.Equals(seedKit.Sys.Address)).HasRole(MemberRoles.Coordinator));
        Assert.True(c2.Members.Single(m => m.Address.Equals(k1.Sys.Address)).HasRole(MemberRoles.Worker));
    }

    [Fact]
    public async Task A_crashed_node_becomes_Unreachable_then_Removed_on_the_others_and_remote_watchers_get_Terminated()
    {
        var (seedKit, seed, seedEvents) = Start("seed", null, MemberRoles.Coordinator);
        using var _1 = seedKit;
        var (k1, c1, e1) = Start("w1", seedKit.Sys.Address, MemberRoles.Worker);
        using var _2 = k1;
        var (k2, c2, _) = Start("w2", seedKit.Sys.Address, MemberRoles.Worker);
        using var _3 = k2;
        await Task.WhenAll(seed.WhenUp, c1.WhenUp, c2.WhenUp).WaitAsync(Timeout);
        ExpectUp(e1, k2.Sys.Address);
        k2.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
        var watcher = seedKit.CreateTestProbe();
        var remoteEcho = seedKit.RefOn(k2, "/user/echo");
        watcher.Watch(remoteEcho);

        var started = System.Diagnostics.Stopwatch.StartNew();
        await c2.AbortAsync(); // sockets closed, no leave
        var crashed = k2.Sys.Address;
        seedEvents.FishForMessage<MemberUnreachable>(e => e.Member.Address.Equals(crashed), Timeout);
        e1.FishForMessage<MemberUnreachable>(e => e.Member.Address.Equals(crashed), Timeout);
        var removed = e1.FishForMessage<MemberRemoved>(e => e.Member.Address.Equals(crashed), Timeout);
        Assert.Equal(MemberStatus.Down, removed.PreviousStatus);
        seedEvents.FishForMessage<MemberRemoved>(e => e.Member.Address.Equals(crashed), Timeout);
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(5), $"removal took {started.Elapsed}");
        watcher.ExpectTerminated(remoteEcho, Timeout);
        Assert.DoesNotContain(c1.Members, m => m.Address.Equals(crashed));
    }

    [Fact]
    public async Task A_node_restarted_on_the_same_port_before_being_removed_rejoins_as_a_new_incarnation()
    {
        var (seedKit, seed, seedEvents) = Start("seed", null, MemberRoles.Coordinator);
        using var _1 = seedKit;
        var (k1, c1, _) = Start("w1", seedKit.Sys.Address, MemberRoles.Worker);
        using var _2 = k1;
        await Task.WhenAll(seed.WhenUp, c1.WhenUp).WaitAsync(Timeout);
        var address = k1.Sys.Address;
        ExpectUp(seedEvents, address);

        await c1.AbortAsync(); // crash, and at once a new process on the same host:port
        var fresh = new RemoteNode("w1", new RemoteSettings { JobId = "job-1", Roles = [MemberRoles.Worker] }, port: address.Port!.Value);
        using var _3 = fresh;
        var c1b = ClusterNode.Start(fresh.Sys, new ClusterSettings { SeedNodes = [seedKit.Sys.Address], Membership = Fast });
        Assert.NotEqual(c1.SelfUid, c1b.SelfUid);

        var removed = seedEvents.FishForMessage<MemberRemoved>(e => e.Member.Address.Equals(address), Timeout);
        Assert.Equal(MemberStatus.Down, removed.PreviousStatus);
        ExpectUp(seedEvents, address);
        await c1b.WhenUp.WaitAsync(Timeout);
        Assert.Contains(seed.Members, m => m.Address.Equals(address) && m.Status == MemberStatus.Up);
    }

    [Fact]
    public async Task A_node_removed_while_alive_joins_again_and_is_Up_everywhere()
    {
        var (seedKit, seed, seedEvents) = Start("seed", null, MemberRoles.Coordinator);
        using var _1 = seedKit;
        var (k1, c1, e1) = Start("w1", seedKit.Sys.Address, MemberRoles.Worker);
        using var _2 = k1;
        await Task.WhenAll(seed.WhenUp, c1.WhenUp).WaitAsync(Timeout);
        var address = k1.Sys.Address;
        ExpectUp(seedEvents, address);
        ExpectUp(e1, address);

        c1.Pause(true); // frozen: a GC pause or SIGSTOP longer than the failure detector allows
        seedEvents.FishForMessage<MemberUnreachable>(e => e.Member.Address.Equals(address), Timeout);
        seedEvents.FishForMessage<MemberRemoved>(e => e.Member.Address.Equals(address), Timeout);
        c1.Pause(false);

        // It learns from the leader that it is out, and joins again as the same incarnation.
        e1.FishForMessage<MemberRemoved>(e => e.Member.Address.Equals(address), Timeout);
        ExpectUp(e1, address);
        ExpectUp(seedEvents, address);
        Assert.False(c1.WhenRemoved.IsCompleted);
        Assert.Contains(seed.Members, m => m.Address.Equals(address) && m.Status == MemberStatus.Up);
        Assert.Contains(c1.Members, m => m.Address.Equals(seedKit.Sys.Address) && m.IsReachable);
    }

    [Fact]
    public async Task A_graceful_leave_goes_Leaving_Exiting_Removed_everywhere()
    {
        var (seedKit, seed, seedEvents) = Start("seed", null, MemberRoles.Coordinator);
        using var _1 = seedKit;
        var (k1, c1, e1) = Start("w1", seedKit.Sys.Address, MemberRoles.Worker);
        using var _2 = k1;
        var (k2, c2, _) = Start("w2", seedKit.Sys.Address, MemberRoles.Worker);
        using var _3 = k2;
        await Task.WhenAll(seed.WhenUp, c1.WhenUp, c2.WhenUp).WaitAsync(Timeout);
        ExpectUp(e1, k2.Sys.Address);

        await c2.Leave(Timeout);
        Assert.True(c2.WhenRemoved.IsCompleted);
        var leaver = k2.Sys.Address;
        e1.FishForMessage<MemberLeft>(e => e.Member.Address.Equals(leaver), Timeout);
        e1.FishForMessage<MemberExited>(e => e.Member.Address.Equals(leaver), Timeout);
        var removed = e1.FishForMessage<MemberRemoved>(e => e.Member.Address.Equals(leaver), Timeout);
        Assert.Equal(MemberStatus.Exiting, removed.PreviousStatus);
        seedEvents.FishForMessage<MemberRemoved>(e => e.Member.Address.Equals(leaver), Timeout);
        Assert.DoesNotContain(seed.Members, m => m.Address.Equals(leaver));
    }
}
