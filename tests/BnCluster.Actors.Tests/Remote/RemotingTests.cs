using System.Buffers.Binary;
using System.Net.Sockets;
using BnCluster.Actors.Remote;
using BnCluster.Core.Serialization;
using Xunit;

namespace BnCluster.Actors.Tests.Remote;

public sealed class RemotingTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task Ask_round_trips_through_a_remote_ref_with_a_custom_codec()
    {
        using var a = new RemoteNode("a");
        using var b = new RemoteNode("b");
        Assert.NotEqual(0, b.Sys.Address.Port);
        b.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
        var echo = a.Sys.ActorSelection(b.Sys.Address + "/user/echo");
        Assert.Equal(b.Sys.Address, echo.Path.Address);

        var pong = await echo.Ask<Pong>(new Ping(7), Timeout);
        Assert.Equal(7, pong.N);
        Assert.Equal("hello", await echo.Ask<string>("hello", Timeout));
        Assert.Equal(new byte[] { 1, 2, 3 }, await echo.Ask<byte[]>(new byte[] { 1, 2, 3 }, Timeout));
    }

    [Fact]
    public void A_port_already_in_use_fails_the_system_creation_naming_host_and_port()
    {
        using var a = new RemoteNode("a");
        var port = a.Sys.Address.Port!.Value;
        var error = Assert.Throws<InvalidOperationException>(() =>
            ActorSystem.Create("b", new ActorSystemOptions { Host = "127.0.0.1", Port = port }));
        Assert.Contains($"127.0.0.1:{port}", error.Message);
    }

    [Fact]
    public void Tell_with_a_sender_routes_the_reply_back_and_keeps_order_of_1000_messages()
    {
        using var a = new RemoteNode("a");
        using var b = new RemoteNode("b");
        b.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
        var echo = a.RefOn(b, "/user/echo");
        var probe = a.CreateTestProbe();
        for (var i = 0; i < 1000; i++) echo.Tell(new Ping(i), probe.Ref);
        for (var i = 0; i < 1000; i++) Assert.Equal(i, probe.ExpectMsg<Pong>(timeout: Timeout).N);
        // the reply's sender is a remote ref to the echo actor
        Assert.Equal(echo.Path, probe.Sender.Path);
    }

    [Fact]
    public void A_reply_to_a_remote_sender_reaches_a_third_node()
    {
        using var a = new RemoteNode("a");
        using var b = new RemoteNode("b");
        using var c = new RemoteNode("c");
        b.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
        var probeOnC = c.CreateTestProbe();
        var senderSeenFromA = a.Sys.ResolveRemote(probeOnC.Ref.Path);
        a.RefOn(b, "/user/echo").Tell(new Ping(3), senderSeenFromA); // b replies to c directly
        Assert.Equal(3, probeOnC.ExpectMsg<Pong>(timeout: Timeout).N);
    }

    [Fact]
    public void A_message_to_a_missing_remote_actor_becomes_a_dead_letter_there()
    {
        using var a = new RemoteNode("a");
        using var b = new RemoteNode("b");
        var deadLetters = b.CreateTestProbe();
        b.Sys.EventStream.Subscribe(deadLetters.Ref, typeof(DeadLetter));
        a.RefOn(b, "/user/nobody-here").Tell(new Ping(1));
        Assert.Equal(new Ping(1), deadLetters.ExpectMsg<DeadLetter>(timeout: Timeout).Message);
    }

    [Fact]
    public async Task An_actor_created_again_under_a_stopped_ones_name_gets_the_messages_sent_to_that_path()
    {
        // Remoting caches envelope paths, never the actors they resolve to.
        using var a = new RemoteNode("a");
        using var b = new RemoteNode("b");
        var first = b.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
        var remoteEcho = a.RefOn(b, "/user/echo");
        Assert.Equal(1, (await remoteEcho.Ask<Pong>(new Ping(1), Timeout)).N);
        var watcher = b.CreateTestProbe();
        watcher.Watch(first);
        b.Sys.Stop(first);
        watcher.ExpectTerminated(first, Timeout);
        b.Sys.ActorOf(Props.Create(() => new PlusHundredActor()), "echo");
        var probe = a.CreateTestProbe();
        remoteEcho.Tell(new Ping(2), probe.Ref);
        Assert.Equal(102, probe.ExpectMsg<Pong>(timeout: Timeout).N);
    }

    private sealed class PlusHundredActor : ReceiveActor
    {
        public PlusHundredActor() => Receive<Ping>(p => Sender.Tell(new Pong(p.N + 100)));
    }

    [Fact]
    public void Watching_a_remote_actor_gives_Terminated_when_it_stops_or_was_never_there()
    {
        using var a = new RemoteNode("a");
        using var b = new RemoteNode("b");
        var echo = b.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
        var watcher = a.CreateTestProbe();
        var remoteEcho = a.RefOn(b, "/user/echo");
        watcher.Watch(remoteEcho);
        remoteEcho.Tell(new Ping(1), watcher.Ref);
        watcher.ExpectMsg<Pong>(timeout: Timeout); // (a watch arriving after the stop is answered with Terminated too)
        b.Sys.Stop(echo);
        Assert.Equal(remoteEcho, watcher.ExpectTerminated(remoteEcho, Timeout).ActorRef);

        var missing = a.RefOn(b, "/user/missing");
        watcher.Watch(missing);
        watcher.ExpectTerminated(missing, Timeout);
    }

    [Theory]
    [InlineData("version")]
    [InlineData("job")]
    [InlineData("validator")]
    public async Task A_mismatched_handshake_is_refused_with_a_reason_on_both_sides_and_other_peers_are_unaffected(string mismatch)
    {
        var serverSettings = new RemoteSettings
        {
            JobId = "job-1",
            DatasetHash = "abc",
            HandshakeValidator = h => h.DatasetHash == "abc" ? null : $"dataset hash '{h.DatasetHash}' differs from 'abc'",
        };
        using var server = new RemoteNode("server", serverSettings);
        var bad = mismatch switch
        {
            "version" => new RemoteSettings { JobId = "job-1", DatasetHash = "abc", ProtocolVersion = 99 },
            "job" => new RemoteSettings { JobId = "job-2", DatasetHash = "abc" },
            _ => new RemoteSettings { JobId = "job-1", DatasetHash = "zzz" },
        };
        using var badNode = new RemoteNode("bad", bad);
        using var good = new RemoteNode("good", serverSettings);
        server.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");

        var expected = mismatch switch { "version" => "protocol version 99", "job" => "job id 'job-2'", _ => "dataset hash 'zzz'" };
        await Assert.ThrowsAsync<AskTimeoutException>(() => badNode.RefOn(server, "/user/echo").Ask<Pong>(new Ping(1), TimeSpan.FromMilliseconds(1500)));
        server.AwaitLog("Refused connection");
        Assert.Contains(server.Log.Lines, l => l.Contains("Refused connection") && l.Contains(expected));
        badNode.AwaitLog("Handshake to");
        Assert.Contains(badNode.Log.Lines, l => l.Contains("refused") && l.Contains(expected));

        Assert.Equal(5, (await good.RefOn(server, "/user/echo").Ask<Pong>(new Ping(5), Timeout)).N);
    }

    public static TheoryData<string> BadInputs => new() { "garbage", "oversized", "wrong-first-frame", "bad-envelope", "path-not-utf8", "not-a-path" };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public async Task A_connection_sending_bad_bytes_is_closed_with_a_log_line_and_the_node_keeps_serving(string kind)
    {
        using var server = new RemoteNode("server", new RemoteSettings { JobId = "job-1", MaxFrameSize = 1024 * 1024 });
        using var good = new RemoteNode("good");
        server.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
        Assert.Equal(1, (await good.RefOn(server, "/user/echo").Ask<Pong>(new Ping(1), Timeout)).N);

        using var raw = new TcpClient();
        await raw.ConnectAsync("127.0.0.1", server.Sys.Address.Port!.Value);
        var stream = raw.GetStream();
        byte[] bytes = kind switch
        {
            "garbage" => Frame([0xc1, 0xc1, 0xff, 0x00]),
            "oversized" => [0x7f, 0xff, 0xff, 0xff, 1, 2, 3],
            "wrong-first-frame" => Frame(Envelope()),
            "path-not-utf8" => [.. Frame(Handshake()), .. Frame(Envelope([0xff, 0xfe, 0x2f]))],
            "not-a-path" => [.. Frame(Handshake()), .. Frame(Envelope("echo, please"u8.ToArray()))],
            _ => [.. Frame(Handshake()), .. Frame([0x93, 0x04, 0xa1, 0x78, 0xc0])],
        };
        await stream.WriteAsync(bytes);
        // the server closes the connection: reads end (after an accept for the good handshake)
        var sink = new byte[4096];
        using var cts = new CancellationTokenSource(Timeout);
        try { while (await stream.ReadAsync(sink, cts.Token) > 0) { } }
        catch (IOException) { } // reset by peer also counts as closed
        var expected = kind switch
        {
            "garbage" => "not a valid handshake",
            "oversized" => "exceeds the maximum frame size",
            "wrong-first-frame" => "expected a handshake",
            "path-not-utf8" => "a path is not valid UTF-8",
            "not-a-path" => "envelope has an invalid path",
            _ => "envelope has 3 elements",
        };
        server.AwaitLog(expected);
        Assert.Contains(server.Log.Lines, l => l.StartsWith("Closing connection from ", StringComparison.Ordinal) && l.Contains(expected));

        Assert.Equal(2, (await good.RefOn(server, "/user/echo").Ask<Pong>(new Ping(2), Timeout)).N);
    }

    private static byte[] Frame(byte[] payload)
    {
        var frame = new byte[4 + payload.Length];
        BinaryPrimitives.WriteUInt32BigEndian(frame, (uint)payload.Length);
        payload.CopyTo(frame, 4);
        return frame;
    }

    private static byte[] Handshake()
    {
        var buffer = new PooledBufferWriter();
        Wire.WriteHandshake(buffer, new RemoteSettings { JobId = "job-1" }, Address.Parse("bncluster://raw@127.0.0.1:1"), 42);
        return buffer.WrittenSpan[4..].ToArray();
    }

    /// <summary>An envelope of the string "hi" to <paramref name="recipientUtf8"/> (default: an echo actor's path), bytes as given.</summary>
    private static byte[] Envelope(byte[]? recipientUtf8 = null)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        var w = new MessagePackWriter(buffer);
        w.WriteArrayHeader(4);
        w.WriteInt32(Wire.EnvelopeType);
        recipientUtf8 ??= "bncluster://x@127.0.0.1:1/user/echo"u8.ToArray();
        w.WriteRaw([0xd9, (byte)recipientUtf8.Length]); // str8
        w.WriteRaw(recipientUtf8);
        w.WriteNil();
        BuiltInCodec.Instance.TryWrite("hi", w);
        return buffer.WrittenSpan.ToArray();
    }
}
