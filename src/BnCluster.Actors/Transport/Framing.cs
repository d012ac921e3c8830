using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace BnCluster.Actors.Transport;

/// <summary>A frame announced a payload longer than the configured maximum; nothing was allocated
/// for it and the connection must be closed (the stream is no longer at a frame boundary).</summary>
public sealed class FrameTooLargeException : IOException
{
    public FrameTooLargeException(long size, int limit)
        : base($"Frame of {size} bytes exceeds the maximum frame size of {limit} bytes; closing the connection.")
    {
        Size = size;
        Limit = limit;
    }

    public long Size { get; }
    public int Limit { get; }
}

/// <summary>The stream ended inside a frame (header or payload).</summary>
public sealed class TruncatedFrameException : IOException
{
    public TruncatedFrameException(string message) : base(message) { }
}

public static class FrameLimits
{
    /// <summary>Default maximum payload: 64 MiB, well above a full parameter set of the default model.</summary>
    public const int DefaultMaxFrameSize = 64 * 1024 * 1024;

    internal static void Validate(int maxFrameSize)
    {
        if (maxFrameSize <= 0)
            throw new ArgumentOutOfRangeException(nameof(maxFrameSize), maxFrameSize, "Maximum frame size must be > 0.");
    }
}

/// <summary>One received frame. The payload lives in a pooled buffer: use it, then Dispose exactly
/// once (copy with <see cref="ToArray"/> to keep it). <see cref="IsEndOfStream"/> marks a clean close.</summary>
public readonly struct Frame : IDisposable
{
    private readonly byte[]? _buffer;

    internal Frame(byte[]? buffer, int length, bool endOfStream)
    {
        _buffer = buffer;
        Length = length;
        IsEndOfStream = endOfStream;
    }

    internal static Frame EndOfStream => new(null, 0, true);

    public bool IsEndOfStream { get; }
    public int Length { get; }
    public ReadOnlyMemory<byte> Payload => _buffer is null ? ReadOnlyMemory<byte>.Empty : _buffer.AsMemory(0, Length);
    public ReadOnlySpan<byte> Span => _buffer is null ? ReadOnlySpan<byte>.Empty : _buffer.AsSpan(0, Length);

    public byte[] ToArray() => Span.ToArray();

    public void Dispose()
    {
        if (_buffer is { Length: > 0 }) ArrayPool<byte>.Shared.Return(_buffer);
    }
}

/// <summary>Reads <c>[4-byte big-endian length][payload]</c> frames. Not thread-safe: one reader per connection.</summary>
public sealed class FrameReader
{
    private readonly Stream _stream;
    private readonly byte[] _header = new byte[4];

    public FrameReader(Stream stream, int maxFrameSize = FrameLimits.DefaultMaxFrameSize)
    {
        ArgumentNullException.ThrowIfNull(stream);
        FrameLimits.Validate(maxFrameSize);
        _stream = stream;
        MaxFrameSize = maxFrameSize;
    }

    public int MaxFrameSize { get; }

    /// <summary>Next frame, or one with <see cref="Frame.IsEndOfStream"/> if the peer closed cleanly between frames.</summary>
    /// <exception cref="FrameTooLargeException">the announced length exceeds <see cref="MaxFrameSize"/> (checked before allocating).</exception>
    /// <exception cref="TruncatedFrameException">the stream ended inside a frame.</exception>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<Frame> ReadFrameAsync(CancellationToken cancellationToken = default)
    {
        var headerRead = await _stream.ReadAtLeastAsync(_header, 4, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
        if (headerRead == 0) return Frame.EndOfStream;
        if (headerRead < 4)
            throw new TruncatedFrameException($"Truncated frame: the stream ended after {headerRead} of 4 length-header bytes.");
        var length = BinaryPrimitives.ReadUInt32BigEndian(_header);
        if (length > (uint)MaxFrameSize) throw new FrameTooLargeException(length, MaxFrameSize);
        if (length == 0) return new Frame([], 0, false);

        var size = (int)length;
        var buffer = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            var read = await _stream.ReadAtLeastAsync(buffer.AsMemory(0, size), size, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
            if (read < size)
                throw new TruncatedFrameException($"Truncated frame: the header announced {size} payload bytes but the stream ended after {read}.");
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
        return new Frame(buffer, size, false);
    }
}

/// <summary>Writes <c>[4-byte big-endian length][payload]</c> frames; concurrent callers are serialized.</summary>
public sealed class FrameWriter : IDisposable
{
    private const int CoalesceLimit = 64 * 1024; // small frames: one write of header+payload
    private readonly Stream _stream;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly byte[] _header = new byte[4];

    public FrameWriter(Stream stream, int maxFrameSize = FrameLimits.DefaultMaxFrameSize)
    {
        ArgumentNullException.ThrowIfNull(stream);
        FrameLimits.Validate(maxFrameSize);
        _stream = stream;
        MaxFrameSize = maxFrameSize;
    }

    public int MaxFrameSize { get; }

    /// <exception cref="FrameTooLargeException">the payload exceeds <see cref="MaxFrameSize"/>; nothing is written.</exception>
    public async ValueTask WriteFrameAsync(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default)
    {
        if (payload.Length > MaxFrameSize) throw new FrameTooLargeException(payload.Length, MaxFrameSize);
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (payload.Length <= CoalesceLimit)
            {
                var total = 4 + payload.Length;
                var buffer = ArrayPool<byte>.Shared.Rent(total);
                try
                {
                    BinaryPrimitives.WriteUInt32BigEndian(buffer, (uint)payload.Length);
                    payload.Span.CopyTo(buffer.AsSpan(4));
                    await _stream.WriteAsync(buffer.AsMemory(0, total), cancellationToken).ConfigureAwait(false);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
            }
            else
            {
                BinaryPrimitives.WriteUInt32BigEndian(_header, (uint)payload.Length);
                await _stream.WriteAsync(_header, cancellationToken).ConfigureAwait(false);
                await _stream.WriteAsync(payload, cancellationToken).ConfigureAwait(false);
            }
            await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    public void Dispose() => _writeLock.Dispose();
}
