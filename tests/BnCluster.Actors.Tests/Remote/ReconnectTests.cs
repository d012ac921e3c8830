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
