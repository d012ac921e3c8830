using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Unicode;
using BnCluster.Actors.Transport;
using BnCluster.Core.Serialization;
using Serilog;

namespace BnCluster.Actors.Remote;

/// <summary>The TCP side of an <see cref="ActorSystem"/>: a listener whose inbound connections only
/// receive (handshake, then envelopes delivered in order into local mailboxes), and one
/// <see cref="OutboundEndpoint"/> per remote node for sending.</summary>
internal sealed class RemoteTransport : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly IMessageCodec[] _codecs;
    private readonly ConcurrentDictionary<Address, OutboundEndpoint> _endpoints = new();
    private readonly ConcurrentDictionary<string, RemoteActorRef> _refCache = new(StringComparer.Ordinal);
    // The recipient and sender paths of envelopes repeat on every message of a training step: each text is decoded
    // and parsed once, then found again by its UTF-16 form on the stack, so a delivery allocates no string or path.
    private readonly ConcurrentDictionary<string, EnvelopePath> _pathCache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, EnvelopePath>.AlternateLookup<ReadOnlySpan<char>> _pathLookup;
    private const int MaxCachedPaths = 10_000, MaxCachedPathChars = 512;
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    private readonly ConcurrentDictionary<TcpClient, Task> _inbound = new();
    private readonly Dictionary<Address, List<(RemoteActorRef Watchee, IInternalActorRef Watcher)>> _watches = new();
    private readonly CancellationTokenSource _shutdown = new();
    private Task _acceptLoop = Task.CompletedTask;
    private ActorSystem? _system;

    public RemoteTransport(string host, int port, RemoteSettings settings, IEnumerable<IMessageCodec> codecs, ILogger log)
    {
        Settings = settings;
        FrameLimits.Validate(settings.MaxFrameSize);
        Log = log;
        _codecs = [.. codecs, BuiltInCodec.Instance, Cluster.ClusterCodec.Instance];
        _pathLookup = _pathCache.GetAlternateLookup<ReadOnlySpan<char>>();
        Uid = Random.Shared.NextInt64(1, long.MaxValue);
        var ip = IPAddress.TryParse(host, out var parsed) ? parsed
            : host == "localhost" ? IPAddress.Loopback
            : Dns.GetHostAddresses(host).FirstOrDefault() ?? throw new ArgumentException($"Host '{host}' does not resolve to an IP address.", nameof(host));
        _listener = new TcpListener(ip, port);
        try { _listener.Start(512); }
        catch (SocketException e) { throw new InvalidOperationException($"Cannot listen on {host}:{port}: {e.Message}", e); }
        BoundPort = ((IPEndPoint)_listener.LocalEndpoint).Port;
    }

    public RemoteSettings Settings { get; }
    public ILogger Log { get; private set; }
    public int BoundPort { get; }

    /// <summary>Random incarnation id: a node restarted on the same host:port is a new member.</summary>
    public long Uid { get; }
    public ActorSystem? System => _system;
    public Address Address => _system!.Address;

    /// <summary>Set by the cluster: called for every accepted inbound handshake.</summary>
    public Action<HandshakeInfo>? OnInboundAssociated { get; set; }

    public void Start(ActorSystem system)
    {
        _system = system;
        Log = system.Log.ForContext("Node", system.Address.ToString());
        _acceptLoop = Task.Run(AcceptLoopAsync);
        WatcherActor = system.SystemActorOf(Props.Create(() => new RemoteWatcher(this)), "remote-watcher");
    }

    internal IActorRef WatcherActor { get; private set; } = ActorRefs.Nobody;

    internal AddressFamily AddressFamilyFor(string host) =>
        IPAddress.TryParse(host, out var ip) ? ip.AddressFamily : AddressFamily.InterNetwork;

    // ---- sending ---------------------------------------------------------------------------

    public IActorRef ResolveRemoteRef(ActorPath path) => RefFor(path.ToString(), path);

    private RemoteActorRef RefFor(string text, ActorPath? parsed = null)
    {
        if (_refCache.TryGetValue(text, out var cached)) return cached;
        if (_refCache.Count > 10_000) _refCache.Clear(); // temp ask paths would grow it forever
        var created = new RemoteActorRef(this, parsed ?? ActorPath.Parse(text));
        return _refCache.GetOrAdd(text, created);
    }

    public void Send(RemoteActorRef recipient, object message, IActorRef? sender)
    {
        if (_shutdown.IsCancellationRequested)
        {
            DeadLetter(recipient, message, sender);
            return;
        }
        var address = recipient.Path.Address;
        if (!_endpoints.TryGetValue(address, out var endpoint))
            endpoint = _endpoints.GetOrAdd(address, a => new OutboundEndpoint(this, a));
        endpoint.Enqueue(recipient, message, sender);
    }

    internal string? SenderPath(IActorRef? sender) => sender switch
    {
        null => null,
        RemoteActorRef remote => remote.PathString,
        _ when ReferenceEquals(sender, ActorRefs.Nobody) || ReferenceEquals(sender, _system?.DeadLetters) => null,
        _ => sender.Path.ToString(),
    };

    internal bool TryWriteMessage(object message, MessagePackWriter writer)
    {
        foreach (var codec in _codecs)
            if (codec.TryWrite(message, writer))
            {
                codec.Sent(message);
                return true;
            }
        return false;
    }

    internal bool MayBeLarge(object message)
    {
        foreach (var codec in _codecs)
            if (codec.MayBeLarge(message)) return true;
        return false;
    }

    internal void DeadLetter(IActorRef recipient, object message, IActorRef? sender)
    {
        if (_system is { } system) system.DeadLetter(new Envelope(message, sender), recipient);
    }

    /// <summary>Closes the outbound connection to a node (removed from the cluster) and dead-letters its queue.</summary>
    public void Disassociate(Address address)
    {
        // A short grace lets a last message (the removed node's final member list) go out.
        if (_endpoints.TryRemove(address, out var endpoint)) _ = endpoint.StopAsync(TimeSpan.FromSeconds(1));
    }

    // ---- DeathWatch ------------------------------------------------------------------------

    public void Watch(RemoteActorRef watchee, IInternalActorRef watcher)
    {
        lock (_watches)
        {
            if (!_watches.TryGetValue(watchee.Path.Address, out var list)) _watches[watchee.Path.Address] = list = [];
            list.Add((watchee, watcher));
        }
        var remoteWatcher = ResolveRemoteRef(ActorPath.Root(watchee.Path.Address).Child("system").Child("remote-watcher"));
        remoteWatcher.Tell(new RemoteWatch(watchee.PathString), WatcherActor);
    }

    /// <summary>A watched remote actor stopped: its local watchers get Terminated.</summary>
    public void WatcheeTerminated(string watcheePath)
    {
        var notify = new List<(RemoteActorRef Watchee, IInternalActorRef Watcher)>();
        lock (_watches)
            foreach (var list in _watches.Values)
            {
                notify.AddRange(list.Where(w => w.Watchee.PathString == watcheePath));
                list.RemoveAll(w => w.Watchee.PathString == watcheePath);
            }
        foreach (var (watchee, watcher) in notify) watcher.SendSystemMessage(new DeathWatchNotification(watchee));
    }

    public void Unwatch(RemoteActorRef watchee, IInternalActorRef watcher)
    {
        lock (_watches)
            if (_watches.TryGetValue(watchee.Path.Address, out var list))
                list.RemoveAll(w => w.Watchee.Equals(watchee) && w.Watcher.Equals(watcher));
    }

    /// <summary>The node at <paramref name="address"/> is gone: every watcher of its actors gets Terminated.</summary>
    public void AddressTerminated(Address address)
    {
        List<(RemoteActorRef Watchee, IInternalActorRef Watcher)>? list;
        lock (_watches) _watches.Remove(address, out list);
        if (list is null) return;
        foreach (var (watchee, watcher) in list) watcher.SendSystemMessage(new DeathWatchNotification(watchee));
    }

    // ---- receiving -------------------------------------------------------------------------

    private async Task AcceptLoopAsync()
    {
        while (!_shutdown.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_shutdown.Token).ConfigureAwait(false);
            }
            catch (Exception) when (_shutdown.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException e)
            {
                Log.Warning("Accepting a connection failed: {Reason}", e.Message);
                continue;
            }
            var task = Task.Run(() => HandleInboundAsync(client));
            _inbound[client] = task;
        }
    }

    private async Task HandleInboundAsync(TcpClient client)
    {
        var peer = client.Client.RemoteEndPoint?.ToString() ?? "unknown peer";
        var token = _shutdown.Token;
        try
        {
            client.NoDelay = true;
            var stream = client.GetStream();
            var reader = new FrameReader(stream, Settings.MaxFrameSize);
            HandshakeInfo handshake;
            using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(token))
            {
                timeout.CancelAfter(Settings.HandshakeTimeout);
                Frame first;
                try { first = await reader.ReadFrameAsync(timeout.Token).ConfigureAwait(false); }
                catch (OperationCanceledException) when (!token.IsCancellationRequested)
                {
                    throw new RemoteProtocolException($"no handshake within {Settings.HandshakeTimeout.TotalMilliseconds:0} ms");
                }
                using (first)
                {
                    if (first.IsEndOfStream) return;
                    handshake = Wire.ReadHandshake(first.Span, client.Client.RemoteEndPoint);
                }
            }
            using var buffer = new PooledBufferWriter(1024);
            var refusal = Validate(handshake);
            if (refusal is not null)
            {
                Log.Warning("Refused connection from {Peer} ({PeerNode}): {Reason}", peer, handshake.Address.ToString(), refusal);
                Wire.WriteReject(buffer, refusal);
                await stream.WriteAsync(buffer.WrittenMemory, token).ConfigureAwait(false);
                return;
            }
            Wire.WriteAccept(buffer, Address, Uid);
            await stream.WriteAsync(buffer.WrittenMemory, token).ConfigureAwait(false);
            peer = $"{handshake.Address} ({peer})";
            Log.Debug("Accepted connection from {Peer}", peer);
            OnInboundAssociated?.Invoke(handshake);
            while (true)
            {
                using var frame = await reader.ReadFrameAsync(token).ConfigureAwait(false);
                if (frame.IsEndOfStream) return;
                Dispatch(frame.Span);
            }
        }
        catch (Exception e) when (e is RemoteProtocolException or FrameTooLargeException or TruncatedFrameException)
        {
            Log.Warning("Closing connection from {Peer}: {Reason}", peer, e.Message);
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            if (!token.IsCancellationRequested) Log.Debug("Connection from {Peer} ended: {Reason}", peer, e.Message);
        }
        finally
        {
            client.Dispose();
            _inbound.TryRemove(client, out _);
        }
    }

    private string? Validate(HandshakeInfo handshake)
    {
        if (handshake.ProtocolVersion != Settings.ProtocolVersion)
            return $"protocol version {handshake.ProtocolVersion} does not match this node's version {Settings.ProtocolVersion}";
        if (!string.Equals(handshake.JobId, Settings.JobId, StringComparison.Ordinal))
            return $"job id '{handshake.JobId}' does not match this node's job id '{Settings.JobId}'";
        try
        {
            return Settings.HandshakeValidator?.Invoke(handshake);
        }
        catch (Exception e)
        {
            return $"handshake validator threw {e.GetType().Name}: {e.Message}";
        }
    }

    /// <summary>Decodes one envelope and delivers it; malformed input throws <see cref="RemoteProtocolException"/>.</summary>
    private void Dispatch(ReadOnlySpan<byte> payload)
    {
        ReadOnlySpan<byte> recipientText, senderText = default;
        bool hasSender;
        object message;
        try
        {
            var r = new MessagePackReader(payload);
            if (r.PeekType() != MessagePackType.Array)
                throw new RemoteProtocolException($"frame is a MessagePack {r.PeekType()}, not an envelope array");
            var count = r.ReadArrayHeader();
            var type = count >= 1 ? r.ReadInt32() : -1;
            if (type != Wire.EnvelopeType) throw new RemoteProtocolException($"unknown frame type {type} (expected an envelope, type {Wire.EnvelopeType})");
            if (count != 4) throw new RemoteProtocolException($"envelope has {count} elements; expected 4");
            recipientText = r.ReadStringUtf8();
            hasSender = !r.TryReadNil();
            if (hasSender) senderText = r.ReadStringUtf8();
            var peek = r;
            var fields = peek.ReadArrayHeader();
            if (fields < 1) throw new RemoteProtocolException("message is an empty array; expected [typeId, …]");
            var typeId = peek.ReadInt32();
            var codec = CodecFor(typeId) ?? throw new RemoteProtocolException($"message type id {typeId} is not handled by any registered codec");
            message = codec.Read(ref r);
            if (!r.End) throw new RemoteProtocolException($"envelope has {r.Remaining} trailing bytes");
        }
        catch (MessagePackException e)
        {
            throw new RemoteProtocolException($"malformed envelope: {e.Message}", e);
        }
        ActorPath recipientPath;
        IActorRef? sender;
        try
        {
            recipientPath = PathOf(recipientText).Path;
            sender = hasSender ? ResolveSender(PathOf(senderText)) : null;
        }
        catch (FormatException e)
        {
            throw new RemoteProtocolException($"envelope has an invalid path: {e.Message}", e);
        }
        var system = _system!;
        var recipient = recipientPath.Address.Equals(system.Address) ? system.ResolveLocal(recipientPath) : null;
        if (recipient is null)
        {
            system.DeadLetter(new Envelope(message, sender), new RemoteActorRef(this, recipientPath));
            return;
        }
        recipient.Tell(message, sender ?? ActorRefs.Nobody);
    }

    private IMessageCodec? CodecFor(int typeId)
    {
        foreach (var codec in _codecs) if (codec.Handles(typeId)) return codec;
        return null;
    }

    /// <summary>A path's text and parsed form.</summary>
    private sealed record EnvelopePath(string Text, ActorPath Path);

    /// <summary>
    /// The envelope path whose UTF-8 text is <paramref name="utf8"/>, from the cache when it was seen before; throws
    /// <see cref="RemoteProtocolException"/> for invalid UTF-8 and <see cref="FormatException"/> for an invalid path.
    /// </summary>
    private EnvelopePath PathOf(ReadOnlySpan<byte> utf8)
    {
        Span<char> chars = stackalloc char[MaxCachedPathChars];
        if (Utf8.ToUtf16(utf8, chars, out _, out int written, replaceInvalidSequences: false) == OperationStatus.Done
            && _pathLookup.TryGetValue(chars[..written], out var cached))
            return cached;
        string text;
        try { text = StrictUtf8.GetString(utf8); }
        catch (DecoderFallbackException e) { throw new RemoteProtocolException($"malformed envelope: a path is not valid UTF-8 ({e.Message})", e); }
        var entry = new EnvelopePath(text, ActorPath.Parse(text));
        if (text.Length > MaxCachedPathChars) return entry;
        if (_pathCache.Count > MaxCachedPaths) _pathCache.Clear(); // temp ask paths would grow it forever
        return _pathCache.GetOrAdd(text, entry);
    }

    private IActorRef ResolveSender(EnvelopePath sender)
    {
        if (_refCache.TryGetValue(sender.Text, out var cached)) return cached;
        if (sender.Path.Address.Equals(_system!.Address)) return _system.ResolveLocal(sender.Path) ?? _system.DeadLetters;
        return RefFor(sender.Text, sender.Path);
    }

    public async ValueTask DisposeAsync()
    {
        if (_shutdown.IsCancellationRequested) return;
        _shutdown.Cancel();
        _listener.Stop();
        foreach (var client in _inbound.Keys) client.Dispose();
        var stops = _endpoints.Values.Select(e => e.StopAsync()).ToList();
        _endpoints.Clear();
        try { await Task.WhenAll([.. stops, _acceptLoop, .. _inbound.Values]).ConfigureAwait(false); }
        catch (Exception e) { Log.Debug("Remoting shutdown: {Reason}", e.Message); }
    }

    /// <summary>Closes every socket at once without leaving the cluster: tests simulate a crash with it.</summary>
    public ValueTask AbortAsync() => DisposeAsync();
}
