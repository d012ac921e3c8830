using System.Buffers.Binary;
using System.Net.Sockets;
using BnCluster.Collectives.Tcp;
using Xunit;

namespace BnCluster.Collectives.Tests;

/// <summary>The data plane's TCP frames: a peer must say a known hello first, and no frame longer than the limit costs a buffer.</summary>
public sealed class FrameConnectionTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    /// <summary>A listener on an ephemeral loopback port that takes connections whose hello is "hi" and reports the others.</summary>
    private sealed class Harness : IDisposable
    {
        public readonly TaskCompletionSource<FrameConnection> Accepted = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly TaskCompletionSource<string> Refused = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly FrameListener Listener;

        public Harness() => Listener = new FrameListener("127.0.0.1", 0, (hello, connection) =>
        {
            if (!hello.Span.SequenceEqual("hi"u8)) return false;
            Accepted.TrySetResult(connection);
            return true;
        }, why => Refused.TrySetResult(why));

        public void Dispose()
        {
            Listener.Dispose();
            if (Accepted.Task.IsCompletedSuccessfully) Accepted.Task.Result.Dispose();
        }
    }

    private static async Task<Socket> Raw(int port)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync("127.0.0.1", port);
        return socket;
    }

    [Fact]
    public async Task Frames_of_any_size_up_to_the_limit_arrive_whole_and_in_order_after_a_known_hello()
    {
        using var h = new Harness();
        using var client = await FrameConnection.ConnectAsync("127.0.0.1", h.Listener.Port, 1 << 20, CancellationToken.None);
        client.Send("hi"u8);
        var server = await h.Accepted.Task.WaitAsync(Limit);
        server.MaxFrameBytes = 1 << 20;
        var sizes = new[] { 0, 1, 4095, 300_000, 1 << 20 };
        var sender = Task.Run(() =>
        {
            foreach (int size in sizes) client.Send(Enumerable.Range(0, size).Select(i => (byte)(i * 7 + size)).ToArray());
        });
        foreach (int size in sizes)
        {
            var (buffer, length) = (await server.ReceiveAsync(CancellationToken.None).AsTask().WaitAsync(Limit))!.Value;
            Assert.Equal(size, length);
            Assert.True(buffer.AsSpan(0, length).SequenceEqual(Enumerable.Range(0, size).Select(i => (byte)(i * 7 + size)).ToArray()));
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
        await sender.WaitAsync(Limit);
        client.Dispose();
        Assert.Null(await server.ReceiveAsync(CancellationToken.None).AsTask().WaitAsync(Limit)); // a clean end
    }

    [Fact]
    public async Task A_first_frame_announcing_64_MiB_is_refused_before_any_buffer_is_taken()
    {
        using var h = new Harness();
        using var socket = await Raw(h.Listener.Port);
        long before = GC.GetTotalAllocatedBytes(precise: true);
        var header = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(header, 64u << 20);
        await socket.SendAsync(header);
        string why = await h.Refused.Task.WaitAsync(Limit);
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        Assert.Contains("longer than the limit of 256", why);
        Assert.True(allocated < 1 << 20, $"{allocated} bytes allocated for a frame that was refused");
        // The listener closed the connection: the peer reads the end.
        Assert.Equal(0, await socket.ReceiveAsync(new byte[16]).WaitAsync(Limit));
        Assert.False(h.Accepted.Task.IsCompleted);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nHost: x\r\n\r\n")] // (its first 4 bytes read as a length far over the hello limit)
    [InlineData("\u0002\0\0\0no")]                      // a well-formed frame with an unknown hello
    [InlineData("\u0010\0\0\0short")]                   // a frame cut short by the peer closing
    public async Task Garbage_or_an_unknown_hello_closes_the_connection_and_the_listener_goes_on(string garbage)
    {
        using var h = new Harness();
        using (var socket = await Raw(h.Listener.Port))
        {
            await socket.SendAsync(System.Text.Encoding.Latin1.GetBytes(garbage));
            socket.Shutdown(SocketShutdown.Send);
            Assert.NotEmpty(await h.Refused.Task.WaitAsync(Limit));
        }
        // A good peer is still taken afterwards.
        using var client = await FrameConnection.ConnectAsync("127.0.0.1", h.Listener.Port, 1024, CancellationToken.None);
        client.Send("hi"u8);
        await h.Accepted.Task.WaitAsync(Limit);
    }

    [Fact]
    public async Task A_frame_longer_than_the_raised_limit_is_refused_too()
    {
        using var h = new Harness();
        using var client = await FrameConnection.ConnectAsync("127.0.0.1", h.Listener.Port, 1024, CancellationToken.None);
        client.Send("hi"u8);
        var server = await h.Accepted.Task.WaitAsync(Limit);
        server.MaxFrameBytes = 1000;
        client.Send(new byte[1001]);
        var e = await Assert.ThrowsAsync<FrameException>(() => server.ReceiveAsync(CancellationToken.None).AsTask().WaitAsync(Limit));
        Assert.Contains("1001 bytes", e.Message);
    }
}
