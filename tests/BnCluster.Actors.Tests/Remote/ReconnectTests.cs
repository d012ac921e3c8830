using BnCluster.Actors.Remote;
using Xunit;

namespace BnCluster.Actors.Tests.Remote;

public sealed class ReconnectTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    [Fact]
    public void Messages_sent_while_the_peer_is_down_are_queued_and_delivered_in_order_after_it_comes_back()
    {
        using var a = new RemoteNode("a");
        int port;
        using (var first = new RemoteNode("b")) port = first.Sys.Address.Port!.Value;
        var probe = a.CreateTestProbe();
        var echo = a.Sys.ActorSelection($"bncluster://b@127.0.0.1:{port}/user/echo");
        for (var i = 0; i < 10; i++) echo.Tell(new Ping(i), probe.Ref);
        a.AwaitLog("Connection to bncluster://b@127.0.0.1:" + port + " failed"); // refused, backing off

        using var b = new RemoteNode("b", port: port);
        b.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
        for (var i = 0; i < 10; i++) Assert.Equal(i, probe.ExpectMsg<Pong>(timeout: Timeout).N);
    }

    /// <summary>
    /// Senders write their frames themselves when the connection is idle, and leave messages that may be large (byte
    /// arrays over 64 KiB) to the writer loop: two threads sending small and large messages alternately each get the
    /// replies in the order they sent.
    /// </summary>
    [Fact]
    public async Task Small_frames_written_by_the_sender_and_large_ones_by_the_writer_loop_keep_each_senders_order()
    {
        using var a = new RemoteNode("a");
        using var b = new RemoteNode("b");
        b.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
        var echo = a.RefOn(b, "/user/echo");
        var probes = new[] { a.CreateTestProbe(), a.CreateTestProbe() };
        const int count = 60;
        static byte[] Large(int i)
        {
            var bytes = new byte[100_000];
            BitConverter.TryWriteBytes(bytes, i);
            bytes[^1] = (byte)i;
            return bytes;
        }
        await Task.WhenAll(probes.Select(probe => Task.Run(() =>
        {
            for (int i = 0; i < count; i++)
                if (i % 3 == 2) echo.Tell(Large(i), probe.Ref);
                else echo.Tell(new Ping(i), probe.Ref);
        })));
        foreach (var probe in probes)
            for (int i = 0; i < count; i++)
                if (i % 3 == 2)
                {
                    var bytes = probe.ExpectMsg<byte[]>(timeout: Timeout);
                    Assert.Equal(i, BitConverter.ToInt32(bytes));
                    Assert.Equal((byte)i, bytes[^1]);
                }
                else Assert.Equal(i, probe.ExpectMsg<Pong>(timeout: Timeout).N);
    }

    /// <summary>A peer that restarts on its port after the connection was up: the sender reconnects and what it sends then arrives.</summary>
    [Fact]
    public void After_the_peer_restarts_the_connection_is_made_again_and_later_messages_arrive()
    {
        using var a = new RemoteNode("a");
        var probe = a.CreateTestProbe();
        int port;
        using (var first = new RemoteNode("b"))
        {
            port = first.Sys.Address.Port!.Value;
            first.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
            var before = a.Sys.ActorSelection($"bncluster://b@127.0.0.1:{port}/user/echo");
            before.Tell(new Ping(1), probe.Ref);
            Assert.Equal(1, probe.ExpectMsg<Pong>(timeout: Timeout).N); // connected, and idle
        }
        using var b = new RemoteNode("b", port: port);
        b.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
        var echo = a.Sys.ActorSelection($"bncluster://b@127.0.0.1:{port}/user/echo");
        // The first frames after the restart may go into the dead connection (as with any transport); keep sending
        // until one comes back, then every later one must.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        for (int n = 100; ; n++)
        {
            echo.Tell(new Ping(n), probe.Ref);
            try { probe.ExpectMsg<Pong>(timeout: TimeSpan.FromMilliseconds(300)); break; }
            catch (Exception e) when (e is not OutOfMemoryException) { Assert.True(DateTime.UtcNow < deadline, "no reply after the peer restarted: " + e.Message); }
        }
        var after = a.CreateTestProbe(); // (late replies of the retries go to the first probe)
        for (int i = 0; i < 20; i++) echo.Tell(new Ping(1000 + i), after.Ref);
        for (int i = 0; i < 20; i++) Assert.Equal(1000 + i, after.ExpectMsg<Pong>(timeout: Timeout).N);
    }

    [Fact]
    public void Beyond_the_outbound_queue_bound_messages_go_to_dead_letters_with_a_log_line()
    {
        using var a = new RemoteNode("a", new RemoteSettings { JobId = "job-1", OutboundQueueCapacity = 5 });
        int port;
        using (var gone = new RemoteNode("b")) port = gone.Sys.Address.Port!.Value;
        var deadLetters = a.CreateTestProbe();
        a.Sys.EventStream.Subscribe(deadLetters.Ref, typeof(DeadLetter));
        var target = a.Sys.ActorSelection($"bncluster://b@127.0.0.1:{port}/user/echo");
        for (var i = 0; i < 20; i++) target.Tell(new Ping(i));
        var dropped = deadLetters.ReceiveN(10, Timeout);
        Assert.All(dropped, d => Assert.IsType<Ping>(((DeadLetter)d).Message));
        a.AwaitLog("is full");
    }
}
