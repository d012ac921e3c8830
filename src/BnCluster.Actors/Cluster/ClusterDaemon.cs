namespace BnCluster.Actors.Cluster;

/// <summary>The actor behind <see cref="ClusterNode"/> at <c>/system/cluster</c>. On the leader it owns a
/// <see cref="ClusterMembership"/>; everywhere it turns successive member lists into member events.</summary>
internal sealed class ClusterDaemon : ReceiveActor
{
    internal sealed class Tick { public static readonly Tick Instance = new(); }
    internal sealed class LeaveCommand { public static readonly LeaveCommand Instance = new(); }
    internal sealed record PauseCommand(bool Paused);

    private readonly ClusterNode _node;
    private readonly MembershipSettings _settings;
    private readonly ClusterMembership? _membership;      // leader only
    private readonly Dictionary<Address, long> _uids = []; // leader only: incarnation of each member
    private readonly HashSet<Address> _leavers = [];       // leader only: leaving; told once more when removed
    private readonly HashSet<Address> _pendingDowns = [];  // leader only: old incarnations to down
    private Dictionary<Address, MemberInfo> _view = [];
    private readonly PhiAccrualFailureDetector? _leaderDetector; // followers only
    private bool _leaderReachable = true;
    private long _leaderUnreachableSince;
    private bool _leaderGone;
    private bool _joined;
    private bool _leaving;
    private bool _removed;
    private bool _paused; // test hook: a frozen node (no ticks, no member lists), like a process under SIGSTOP

    public ClusterDaemon(ClusterNode node)
    {
        _node = node;
        _settings = node.Settings.Membership;
        if (node.IsLeader)
        {
            _membership = new ClusterMembership(_settings);
            _membership.Join(node.SelfAddress, node.Roles);
            _uids[node.SelfAddress] = node.SelfUid;
        }
        else
        {
            _leaderDetector = new PhiAccrualFailureDetector(_settings.PhiThreshold, 1000, _settings.MinStdDeviation,
                _settings.AcceptableHeartbeatPause, _settings.HeartbeatInterval);
        }
        Receive<Tick>(_ => { if (!_paused) OnTick(); });
        Receive<PauseCommand>(p => _paused = p.Paused);
        Receive<LeaveCommand>(_ => OnLeave());
        Receive<JoinRequest>(OnJoin);
        Receive<ClusterHeartbeat>(OnHeartbeat);
        Receive<LeaveRequest>(l =>
        {
            if (_membership is null || !_uids.TryGetValue(l.Address, out var uid) || uid != l.Uid) return;
            var member = _membership.Find(l.Address);
            if (member is { Status: MemberStatus.Joining or MemberStatus.Up }) _leavers.Add(l.Address);
        });
        Receive<MembershipState>(OnState);
    }

    protected internal override void PreStart()
    {
        Timers.StartPeriodicTimer("tick", Tick.Instance, TimeSpan.Zero, _settings.HeartbeatInterval);
    }

    private IActorRef DaemonAt(Address address) =>
        Context.System.ResolveRemote(ActorPath.Root(address).Child("system").Child("cluster"));

    private void OnJoin(JoinRequest join)
    {
        if (_membership is null) return;
        if (_uids.TryGetValue(join.Address, out var known) && known != join.Uid)
        {
            // A new incarnation on the same host:port: the old one is downed; the new one's next Join gets in.
            if (_membership.Find(join.Address) is { Status: not MemberStatus.Down } && _pendingDowns.Add(join.Address))
                Context.System.Log.Information("Cluster: {Address} rejoined as a new incarnation; downing the old one", join.Address.ToString());
            return;
        }
        if (_membership.Find(join.Address) is null)
        {
            _uids[join.Address] = join.Uid;
            _membership.Join(join.Address, join.Roles);
        }
    }

    private void OnHeartbeat(ClusterHeartbeat h)
    {
        if (_membership is null) return;
        if (_uids.TryGetValue(h.Address, out var uid))
        {
            if (uid == h.Uid) _membership.Heartbeat(h.Address);
            return;
        }
        // A heartbeat from a node that is no longer a member: it was removed while alive (a pause longer than the
        // failure detector allows). The member list, without it, tells it so; it then joins again.
        DaemonAt(h.Address).Tell(CurrentState());
    }

    private MembershipState CurrentState() =>
        new(_membership!.Members.Select(m => new MemberInfo(m, _uids.GetValueOrDefault(m.Address))).ToArray());

    private void OnLeave()
    {
        _leaving = true;
        if (_membership is not null)
        {
            _leavers.Add(_node.SelfAddress);
        }
        else if (_joined)
        {
            DaemonAt(_node.LeaderAddress).Tell(new LeaveRequest(_node.SelfAddress, _node.SelfUid));
        }
        else
        {
            MarkSelfRemoved();
        }
    }

    private void OnTick()
    {
        if (_removed) return;
        if (_membership is not null)
        {
            if (_membership.Find(_node.SelfAddress) is not null) _membership.Heartbeat(_node.SelfAddress);
            _membership.Tick();
            // Requests are applied after the tick, so every member list sent shows each step (Leaving, Down).
            foreach (var address in _pendingDowns) _membership.Down(address);
            _pendingDowns.Clear();
            foreach (var address in _leavers)
                if (_membership.Find(address) is { Status: MemberStatus.Joining or MemberStatus.Up }) _membership.Leave(address);
            var state = CurrentState();
            foreach (var info in state.Members)
                if (!info.Member.Address.Equals(_node.SelfAddress)) DaemonAt(info.Member.Address).Tell(state);
            foreach (var leaver in _leavers.ToArray())
                if (state.Members.All(m => !m.Member.Address.Equals(leaver)))
                {
                    if (!leaver.Equals(_node.SelfAddress)) DaemonAt(leaver).Tell(state); // it learns it is Removed
                    _leavers.Remove(leaver);
                }
            foreach (var address in _uids.Keys.ToArray())
                if (state.Members.All(m => !m.Member.Address.Equals(address))) _uids.Remove(address);
            Apply(state.Members);
            return;
        }
        var leader = DaemonAt(_node.LeaderAddress);
        if (!_joined)
        {
            leader.Tell(new JoinRequest(_node.SelfAddress, _node.SelfUid, _node.Roles));
            return;
        }
        if (_leaderGone) return;
        leader.Tell(new ClusterHeartbeat(_node.SelfAddress, _node.SelfUid));
        if (_leaving) leader.Tell(new LeaveRequest(_node.SelfAddress, _node.SelfUid));
        var available = _leaderDetector!.IsAvailable;
        if (_leaderReachable && !available)
        {
            _leaderReachable = false;
            _leaderUnreachableSince = Environment.TickCount64;
            SetLeaderReachability(false);
        }
        else if (!_leaderReachable && available)
        {
            _leaderReachable = true;
            SetLeaderReachability(true);
        }
        else if (!_leaderReachable && Environment.TickCount64 - _leaderUnreachableSince >= (long)_settings.DownUnreachableAfter.TotalMilliseconds)
        {
            // Without the leader nothing moves any more: drop it and every member we knew through it.
            Context.System.Log.Warning("Cluster: leader {Leader} unreachable for {Ms} ms; removing it from this node's view",
                _node.LeaderAddress.ToString(), (long)_settings.DownUnreachableAfter.TotalMilliseconds);
            _leaderGone = true;
            Apply(_view.Values.Where(i => !i.Member.Address.Equals(_node.LeaderAddress)).ToArray());
        }
    }

    private void SetLeaderReachability(bool reachable)
    {
        if (!_view.TryGetValue(_node.LeaderAddress, out var leader)) return;
        var updated = leader with { Member = leader.Member with { IsReachable = reachable } };
        Apply(_view.Values.Select(i => i.Member.Address.Equals(_node.LeaderAddress) ? updated : i).ToArray());
    }

    private void OnState(MembershipState state)
    {
        if (_membership is not null || _removed || _leaderGone || _paused) return;
        var containsSelf = state.Members.Any(m => m.Member.Address.Equals(_node.SelfAddress) && m.Uid == _node.SelfUid);
        if (!_joined && !containsSelf) return;
        _joined = true;
        _leaderDetector!.HeartBeat();
        var members = state.Members;
        if (!_leaderReachable)
            members = members.Select(i => i.Member.Address.Equals(_node.LeaderAddress) ? i with { Member = i.Member with { IsReachable = true } } : i).ToArray();
        Apply(members);
        if (containsSelf) return;
        if (_leaving)
        {
            MarkSelfRemoved();
            return;
        }
        // Removed by the leader while alive (it took a pause for a crash): join again as the same incarnation. Actors
        // here keep running; those who care (a worker) learn from the member events or their peers that they were out.
        Context.System.Log.Warning("Cluster: the leader {Leader} removed this node ({Address}) although it is running; joining again",
            _node.LeaderAddress.ToString(), _node.SelfAddress.ToString());
        _joined = false;
    }

    /// <summary>Publishes the events that lead from the previous view to <paramref name="members"/>.</summary>
    private void Apply(IReadOnlyList<MemberInfo> members)
    {
        // The node's member list first: a subscriber that reads it on an event must see the state the event announces.
        _node.SetMembers(members.Select(i => i.Member).OrderBy(m => m.Address.ToString(), StringComparer.Ordinal).ToArray());
        var stream = Context.System.EventStream;
        var next = members.ToDictionary(i => i.Member.Address);
        foreach (var (address, old) in _view)
        {
            if (next.TryGetValue(address, out var now) && now.Uid == old.Uid) continue;
            Removed(old.Member);
        }
        foreach (var info in members)
        {
            var member = info.Member;
            if (!_view.TryGetValue(member.Address, out var old) || old.Uid != info.Uid)
            {
                stream.Publish(member.Status switch
                {
                    MemberStatus.Joining => new MemberJoined(member),
                    MemberStatus.Up => new MemberUp(member),
                    MemberStatus.Leaving => new MemberLeft(member),
                    MemberStatus.Exiting => new MemberExited(member),
                    _ => new MemberDowned(member),
                });
                if (!member.IsReachable) stream.Publish(new MemberUnreachable(member));
                continue;
            }
            if (old.Member.Status != member.Status)
            {
                // A leave can move Up → Exiting between two lists: the Leaving step is still announced.
                if (member.Status == MemberStatus.Exiting && old.Member.Status is MemberStatus.Joining or MemberStatus.Up)
                    stream.Publish(new MemberLeft(member with { Status = MemberStatus.Leaving }));
                MemberEvent? e = member.Status switch
                {
                    MemberStatus.Up => new MemberUp(member),
                    MemberStatus.Leaving => new MemberLeft(member),
                    MemberStatus.Exiting => new MemberExited(member),
                    MemberStatus.Down => new MemberDowned(member),
                    _ => null,
                };
                if (e is not null) stream.Publish(e);
            }
            if (old.Member.IsReachable != member.IsReachable)
                stream.Publish(member.IsReachable ? new MemberReachable(member) : new MemberUnreachable(member));
        }
        _view = next;
        if (_membership is not null && _membership.Find(_node.SelfAddress) is null) MarkSelfRemoved();
    }

    private void Removed(Member member)
    {
        Context.System.Log.Information("Cluster: member {Address} removed (was {Status})", member.Address.ToString(), member.Status);
        Context.System.EventStream.Publish(new MemberRemoved(member with { Status = MemberStatus.Removed }, member.Status));
        if (member.Address.Equals(_node.SelfAddress)) return;
        _node.Transport.AddressTerminated(member.Address);
        _node.Transport.Disassociate(member.Address);
    }

    private void MarkSelfRemoved()
    {
        _removed = true;
        _node.MarkRemoved();
    }
}
