using System.Net;
using BnCluster.Actors.Transport;

namespace BnCluster.Actors.Remote;

/// <summary>Remoting options of an <see cref="ActorSystem"/> (used when <see cref="ActorSystemOptions.Host"/> is set).</summary>
public sealed record RemoteSettings
{
    /// <summary>Wire protocol version; peers with another version are refused.</summary>
    public int ProtocolVersion { get; init; } = Wire.ProtocolVersion;

    /// <summary>Training job this node belongs to; peers of another job are refused.</summary>
    public string JobId { get; init; } = "";

    /// <summary>Hash of the dataset this node loaded (may be empty); checked only by <see cref="HandshakeValidator"/>.</summary>
    public string DatasetHash { get; init; } = "";

    /// <summary>Roles announced in the handshake and on joining the cluster (<c>coordinator</c>, <c>worker</c>).</summary>
    public IReadOnlyList<string> Roles { get; init; } = [];

    /// <summary>Extra policy run on every inbound handshake after version and job id matched:
    /// return null to accept, or the reason to refuse (e.g. a dataset hash mismatch).</summary>
    public Func<HandshakeInfo, string?>? HandshakeValidator { get; init; }

    public int MaxFrameSize { get; init; } = FrameLimits.DefaultMaxFrameSize;

    /// <summary>Messages queued per remote node while (re)connecting; beyond it they go to dead letters.</summary>
    public int OutboundQueueCapacity { get; init; } = 100_000;

    public TimeSpan MinReconnectBackoff { get; init; } = TimeSpan.FromMilliseconds(100);
    public TimeSpan MaxReconnectBackoff { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a new connection may take to send/answer the handshake.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(5);
}

/// <summary>What a peer announced in its handshake frame.</summary>
public sealed record HandshakeInfo(int ProtocolVersion, string JobId, Address Address, long Uid,
    IReadOnlyList<string> Roles, string DatasetHash, EndPoint? RemoteEndPoint);

/// <summary>A peer broke the wire protocol (garbage, unknown frame type, malformed envelope, bad handshake).</summary>
public sealed class RemoteProtocolException : Exception
{
    public RemoteProtocolException(string message) : base(message) { }
    public RemoteProtocolException(string message, Exception inner) : base(message, inner) { }
}
