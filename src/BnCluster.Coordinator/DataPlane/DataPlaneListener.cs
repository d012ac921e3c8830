using System.Collections.Concurrent;
using System.Security.Cryptography;
using Akka.Actor;
using BnCluster.Collectives.Tcp;
using BnCluster.Coordinator.Messages;

namespace BnCluster.Coordinator.DataPlane;

/// <summary>
/// The coordinator's data-plane port. The coordinator offers each worker on another machine a token (in an Akka message,
/// <see cref="DataChannelOffer"/>); the worker connects and says hello with it, and only then is the connection taken and
/// its frames allowed the size of tensors. An unknown token, garbage or silence closes the connection (logged once).
/// </summary>
public sealed class DataPlaneListener : IDisposable
{
    /// <summary>Listener → coordinator: the worker of <paramref name="Token"/> is connected.</summary>
    public sealed record Opened(byte[] Token, DataChannel Channel) : INoSerializationVerificationNeeded;

    /// <summary>A channel → its receiver: it is closed (the peer went, a frame broke the rules, or it was disposed here).</summary>
    public sealed record Closed(DataChannel Channel, string Reason) : INoSerializationVerificationNeeded;

    private sealed record Expected(IActorRef Worker, IActorRef Coordinator, int FrameLimit);

    private readonly ConcurrentDictionary<string, Expected> _expected = new();
    private readonly FrameListener _listener;

    /// <param name="advertisedHost">The host the offers name (the node's advertised name); null = <paramref name="host"/>.</param>
    public DataPlaneListener(string host, int port, Action<string> refused, string? advertisedHost = null)
    {
        Host = advertisedHost ?? host;
        _listener = new FrameListener(host, port, Accept, refused);
    }

    /// <summary>The host the workers connect to (the advertised one).</summary>
    public string Host { get; }
    public int Port => _listener.Port;

    /// <summary>A new offer for <paramref name="worker"/>, whose frames go to <paramref name="coordinator"/>; replaces none.</summary>
    public DataChannelOffer Offer(IActorRef worker, IActorRef coordinator, int frameLimit)
    {
        byte[] token = RandomNumberGenerator.GetBytes(16);
        _expected[Convert.ToHexString(token)] = new Expected(worker, coordinator, frameLimit);
        return new DataChannelOffer(Host, Port, token);
    }

    /// <summary>Forgets an offer not taken (the worker left before it connected).</summary>
    public void Withdraw(byte[] token) => _expected.TryRemove(Convert.ToHexString(token), out _);

    private bool Accept(ReadOnlyMemory<byte> hello, FrameConnection connection)
    {
        var token = DataChannel.TokenOf(hello.Span);
        if (token.IsEmpty || !_expected.TryRemove(Convert.ToHexString(token), out var expected)) return false;
        var channel = DataChannel.Open(connection, expected.FrameLimit, expected.Coordinator, expected.Worker,
            (c, reason) => expected.Coordinator.Tell(new Closed(c, reason), ActorRefs.NoSender));
        expected.Coordinator.Tell(new Opened(token.ToArray(), channel), ActorRefs.NoSender);
        return true;
    }

    public void Dispose() => _listener.Dispose();
}
