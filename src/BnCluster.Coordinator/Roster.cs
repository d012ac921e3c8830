using Akka.Actor;
using BnCluster.Coordinator.DataPlane;
using BnCluster.Collectives;

namespace BnCluster.Coordinator;

/// <summary>
/// Who trains (docs/design.md, "Cluster membership and failure"): the workers in the roster, in id order, the ranked participants of the
/// running attempt or round (rank = position in the roster, so the shards are those of an uninterrupted run), and the
/// workers dropped while possibly alive, remembered so that they re-enter with their old id in their old rank.
/// Bookkeeping only: the coordinator actor decides, logs and sends.
/// </summary>
internal sealed class Roster
{
    private readonly List<Member> _members = [];
    // By node, not by actor: a worker process whose node was removed comes back as a new actor system on the same address.
    private readonly Dictionary<string, Dropped> _dropped = [];
    private int _nextId; // ids are never reused

    public IReadOnlyList<Member> Members => _members;
    public int Count => _members.Count;
    public IEnumerable<Dropped> DroppedWorkers => _dropped.Values;

    /// <summary>The running attempt's or round's members by rank (none while the coordinator waits for joins).</summary>
    public Member[] Participants { get; private set; } = [];

    /// <summary>
    /// Adds a registering worker: one dropped from its node gets its old id and rank back (<paramref name="rejoined"/>),
    /// any other a new id at the end.
    /// </summary>
    public Member Admit(IActorRef actor, string node, out bool rejoined)
    {
        Member member;
        if (rejoined = _dropped.Remove(node, out var dropped))
        {
            member = new Member(dropped!.Id, actor, node);
            _members.Insert(_members.FindIndex(m => m.Id > dropped.Id) is var at and >= 0 ? at : _members.Count, member);
        }
        else
        {
            member = new Member(_nextId++, actor, node);
            _members.Add(member);
        }
        return member;
    }

    /// <summary>Takes a member out of the roster (false: it was not in it); one that may be <paramref name="alive"/> is remembered as dropped.</summary>
    public bool Remove(Member member, string reason, bool alive)
    {
        if (!_members.Remove(member)) return false;
        if (alive) _dropped[member.Node] = new Dropped(member.Id, member.Actor, member.Node, reason); // a terminated actor cannot come back
        return true;
    }

    /// <summary>The first members, at most <paramref name="upTo"/> (one row each at least), become the participants.</summary>
    public Member[] Choose(int upTo) => Participants = _members.Take(Math.Min(_members.Count, upTo)).ToArray();

    public void ClearParticipants() => Participants = [];

    public bool Contains(Member member) => _members.Contains(member);

    public bool IsParticipant(Member member) => Array.IndexOf(Participants, member) >= 0;

    public Member? Find(IActorRef actor)
    {
        foreach (var m in _members) if (m.Actor.Equals(actor)) return m;
        return null;
    }

    /// <summary>The rank of <paramref name="actor"/> among the participants, or -1.</summary>
    public int RankOf(IActorRef actor)
    {
        for (int r = 0; r < Participants.Length; r++) if (Participants[r].Actor.Equals(actor)) return r;
        return -1;
    }

    public List<Member> At(Address node) => _members.Where(m => m.Actor.Path.Address.Equals(node)).ToList();

    public IEnumerable<Dropped> DroppedAt(Address node) => _dropped.Values.Where(d => d.Actor.Path.Address.Equals(node));
}

/// <summary>A worker in the roster, with what the coordinator knows it holds.</summary>
internal sealed class Member(int id, IActorRef actor, string node)
{
    public int Id { get; } = id;
    public IActorRef Actor { get; } = actor;
    public string Node { get; } = node;
    /// <summary>The parameters version it was sent last (-1: none it can be relied on to hold).</summary>
    public long SentVersion { get; set; } = -1;
    // The shared-memory file offered to this worker, and once it has accepted it, the one its tensors go through.
    public SharedTensorRegion? Offered { get; set; }
    public SharedTensorRegion? Region { get; set; }
    // The batch-norm exchange this worker has opened (the coordinator's current one, or an older one).
    public SharedBatchNormExchange? Exchange { get; set; }
    // A worker on another node: the token of the data channel offered to it, and the channel once it has connected
    // (the step's messages go there then).
    public byte[]? ChannelToken { get; set; }
    public DataChannel? Channel { get; set; }

    public void DisposeRegions()
    {
        Offered?.Unlink();
        Offered?.Dispose();
        Region?.Dispose();
        Offered = Region = null;
        Exchange = null;
    }
}

/// <summary>A worker dropped while possibly alive: told so (<see cref="Told"/>) when it shows up, it registers again.</summary>
internal sealed class Dropped(int id, IActorRef actor, string node, string reason)
{
    public int Id { get; } = id;
    public IActorRef Actor { get; } = actor;
    public string Node { get; } = node;
    public string Reason { get; } = reason;
    public bool Told { get; set; }
}
