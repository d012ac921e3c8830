namespace BnCluster.Actors.Cluster;

/// <summary>Life of a node in the cluster, as in Akka.Cluster. Reachability is a separate flag.</summary>
public enum MemberStatus
{
    Joining,
    Up,
    Leaving,
    Exiting,
    Down,
    Removed,
}

public static class MemberRoles
{
    public const string Coordinator = "coordinator";
    public const string Worker = "worker";
}

public sealed record Member(Address Address, MemberStatus Status, IReadOnlyList<string> Roles, bool IsReachable)
{
    public bool HasRole(string role) => Roles.Contains(role, StringComparer.Ordinal);
    public override string ToString() => $"Member({Address}, {Status}{(IsReachable ? "" : ", unreachable")}, [{string.Join(',', Roles)}])";
}

/// <summary>Published to subscribers (and, for actors, on the EventStream) when a member changes.</summary>
public abstract record MemberEvent(Member Member);
public sealed record MemberJoined(Member Member) : MemberEvent(Member);
public sealed record MemberUp(Member Member) : MemberEvent(Member);
public sealed record MemberLeft(Member Member) : MemberEvent(Member);
public sealed record MemberExited(Member Member) : MemberEvent(Member);
public sealed record MemberDowned(Member Member) : MemberEvent(Member);
public sealed record MemberRemoved(Member Member, MemberStatus PreviousStatus) : MemberEvent(Member);
public sealed record MemberUnreachable(Member Member) : MemberEvent(Member);
public sealed record MemberReachable(Member Member) : MemberEvent(Member);

public sealed record MembershipSettings
{
    public double PhiThreshold { get; init; } = 8.0;
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan AcceptableHeartbeatPause { get; init; } = TimeSpan.FromSeconds(3);
    public TimeSpan MinStdDeviation { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>A member unreachable this long is marked Down (then Removed on the next tick).</summary>
    public TimeSpan DownUnreachableAfter { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>The membership state machine of one node's view of the cluster, driven by explicit
/// events (join, heartbeat, leave, down) and a periodic <see cref="Tick"/> that runs failure
/// detection and the leader's transitions. Socket-free and clock-injectable, so it is unit-testable.
/// Each member makes at most one status transition per tick:
/// Joining→Up, Leaving→Exiting, Exiting→Removed, Down→Removed; unreachable for
/// <see cref="MembershipSettings.DownUnreachableAfter"/> → Down.</summary>
public sealed class ClusterMembership
{
    private sealed class Entry(Member member, PhiAccrualFailureDetector detector)
    {
        public Member Member = member;
        public readonly PhiAccrualFailureDetector Detector = detector;
        public long UnreachableSince;
    }

    private readonly object _gate = new();
    private readonly Dictionary<Address, Entry> _members = [];
    private readonly List<Action<MemberEvent>> _subscribers = [];
    private readonly Func<long> _clockMillis;

    public ClusterMembership(MembershipSettings? settings = null, Func<long>? clockMillis = null)
    {
        Settings = settings ?? new MembershipSettings();
        if (Settings.DownUnreachableAfter < TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(settings), Settings.DownUnreachableAfter, "DownUnreachableAfter must be >= 0.");
        _clockMillis = clockMillis ?? (() => Environment.TickCount64);
    }

    public MembershipSettings Settings { get; }

    /// <summary>Current members (not Removed), ordered by address.</summary>
    public IReadOnlyList<Member> Members
    {
        get
        {
            lock (_gate) return _members.Values.Select(e => e.Member).OrderBy(m => m.Address.ToString(), StringComparer.Ordinal).ToArray();
        }
    }

    public Member? Find(Address address)
    {
        lock (_gate) return _members.TryGetValue(address, out var e) ? e.Member : null;
    }

    /// <summary>Current phi of a member's failure detector (0 if unknown).</summary>
    public double PhiOf(Address address)
    {
        lock (_gate) return _members.TryGetValue(address, out var e) ? e.Detector.Phi : 0.0;
    }

    public IDisposable Subscribe(Action<MemberEvent> subscriber)
    {
        ArgumentNullException.ThrowIfNull(subscriber);
        lock (_gate) _subscribers.Add(subscriber);
        return new Subscription(this, subscriber);
    }

    /// <summary>Publishes every member event on <paramref name="stream"/> (actors subscribe to MemberEvent or a subtype).</summary>
    public IDisposable PublishTo(EventStream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        return Subscribe(stream.Publish);
    }

    /// <summary>A node asks to join; it starts as Joining and counts as one heartbeat. Re-joining a known member is a no-op.</summary>
    public void Join(Address address, IEnumerable<string> roles)
    {
        ArgumentNullException.ThrowIfNull(address);
        ArgumentNullException.ThrowIfNull(roles);
        var roleList = roles.Distinct(StringComparer.Ordinal).OrderBy(r => r, StringComparer.Ordinal).ToArray();
        foreach (var role in roleList)
            if (string.IsNullOrWhiteSpace(role)) throw new ArgumentException($"Member {address} has an empty role name.", nameof(roles));
        var events = new List<MemberEvent>();
        lock (_gate)
        {
            if (_members.ContainsKey(address)) return;
            var detector = new PhiAccrualFailureDetector(Settings.PhiThreshold, 1000, Settings.MinStdDeviation,
                Settings.AcceptableHeartbeatPause, Settings.HeartbeatInterval, _clockMillis);
            detector.HeartBeat();
            var member = new Member(address, MemberStatus.Joining, roleList, IsReachable: true);
            _members[address] = new Entry(member, detector);
            events.Add(new MemberJoined(member));
        }
        Publish(events);
    }

    /// <summary>Records a heartbeat from <paramref name="address"/>; false if it is not a member.</summary>
    public bool Heartbeat(Address address)
    {
        lock (_gate)
        {
            if (!_members.TryGetValue(address, out var entry)) return false;
            entry.Detector.HeartBeat();
            return true;
        }
    }

    /// <summary>A member leaves gracefully: Joining/Up → Leaving (MemberLeft). Idempotent while leaving.</summary>
    public void Leave(Address address)
    {
        var events = new List<MemberEvent>();
        lock (_gate)
        {
            var entry = Get(address, "leave");
            switch (entry.Member.Status)
            {
                case MemberStatus.Joining or MemberStatus.Up:
                    entry.Member = entry.Member with { Status = MemberStatus.Leaving };
                    events.Add(new MemberLeft(entry.Member));
                    break;
                case MemberStatus.Leaving or MemberStatus.Exiting:
                    return;
                default:
                    throw new InvalidOperationException($"Member {address} cannot leave: it is {entry.Member.Status}.");
            }
        }
        Publish(events);
    }

    /// <summary>Marks a member Down (it will be Removed on the next tick). Idempotent.</summary>
    public void Down(Address address)
    {
        var events = new List<MemberEvent>();
        lock (_gate)
        {
            var entry = Get(address, "be downed");
            if (entry.Member.Status == MemberStatus.Down) return;
            entry.Member = entry.Member with { Status = MemberStatus.Down };
            events.Add(new MemberDowned(entry.Member));
        }
        Publish(events);
    }

    /// <summary>Runs failure detection and one round of transitions; call it every heartbeat interval.</summary>
    public void Tick()
    {
        var events = new List<MemberEvent>();
        lock (_gate)
        {
            var now = _clockMillis();
            foreach (var entry in _members.Values.OrderBy(e => e.Member.Address.ToString(), StringComparer.Ordinal).ToArray())
            {
                var member = entry.Member;
                var available = entry.Detector.IsAvailable;
                if (member.Status != MemberStatus.Down)
                {
                    if (member.IsReachable && !available)
                    {
                        entry.Member = member = member with { IsReachable = false };
                        entry.UnreachableSince = now;
                        events.Add(new MemberUnreachable(member));
                    }
                    else if (!member.IsReachable && available)
                    {
                        entry.Member = member = member with { IsReachable = true };
                        events.Add(new MemberReachable(member));
                    }
                }

                switch (member.Status)
                {
                    case MemberStatus.Down or MemberStatus.Exiting:
                        _members.Remove(member.Address);
                        var removed = member with { Status = MemberStatus.Removed };
                        events.Add(new MemberRemoved(removed, member.Status));
                        break;
                    case var _ when !member.IsReachable &&
                                    now - entry.UnreachableSince >= (long)Settings.DownUnreachableAfter.TotalMilliseconds:
                        entry.Member = member with { Status = MemberStatus.Down };
                        events.Add(new MemberDowned(entry.Member));
                        break;
                    case MemberStatus.Joining when member.IsReachable:
                        entry.Member = member with { Status = MemberStatus.Up };
                        events.Add(new MemberUp(entry.Member));
                        break;
                    case MemberStatus.Leaving:
                        entry.Member = member with { Status = MemberStatus.Exiting };
                        events.Add(new MemberExited(entry.Member));
                        break;
                }
            }
        }
        Publish(events);
    }

    private Entry Get(Address address, string action)
    {
        ArgumentNullException.ThrowIfNull(address);
        return _members.TryGetValue(address, out var entry)
            ? entry
            : throw new InvalidOperationException($"Member {address} cannot {action}: it is not a member of the cluster.");
    }

    private void Publish(List<MemberEvent> events)
    {
        if (events.Count == 0) return;
        Action<MemberEvent>[] subscribers;
        lock (_gate) subscribers = [.. _subscribers];
        foreach (var e in events)
            foreach (var subscriber in subscribers)
                subscriber(e);
    }

    private sealed class Subscription(ClusterMembership owner, Action<MemberEvent> subscriber) : IDisposable
    {
        public void Dispose()
        {
            lock (owner._gate) owner._subscribers.Remove(subscriber);
        }
    }
}
