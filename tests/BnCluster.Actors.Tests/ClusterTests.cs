using BnCluster.Actors.Cluster;
using BnCluster.TestKit;
using Xunit;

namespace BnCluster.Actors.Tests;

public sealed class PhiAccrualFailureDetectorTests
{
    private long _now = 1_000_000;

    private PhiAccrualFailureDetector Create(TimeSpan? pause = null) =>
        new(threshold: 8, acceptableHeartbeatPause: pause ?? TimeSpan.FromSeconds(3), clockMillis: () => _now);

    [Fact]
    public void Phi_formula_matches_the_logistic_approximation()
    {
        Assert.Equal(0.3010299956639812, PhiAccrualFailureDetector.PhiOf(1000, 1000, 100), 12);
        Assert.Equal(2.9094753264849538, PhiAccrualFailureDetector.PhiOf(1300, 1000, 100), 12);
        Assert.Equal(0.009998761629963108, PhiAccrualFailureDetector.PhiOf(800, 1000, 100), 12);
    }

    [Fact]
    public void Phi_is_zero_before_the_first_heartbeat()
    {
        var detector = Create();
        _now += 60_000;
        Assert.Equal(0.0, detector.Phi);
        Assert.True(detector.IsAvailable);
        Assert.False(detector.IsMonitoring);
    }

    [Fact]
    public void Regular_heartbeats_keep_phi_low()
    {
        var detector = Create();
        for (var i = 0; i < 20; i++)
        {
            detector.HeartBeat();
            _now += 1000;
            Assert.True(detector.Phi < 0.5, $"phi {detector.Phi} after beat {i}");
        }
        Assert.True(detector.IsAvailable);
    }

    [Fact]
    public void Phi_rises_monotonically_without_heartbeats_and_respects_the_acceptable_pause()
    {
        var detector = Create();
        for (var i = 0; i < 10; i++)
        {
            detector.HeartBeat();
            _now += 1000;
        }
        _now -= 1000; // right after the last heartbeat
        var previous = -1.0;
        var phis = new List<double>();
        for (var gap = 0; gap <= 6000; gap += 250)
        {
            _now += gap == 0 ? 0 : 250;
            var phi = detector.Phi;
            Assert.True(phi >= previous, $"phi fell from {previous} to {phi} at {gap} ms");
            previous = phi;
            phis.Add(phi);
        }
        // mean interval ~1 s + 3 s acceptable pause: still available after 3.5 s of silence, not after 5 s.
        Assert.True(phis[14] < 1.0, $"phi at 3.5 s = {phis[14]}");
        Assert.True(phis[20] >= 8.0, $"phi at 5 s = {phis[20]}");
    }

    [Fact]
    public void Without_acceptable_pause_a_short_silence_is_already_suspicious()
    {
        var detector = Create(TimeSpan.Zero);
        for (var i = 0; i < 10; i++)
        {
            detector.HeartBeat();
            _now += 1000;
        }
        _now += 1500; // 2.5 s since the last beat
        Assert.False(detector.IsAvailable);
    }

    [Fact]
    public void Invalid_settings_are_refused_with_their_name()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new PhiAccrualFailureDetector(threshold: 0));
        Assert.Equal("threshold", error.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => new PhiAccrualFailureDetector(acceptableHeartbeatPause: TimeSpan.FromSeconds(-1)));
    }
}

public sealed class MembershipTests
{
    private long _now = 5_000_000;
    private readonly List<MemberEvent> _events = [];
    private readonly ClusterMembership _membership;
    private static readonly Address Coordinator = new("bn", "10.0.0.1", 4053);
    private static readonly Address Worker1 = new("bn", "10.0.0.2", 4053);
    private static readonly Address Worker2 = new("bn", "10.0.0.3", 4053);

    public MembershipTests()
    {
        _membership = new ClusterMembership(new MembershipSettings { DownUnreachableAfter = TimeSpan.FromSeconds(5) }, () => _now);
        _membership.Subscribe(_events.Add);
    }

    private void Advance(int ms, params Address[] heartbeating)
    {
        for (var t = 0; t < ms; t += 1000)
        {
            _now += 1000;
            foreach (var a in heartbeating) _membership.Heartbeat(a);
            _membership.Tick();
        }
    }

    [Fact]
    public void Join_then_tick_brings_members_up_with_roles()
    {
        _membership.Join(Coordinator, [MemberRoles.Coordinator]);
        _membership.Join(Worker1, [MemberRoles.Worker]);
        Assert.Equal([typeof(MemberJoined), typeof(MemberJoined)], _events.Select(e => e.GetType()));
        Assert.All(_membership.Members, m => Assert.Equal(MemberStatus.Joining, m.Status));
        _membership.Tick();
        Assert.Equal(2, _events.OfType<MemberUp>().Count());
        Assert.True(_membership.Find(Worker1)!.HasRole(MemberRoles.Worker));
        Assert.False(_membership.Find(Worker1)!.HasRole(MemberRoles.Coordinator));
        Assert.All(_membership.Members, m => Assert.Equal(MemberStatus.Up, m.Status));
    }

    [Fact]
    public void Graceful_leave_goes_Leaving_Exiting_Removed()
    {
        _membership.Join(Worker1, [MemberRoles.Worker]);
        _membership.Tick();
        _events.Clear();
        _membership.Leave(Worker1);
        Assert.Equal(MemberStatus.Leaving, _membership.Find(Worker1)!.Status);
        _membership.Tick();
        Assert.Equal(MemberStatus.Exiting, _membership.Find(Worker1)!.Status);
        _membership.Tick();
        Assert.Null(_membership.Find(Worker1));
        Assert.Equal([typeof(MemberLeft), typeof(MemberExited), typeof(MemberRemoved)], _events.Select(e => e.GetType()));
        var removed = (MemberRemoved)_events[^1];
        Assert.Equal(MemberStatus.Exiting, removed.PreviousStatus);
        Assert.Equal(MemberStatus.Removed, removed.Member.Status);
    }

    [Fact]
    public void Silent_member_becomes_unreachable_then_downed_then_removed()
    {
        _membership.Join(Coordinator, [MemberRoles.Coordinator]);
        _membership.Join(Worker1, [MemberRoles.Worker]);
        _membership.Join(Worker2, [MemberRoles.Worker]);
        Advance(5000, Coordinator, Worker1, Worker2);
        Assert.Empty(_events.OfType<MemberUnreachable>());

        // Worker2 goes silent: within the 3 s acceptable pause nothing happens.
        Advance(3000, Coordinator, Worker1);
        Assert.Empty(_events.OfType<MemberUnreachable>());
        Advance(2000, Coordinator, Worker1);
        var unreachable = Assert.Single(_events.OfType<MemberUnreachable>());
        Assert.Equal(Worker2, unreachable.Member.Address);
        Assert.False(_membership.Find(Worker2)!.IsReachable);

        Advance(5000, Coordinator, Worker1);
        var downed = Assert.Single(_events.OfType<MemberDowned>());
        Assert.Equal(Worker2, downed.Member.Address);
        Assert.Empty(_events.OfType<MemberRemoved>()); // Down → Removed takes one more tick
        Advance(1000, Coordinator, Worker1);
        var removed = Assert.Single(_events.OfType<MemberRemoved>());
        Assert.Equal(Worker2, removed.Member.Address);
        Assert.Equal(MemberStatus.Down, removed.PreviousStatus);
        Assert.Equal([Coordinator, Worker1], _membership.Members.Select(m => m.Address));
        Assert.False(_membership.Heartbeat(Worker2));
    }

    [Fact]
    public void Unreachable_member_that_resumes_heartbeats_becomes_reachable_again()
    {
        _membership.Join(Worker1, [MemberRoles.Worker]);
        Advance(5000, Worker1);
        Advance(4500);
        Assert.Single(_events.OfType<MemberUnreachable>());
        Advance(1000, Worker1);
        var reachable = Assert.Single(_events.OfType<MemberReachable>());
        Assert.True(reachable.Member.IsReachable);
        Assert.Empty(_events.OfType<MemberDowned>());
    }

    [Fact]
    public void Invalid_transitions_name_the_member()
    {
        var error = Assert.Throws<InvalidOperationException>(() => _membership.Leave(Worker1));
        Assert.Contains(Worker1.ToString(), error.Message);
        _membership.Join(Worker1, [MemberRoles.Worker]);
        _membership.Down(Worker1);
        var leaveDown = Assert.Throws<InvalidOperationException>(() => _membership.Leave(Worker1));
        Assert.Contains("Down", leaveDown.Message);
    }

    [Fact]
    public void Member_events_reach_actors_via_the_EventStream()
    {
        using var kit = new ActorTestKit("membership");
        var probe = kit.CreateTestProbe();
        kit.Sys.EventStream.Subscribe(probe, typeof(MemberEvent));
        using var link = _membership.PublishTo(kit.Sys.EventStream);
        _membership.Join(Worker1, [MemberRoles.Worker]);
        _membership.Tick();
        probe.ExpectMsg<MemberJoined>();
        Assert.Equal(Worker1, probe.ExpectMsg<MemberUp>().Member.Address);
    }
}

public sealed class AddressTests
{
    [Theory]
    [InlineData("bncluster://train@10.0.0.1:4053", "train", "10.0.0.1", 4053)]
    [InlineData("bncluster://my-sys@node-a.local:0", "my-sys", "node-a.local", 0)]
    [InlineData("bncluster://s@[::1]:9000", "s", "::1", 9000)]
    public void Parses_and_prints_round_trip(string text, string system, string host, int port)
    {
        var address = Address.Parse(text);
        Assert.Equal(new Address(system, host, port), address);
        Assert.Equal(text, address.ToString());
    }

    [Fact]
    public void Local_address_and_actor_path()
    {
        Assert.Equal(Address.Local("sys"), Address.Parse("bncluster://sys"));
        var path = ActorPath.Parse("bncluster://train@h:1/user/coordinator/worker-1");
        Assert.Equal(new Address("train", "h", 1), path.Address);
        Assert.Equal(["user", "coordinator", "worker-1"], path.Elements);
        Assert.Equal("/user/coordinator/worker-1", path.ToStringWithoutAddress());
        Assert.Equal("bncluster://train@h:1/user/coordinator/worker-1", path.ToString());
        Assert.Equal(path, ActorPath.Parse(path.ToString()));
    }

    [Theory]
    [InlineData("akka://sys@h:1", "scheme 'akka'")]
    [InlineData("sys@h:1", "no scheme")]
    [InlineData("bncluster://@h:1", "empty actor system name")]
    [InlineData("bncluster://s y@h:1", "invalid character ' '")]
    [InlineData("bncluster://sys@h", "no port")]
    [InlineData("bncluster://sys@h:70000", "invalid port '70000'")]
    [InlineData("bncluster://sys@h:x1", "invalid port 'x1'")]
    [InlineData("bncluster://sys@:1", "empty host")]
    [InlineData("bncluster://sys@h:1/user//a", "empty path element")]
    [InlineData("bncluster://sys@h:1/user/a", "must not contain a path")]
    public void Errors_name_what_is_wrong(string text, string expected)
    {
        var error = Assert.Throws<FormatException>(() => Address.Parse(text));
        Assert.Contains(expected, error.Message);
        Assert.Contains(text, error.Message);
    }
}
