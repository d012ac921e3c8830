using System.Net.Sockets;
using System.Threading.Channels;
using BnCluster.Actors.Transport;
using BnCluster.Core.Serialization;

namespace BnCluster.Actors.Remote;

/// <summary>The one outbound TCP connection to a remote node: a bounded queue drained by a single
/// writer loop that batches frames into one pooled buffer per write, reconnecting with exponential backoff.</summary>
internal sealed class OutboundEndpoint
{
    private const int BatchBytes = 256 * 1024;
    private readonly RemoteTransport _transport;
    private readonly Channel<OutboundMessage> _queue;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    // Held by whoever writes to the connection: the writer loop for a batch, or a sender writing its frame directly.
    private readonly SemaphoreSlim _writeGate = new(1, 1);
    private readonly PooledBufferWriter _direct = new();
    private volatile NetworkStream? _connected; // set while the writer loop runs on a connection past its handshake

    internal readonly record struct OutboundMessage(RemoteActorRef Recipient, object Message, IActorRef? Sender);

    public OutboundEndpoint(RemoteTransport transport, Address remote)
    {
        _transport = transport;
        Remote = remote;
        _queue = Channel.CreateBounded<OutboundMessage>(new BoundedChannelOptions(transport.Settings.OutboundQueueCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait, // TryWrite fails when full: we dead-letter instead of blocking
        });
        _loop = Task.Run(RunAsync);
    }

    public Address Remote { get; }

    /// <summary>
    /// Sends <paramref name="message"/>: written by this thread when the connection is up and idle (nothing queued, no
    /// write running) and its codec does not say it may be large, which saves the hand-off to the writer loop's thread,
    /// a wake-up that a busy machine delays; queued for the writer loop otherwise. Either way the frames of one sender
    /// go out in the order it sent them.
    /// </summary>
    public void Enqueue(RemoteActorRef recipient, object message, IActorRef? sender)
    {
        if (_connected is not null && _queue.Reader.Count == 0 && !_transport.MayBeLarge(message) && _writeGate.Wait(0))
        {
            try
            {
                if (_connected is { } stream && _queue.Reader.Count == 0)
                {
                    WriteDirect(stream, new OutboundMessage(recipient, message, sender));
                    return;
                }
            }
            finally { _writeGate.Release(); }
        }
        Queue(new OutboundMessage(recipient, message, sender));
    }

    /// <summary>Under the write gate: encodes the message and writes its frame on this thread.</summary>
    private void WriteDirect(NetworkStream stream, in OutboundMessage item)
    {
        _direct.Reset();
        AppendEnvelope(_direct, item);
        if (_direct.WrittenCount == 0) return; // not encodable: dead-lettered by AppendEnvelope
        try { stream.Write(_direct.WrittenSpan); }
        catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException)
        {
            // The connection broke under this frame: close it so that the writer loop reconnects; the frame is lost
            // with the connection, as a batch the loop was writing would be.
            _connected = null;
            stream.Close();
            _transport.Log.Information("Connection to {Remote} failed: {Reason}", Remote.ToString(), e.Message);
            _transport.DeadLetter(item.Recipient, item.Message, item.Sender);
        }
    }

    private void Queue(in OutboundMessage item)
    {
        if (_queue.Writer.TryWrite(item)) return;
        var (recipient, message, sender) = (item.Recipient, item.Message, item.Sender);
        _transport.Log.Warning("Outbound queue to {Remote} is full or closed ({Capacity} messages); {MessageType} goes to dead letters",
            Remote.ToString(), _transport.Settings.OutboundQueueCapacity, message.GetType().Name);
        _transport.DeadLetter(recipient, message, sender);
    }

    /// <summary>Stops accepting messages; what is queued may still be written during <paramref name="drainGrace"/>.</summary>
    public async Task StopAsync(TimeSpan drainGrace = default)
    {
        _queue.Writer.TryComplete();
        if (drainGrace > TimeSpan.Zero) await Task.WhenAny(_loop, Task.Delay(drainGrace)).ConfigureAwait(false);
        _stop.Cancel();
        try { await _loop.ConfigureAwait(false); } catch (OperationCanceledException) { }
        DropQueued("the connection was shut down");
        // The loop has ended, so _connected stays null and no direct write starts again: the direct buffer goes back
        // to the pool (under the gate, after any write still running; a second stop finds it disposed already).
        await _writeGate.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try { _direct.Dispose(); }
        finally { _writeGate.Release(); }
    }

    private void DropQueued(string why)
    {
        var dropped = 0;
        while (_queue.Reader.TryRead(out var item))
        {
            dropped++;
            _transport.DeadLetter(item.Recipient, item.Message, item.Sender);
        }
        if (dropped > 0)
            _transport.Log.Warning("Dropped {Count} queued messages to {Remote} to dead letters: {Reason}", dropped, Remote.ToString(), why);
    }

    private async Task RunAsync()
    {
        var settings = _transport.Settings;
        var backoff = settings.MinReconnectBackoff;
        var token = _stop.Token;
        using var buffer = new PooledBufferWriter();
        while (!token.IsCancellationRequested)
        {
            try
            {
                if (!await _queue.Reader.WaitToReadAsync(token).ConfigureAwait(false)) return;
                using var client = new TcpClient(_transport.AddressFamilyFor(Remote.Host!)) { NoDelay = true };
                await client.ConnectAsync(Remote.Host!, Remote.Port ?? 0, token).ConfigureAwait(false);
                var stream = client.GetStream();
                buffer.Reset();
                Wire.WriteHandshake(buffer, settings, _transport.Address, _transport.Uid);
                await stream.WriteAsync(buffer.WrittenMemory, token).ConfigureAwait(false);
                string? refusal;
                using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(token))
                {
                    timeout.CancelAfter(settings.HandshakeTimeout);
                    using var answer = await new FrameReader(stream, 64 * 1024).ReadFrameAsync(timeout.Token).ConfigureAwait(false);
                    if (answer.IsEndOfStream) throw new IOException("the peer closed the connection during the handshake");
                    refusal = Wire.ReadHandshakeAnswer(answer.Span);
                }
                if (refusal is not null)
                {
                    _transport.Log.Error("Handshake to {Remote} refused: {Reason}", Remote.ToString(), refusal);
                    DropQueued("the handshake was refused: " + refusal);
                    await Task.Delay(settings.MaxReconnectBackoff, token).ConfigureAwait(false);
                    continue;
                }
                _transport.Log.Debug("Connected to {Remote}", Remote.ToString());
                backoff = settings.MinReconnectBackoff;
                try
                {
                    _connected = stream;
                    await WriteLoopAsync(stream, buffer, token).ConfigureAwait(false);
                }
                finally
                {
                    _connected = null;
                    await _writeGate.WaitAsync(CancellationToken.None).ConfigureAwait(false); // a direct write in flight ends first
                    _writeGate.Release();
                }
                return; // queue completed
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) // socket, protocol or anything unexpected: the endpoint must keep trying, never die silently
            {
                _transport.Log.Information("Connection to {Remote} failed: {Reason}; retrying in {Backoff} ms",
                    Remote.ToString(), e.Message, (long)backoff.TotalMilliseconds);
                try { await Task.Delay(backoff, token).ConfigureAwait(false); }
                catch (OperationCanceledException) { return; }
                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, settings.MaxReconnectBackoff.Ticks));
            }
        }
    }

    private async Task WriteLoopAsync(NetworkStream stream, PooledBufferWriter buffer, CancellationToken token)
    {
        var reader = _queue.Reader;
        while (await reader.WaitToReadAsync(token).ConfigureAwait(false))
        {
            await _writeGate.WaitAsync(token).ConfigureAwait(false);
            try
            {
                buffer.Reset();
                while (buffer.WrittenCount < BatchBytes && reader.TryRead(out var item))
                    AppendEnvelope(buffer, item);
                if (buffer.WrittenCount > 0)
                    await stream.WriteAsync(buffer.WrittenMemory, token).ConfigureAwait(false);
            }
            finally { _writeGate.Release(); }
        }
    }

    private void AppendEnvelope(PooledBufferWriter buffer, in OutboundMessage item)
    {
        var start = Wire.BeginFrame(buffer);
        string? failure = null;
        try
        {
            var w = new MessagePackWriter(buffer);
            w.WriteArrayHeader(4);
            w.WriteInt32(Wire.EnvelopeType);
            w.WriteString(item.Recipient.PathString);
            var senderPath = _transport.SenderPath(item.Sender);
            if (senderPath is null) w.WriteNil(); else w.WriteString(senderPath);
            if (!_transport.TryWriteMessage(item.Message, w))
                failure = "no registered IMessageCodec can write it";
        }
        catch (Exception e)
        {
            failure = $"its codec threw {e.GetType().Name}: {e.Message}";
        }
        if (failure is null)
        {
            var length = Wire.EndFrame(buffer, start);
            if (length <= _transport.Settings.MaxFrameSize) return;
            failure = $"its frame of {length} bytes exceeds the maximum frame size of {_transport.Settings.MaxFrameSize} bytes";
        }
        buffer.Rewind(start);
        _transport.Log.Error("Cannot send {MessageType} to {Recipient}: {Reason}; it goes to dead letters",
            item.Message.GetType().Name, item.Recipient.PathString, failure);
        _transport.DeadLetter(item.Recipient, item.Message, item.Sender);
    }
}
