using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using BnCluster.Actors.Transport;
using Xunit;

namespace BnCluster.Actors.Tests;

public sealed class FramingTests
{
    private static byte[] Payload(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [Fact]
    public async Task Frames_round_trip_through_a_stream_including_empty_and_large()
    {
        var stream = new MemoryStream();
        var writer = new FrameWriter(stream, maxFrameSize: 1 << 20);
        var payloads = new[] { Payload(10, 1), [], Payload(200_000, 2), Payload(65_536, 3) };
        foreach (var p in payloads) await writer.WriteFrameAsync(p);
        Assert.Equal(payloads.Sum(p => 4 + p.Length), stream.Length);
        Assert.Equal([0, 0, 0, 10], stream.ToArray()[..4]);

        stream.Position = 0;
        var reader = new FrameReader(stream, maxFrameSize: 1 << 20);
        foreach (var expected in payloads)
        {
            using var frame = await reader.ReadFrameAsync();
            Assert.False(frame.IsEndOfStream);
            Assert.Equal(expected, frame.ToArray());
        }
        using var end = await reader.ReadFrameAsync();
        Assert.True(end.IsEndOfStream);
    }

    [Fact]
    public async Task Writer_refuses_an_oversized_payload_without_writing()
    {
        var stream = new MemoryStream();
        var writer = new FrameWriter(stream, maxFrameSize: 100);
        var error = await Assert.ThrowsAsync<FrameTooLargeException>(async () => await writer.WriteFrameAsync(new byte[101]));
        Assert.Equal(101, error.Size);
        Assert.Equal(100, error.Limit);
        Assert.Equal(0, stream.Length);
    }

    [Fact]
    public async Task Loopback_tcp_frames_both_ways_then_oversized_and_truncated()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var ct = timeout.Token;

        using var client = new TcpClient();
        var acceptTask = listener.AcceptTcpClientAsync(ct).AsTask();
        await client.ConnectAsync(IPAddress.Loopback, port, ct);
        using var server = await acceptTask;

        var clientStream = client.GetStream();
        var serverStream = server.GetStream();
        var clientWriter = new FrameWriter(clientStream, 1 << 20);
        var clientReader = new FrameReader(clientStream, 1 << 20);
        var serverWriter = new FrameWriter(serverStream, 1 << 20);
        var serverReader = new FrameReader(serverStream, maxFrameSize: 1000);

        // Client → server, server → client.
        var request = Payload(900, 7);
        await clientWriter.WriteFrameAsync(request, ct);
        using (var received = await serverReader.ReadFrameAsync(ct)) Assert.Equal(request, received.ToArray());
        var response = Payload(300_000, 8);
        await serverWriter.WriteFrameAsync(response, ct);
        using (var received = await clientReader.ReadFrameAsync(ct)) Assert.Equal(response, received.ToArray());

        // An announced length above the server's limit is refused before reading the payload.
        var header = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(header, 5_000_000);
        await clientStream.WriteAsync(header, ct);
        var tooLarge = await Assert.ThrowsAsync<FrameTooLargeException>(async () => await serverReader.ReadFrameAsync(ct));
        Assert.Contains("5000000", tooLarge.Message);
        Assert.Contains("1000", tooLarge.Message);
    }

    [Fact]
    public async Task Loopback_tcp_truncated_frame_is_reported()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var ct = timeout.Token;

        var acceptTask = listener.AcceptTcpClientAsync(ct).AsTask();
        using (var client = new TcpClient())
        {
            await client.ConnectAsync(IPAddress.Loopback, port, ct);
            var stream = client.GetStream();
            var partial = new byte[4 + 10];
            BinaryPrimitives.WriteUInt32BigEndian(partial, 100);
            await stream.WriteAsync(partial, ct);
        } // closes the connection mid-frame
        using var server = await acceptTask;
        var reader = new FrameReader(server.GetStream(), 1000);
        var error = await Assert.ThrowsAsync<TruncatedFrameException>(async () => await reader.ReadFrameAsync(ct));
        Assert.Contains("100 payload bytes", error.Message);
        Assert.Contains("after 10", error.Message);
    }

    [Fact]
    public async Task Truncated_header_and_clean_end_are_distinguished()
    {
        var reader = new FrameReader(new MemoryStream([0, 0]), 1000);
        var error = await Assert.ThrowsAsync<TruncatedFrameException>(async () => await reader.ReadFrameAsync());
        Assert.Contains("2 of 4", error.Message);
        using var end = await new FrameReader(new MemoryStream(), 1000).ReadFrameAsync();
        Assert.True(end.IsEndOfStream);
    }
}
