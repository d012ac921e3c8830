using BnCluster.Actors.Remote;

using BnCluster.Core.Serialization;

namespace BnCluster.Actors.Cluster;

// Messages between cluster daemons (/system/cluster). Type ids -10..-19 are reserved for them.
internal sealed record JoinRequest(Address Address, long Uid, IReadOnlyList<string> Roles);
internal sealed record ClusterHeartbeat(Address Address, long Uid);
internal sealed record LeaveRequest(Address Address, long Uid);
internal sealed record MemberInfo(Member Member, long Uid);

/// <summary>The leader's full member list, sent to every member each heartbeat interval (it doubles as the leader's heartbeat).</summary>
internal sealed record MembershipState(IReadOnlyList<MemberInfo> Members);

internal sealed class ClusterCodec : IMessageCodec
{
    private const int Join = -10, Heartbeat = -11, Leave = -12, State = -13, Watch = -14, WatcheeTerminated = -15;
    public static readonly ClusterCodec Instance = new();

    public bool Handles(int typeId) => typeId is Join or Heartbeat or Leave or State or Watch or WatcheeTerminated;

    public bool TryWrite(object message, MessagePackWriter w)
    {
        switch (message)
        {
            case JoinRequest j:
                w.WriteArrayHeader(4); w.WriteInt32(Join); w.WriteString(j.Address.ToString()); w.WriteInt64(j.Uid);
                WriteRoles(w, j.Roles);
                return true;
            case ClusterHeartbeat h:
                w.WriteArrayHeader(3); w.WriteInt32(Heartbeat); w.WriteString(h.Address.ToString()); w.WriteInt64(h.Uid);
                return true;
            case LeaveRequest l:
                w.WriteArrayHeader(3); w.WriteInt32(Leave); w.WriteString(l.Address.ToString()); w.WriteInt64(l.Uid);
                return true;
            case RemoteWatch rw:
                w.WriteArrayHeader(2); w.WriteInt32(Watch); w.WriteString(rw.WatcheePath);
                return true;
            case RemoteWatcheeTerminated rt:
                w.WriteArrayHeader(2); w.WriteInt32(WatcheeTerminated); w.WriteString(rt.WatcheePath);
                return true;
            case MembershipState s:
                w.WriteArrayHeader(2); w.WriteInt32(State);
                w.WriteArrayHeader(s.Members.Count);
                foreach (var m in s.Members)
                {
                    w.WriteArrayHeader(5);
                    w.WriteString(m.Member.Address.ToString());
                    w.WriteInt64(m.Uid);
                    w.WriteInt32((int)m.Member.Status);
                    w.WriteBoolean(m.Member.IsReachable);
                    WriteRoles(w, m.Member.Roles);
                }
                return true;
            default:
                return false;
        }
    }

    private static void WriteRoles(MessagePackWriter w, IReadOnlyList<string> roles)
    {
        w.WriteArrayHeader(roles.Count);
        foreach (var r in roles) w.WriteString(r);
    }

    private static string[] ReadRoles(ref MessagePackReader r)
    {
        var n = r.ReadArrayHeader();
        var roles = new string[n];
        for (var i = 0; i < n; i++) roles[i] = r.ReadString();
        return roles;
    }

    private static Address ReadAddress(ref MessagePackReader r)
    {
        var text = r.ReadString();
        try { return Address.Parse(text); }
        catch (FormatException e) { throw new MessagePackException($"Cluster message has an invalid address: {e.Message}", e); }
    }

    public object Read(ref MessagePackReader r)
    {
        var count = r.ReadArrayHeader();
        var type = r.ReadInt32();
        switch (type)
        {
            case Join when count == 4:
            {
                var address = ReadAddress(ref r);
                var uid = r.ReadInt64();
                return new JoinRequest(address, uid, ReadRoles(ref r));
            }
            case Heartbeat when count == 3:
            {
                var address = ReadAddress(ref r);
                return new ClusterHeartbeat(address, r.ReadInt64());
            }
            case Leave when count == 3:
            {
                var address = ReadAddress(ref r);
                return new LeaveRequest(address, r.ReadInt64());
            }
            case Watch when count == 2:
                return new RemoteWatch(r.ReadString());
            case WatcheeTerminated when count == 2:
                return new RemoteWatcheeTerminated(r.ReadString());
            case State when count == 2:
            {
                var n = r.ReadArrayHeader();
                var members = new MemberInfo[n];
                for (var i = 0; i < n; i++)
                {
                    if (r.ReadArrayHeader() != 5) throw new MessagePackException("Cluster member entry has the wrong number of fields; expected 5.");
                    var address = ReadAddress(ref r);
                    var uid = r.ReadInt64();
                    var status = r.ReadInt32();
                    if (status is < 0 or > (int)MemberStatus.Removed) throw new MessagePackException($"Cluster member status {status} is unknown.");
                    var reachable = r.ReadBoolean();
                    var roles = ReadRoles(ref r);
                    members[i] = new MemberInfo(new Member(address, (MemberStatus)status, roles, reachable), uid);
                }
                return new MembershipState(members);
            }
            default:
                throw new MessagePackException($"Cluster message type {type} with {count} elements is malformed.");
        }
    }
}
