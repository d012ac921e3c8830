using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;

namespace BnCluster.Collectives.Tcp;

/// <summary>A frame that breaks the data plane's rules (too long, malformed, of an unknown peer); the connection is closed.</summary>
public sealed class FrameException(string message) : IOException(message);

/// <summary>
/// One TCP connection of the data plane: frames of <c>[u32 little-endian length][payload]</c>, in both directions. A frame's
/// length is checked against the limit before any buffer is taken for it, so a peer that announces gigabytes costs nothing.
/// Sending is thread-safe (a worker's step thread and its actor both send) and takes its buffer from a writer reused by
/// every frame; receiving runs one loop that hands each payload to a callback, in a pooled buffer valid only during the call.
/// </summary>
public sealed class FrameConnection : IDisposable
{
    public const int HeaderBytes = 4;

    private readonly Socket _socket;
    private readonly Lock _sendGate = new();
    private readonly ArrayBufferWriter<byte> _sendBuffer = new(64 * 1024);
    private readonly byte[] _header = new byte[HeaderBytes]; // (one receiver at a time)
    private int _maxFrameBytes;
    private int _disposed;

    public FrameConnection(Socket socket, int maxFrameBytes)
    {
        _socket = socket;
        _socket.NoDelay = true; // a BN partial is a few KB and the step waits for it
        // A step's gradients or parameters (megabytes) go in one send and arrive without the sender waiting on the window.
        _socket.SendBufferSize = 4 << 20;
        _socket.ReceiveBufferSize = 4 << 20;
        _maxFrameBytes = maxFrameBytes;
        Remote = socket.RemoteEndPoint?.ToString() ?? "?";
    }

    /// <summary>The peer's address, for messages.</summary>
    public string Remote { get; }

    /// <summary>The longest payload this side accepts; raised once the peer is known (a hello is small, tensors are not).</summary>
    public int MaxFrameBytes
    {
        get => Volatile.Read(ref _maxFrameBytes);
        set => Volatile.Write(ref _maxFrameBytes, value);
    }

    public static async Task<FrameConnection> ConnectAsync(string host, int port, int maxFrameBytes, CancellationToken cancel)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await socket.ConnectAsync(host, port, cancel).ConfigureAwait(false);
            return new FrameConnection(socket, maxFrameBytes);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Sends one frame whose payload <paramref name="write"/> writes. Throws when the connection is gone.</summary>
    public void Send<TState>(TState state, Action<IBufferWriter<byte>, TState> write)
    {
        lock (_sendGate)
        {
            _sendBuffer.ResetWrittenCount();
            var header = _sendBuffer.GetSpan(HeaderBytes);
            _sendBuffer.Advance(HeaderBytes);
            write(_sendBuffer, state);
            int length = _sendBuffer.WrittenCount - HeaderBytes;
            // (The written memory is the writer's own array: the header is patched in place.)
            BinaryPrimitives.WriteUInt32LittleEndian(System.Runtime.InteropServices.MemoryMarshal.AsMemory(_sendBuffer.WrittenMemory).Span, (uint)length);
            var frame = _sendBuffer.WrittenSpan;
            while (frame.Length > 0) frame = frame[_socket.Send(frame)..];
        }
    }

    /// <summary>Sends one frame with <paramref name="payload"/>.</summary>
    public void Send(ReadOnlySpan<byte> payload)
    {
        var copy = ArrayPool<byte>.Shared.Rent(payload.Length);
        try
        {
            payload.CopyTo(copy);
            Send((copy, payload.Length), static (w, s) => w.Write(s.copy.AsSpan(0, s.Length)));
        }
        finally { ArrayPool<byte>.Shared.Return(copy); }
    }

    /// <summary>Reads one frame (null at a clean end of the stream); the returned buffer is rented from the shared pool. One reader at a time.</summary>
    public async ValueTask<(byte[] Buffer, int Length)?> ReceiveAsync(CancellationToken cancel)
    {
        if (!await FillAsync(_header, HeaderBytes, cancel, endAllowed: true).ConfigureAwait(false)) return null;
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(_header);
        if (length > (uint)MaxFrameBytes)
            throw new FrameException($"a frame of {length} bytes from {Remote}, longer than the limit of {MaxFrameBytes}");
        var buffer = ArrayPool<byte>.Shared.Rent((int)length);
        try
        {
            await FillAsync(buffer, (int)length, cancel, endAllowed: false).ConfigureAwait(false);
            return (buffer, (int)length);
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
    }

    /// <summary>
    /// Reads frames until the stream ends or breaks, handing each payload to <paramref name="onFrame"/> (its span is valid
    /// during the call only). Completes at the end of the stream; throws <see cref="FrameException"/> or a socket error.
    /// </summary>
    public async Task ReceiveLoopAsync(Action<ReadOnlyMemory<byte>> onFrame, CancellationToken cancel)
    {
        while (await ReceiveAsync(cancel).ConfigureAwait(false) is var (buffer, length))
            try { onFrame(buffer.AsMemory(0, length)); }
            finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    private async ValueTask<bool> FillAsync(byte[] buffer, int count, CancellationToken cancel, bool endAllowed)
    {
        int read = 0;
        while (read < count)
        {
            int n = await _socket.ReceiveAsync(buffer.AsMemory(read, count - read), SocketFlags.None, cancel).ConfigureAwait(false);
            if (n == 0)
            {
                if (endAllowed && read == 0) return false;
                throw new FrameException($"the connection from {Remote} ended in the middle of a frame");
            }
            read += n;
        }
        return true;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
        _socket.Dispose();
    }
}
