using System.Buffers.Binary;
using System.Net;
using BnCluster.Core.Serialization;

namespace BnCluster.Actors.Remote;

/// <summary>Frame contents (DESIGN §4), each one MessagePack array whose first element is the frame type:
/// <list type="bullet">
/// <item><c>[1, version, jobId, address, uid, [roles…], datasetHash]</c> handshake (first frame of a connection)</item>
/// <item><c>[2, address, uid]</c> handshake accepted</item>
/// <item><c>[3, reason]</c> handshake refused (the connection is then closed)</item>
/// <item><c>[4, recipientPath, senderPath|nil, message]</c> envelope; message is <c>[typeId, …]</c> from a codec</item>
/// </list></summary>
public static class Wire
{
    public const int ProtocolVersion = 1;
    public const int HandshakeType = 1;
    public const int AcceptType = 2;
    public const int RejectType = 3;
    public const int EnvelopeType = 4;

    /// <summary>Appends a 4-byte placeholder for the frame length; returns where the frame starts.</summary>
    internal static int BeginFrame(PooledBufferWriter buffer)
    {
        var start = buffer.WrittenCount;
        buffer.GetSpan(4);
        buffer.Advance(4);
        return start;
    }

    /// <summary>Patches the length of the frame begun at <paramref name="start"/>; returns its payload length.</summary>
    internal static int EndFrame(PooledBufferWriter buffer, int start)
    {
        var length = buffer.WrittenCount - start - 4;
        BinaryPrimitives.WriteUInt32BigEndian(buffer.WrittenSpan.Slice(start, 4), (uint)length);
        return length;
    }

    internal static void WriteHandshake(PooledBufferWriter buffer, RemoteSettings settings, Address address, long uid)
    {
        var start = BeginFrame(buffer);
        var w = new MessagePackWriter(buffer);
        w.WriteArrayHeader(7);
        w.WriteInt32(HandshakeType);
        w.WriteInt32(settings.ProtocolVersion);
        w.WriteString(settings.JobId);
        w.WriteString(address.ToString());
        w.WriteInt64(uid);
        w.WriteArrayHeader(settings.Roles.Count);
        foreach (var role in settings.Roles) w.WriteString(role);
        w.WriteString(settings.DatasetHash);
        EndFrame(buffer, start);
    }

    internal static void WriteAccept(PooledBufferWriter buffer, Address address, long uid)
    {
        var start = BeginFrame(buffer);
        var w = new MessagePackWriter(buffer);
        w.WriteArrayHeader(3);
        w.WriteInt32(AcceptType);
        w.WriteString(address.ToString());
        w.WriteInt64(uid);
        EndFrame(buffer, start);
    }

    internal static void WriteReject(PooledBufferWriter buffer, string reason)
    {
        var start = BeginFrame(buffer);
        var w = new MessagePackWriter(buffer);
        w.WriteArrayHeader(2);
        w.WriteInt32(RejectType);
        w.WriteString(reason);
        EndFrame(buffer, start);
    }

    /// <summary>Parses a handshake frame; anything else throws <see cref="RemoteProtocolException"/> saying what is wrong.</summary>
    internal static HandshakeInfo ReadHandshake(ReadOnlySpan<byte> payload, EndPoint? remote)
    {
        try
        {
            var r = new MessagePackReader(payload, 8);
            if (r.PeekType() != MessagePackType.Array)
                throw new RemoteProtocolException($"first frame is a MessagePack {r.PeekType()}, not a handshake array");
            var count = r.ReadArrayHeader();
            if (count < 1) throw new RemoteProtocolException("first frame is an empty array, not a handshake");
            var type = r.ReadInt32();
            if (type != HandshakeType) throw new RemoteProtocolException($"first frame has type {type}; expected a handshake (type {HandshakeType})");
            if (count != 7) throw new RemoteProtocolException($"handshake has {count} elements; expected 7");
            var version = r.ReadInt32();
            var jobId = r.ReadString();
            var addressText = r.ReadString();
            var uid = r.ReadInt64();
            var roleCount = r.ReadArrayHeader();
            var roles = new string[roleCount];
            for (var i = 0; i < roleCount; i++) roles[i] = r.ReadString();
            var datasetHash = r.ReadString();
            if (!r.End) throw new RemoteProtocolException($"handshake has {r.Remaining} trailing bytes");
            Address address;
            try { address = Address.Parse(addressText); }
            catch (FormatException e) { throw new RemoteProtocolException($"handshake has an invalid node address: {e.Message}"); }
            if (address.HasLocalScope) throw new RemoteProtocolException($"handshake node address '{addressText}' has no host:port");
            return new HandshakeInfo(version, jobId, address, uid, roles, datasetHash, remote);
        }
        catch (MessagePackException e)
        {
            throw new RemoteProtocolException($"first frame is not a valid handshake: {e.Message}", e);
        }
    }

    /// <summary>Reads the answer to our handshake: null when accepted, else the peer's reason.</summary>
    internal static string? ReadHandshakeAnswer(ReadOnlySpan<byte> payload)
    {
        try
        {
            var r = new MessagePackReader(payload, 8);
            var count = r.ReadArrayHeader();
            var type = count >= 1 ? r.ReadInt32() : 0;
            return type switch
            {
                AcceptType when count == 3 => null,
                RejectType when count == 2 => r.ReadString(),
                _ => throw new RemoteProtocolException($"answer to the handshake has type {type} with {count} elements; expected accept or reject"),
            };
        }
        catch (MessagePackException e)
        {
            throw new RemoteProtocolException($"answer to the handshake is not valid MessagePack: {e.Message}", e);
        }
    }
}
