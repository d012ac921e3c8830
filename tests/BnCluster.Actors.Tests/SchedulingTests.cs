using BnCluster.TestKit;
using Xunit;

namespace BnCluster.Actors.Tests;

/// <summary>Checks the idle/scheduled hand-off of the mailbox loop: no message is lost or stuck.</summary>
public sealed class SchedulingTests : IDisposable
{
    private readonly ActorTestKit _kit = new("scheduling", new ActorSystemOptions { Logger = Serilog.Core.Logger.None });

    public void Dispose() => _kit.Dispose();

    private sealed class Counter : ReceiveActor
    {
        public Counter(int expected, IActorRef report)
        {
            var count = 0;
            Receive<int>(_ =>
            {
                if (++count == expected) report.Tell(Self.Path.Name);
            });
        }
    }

    [Fact]
    public void Many_actors_fed_from_many_threads_receive_every_message()
    {
        const int actors = 50, producers = 4, perProducer = 500;
        var probe = _kit.CreateTestProbe();
        var refs = Enumerable.Range(0, actors)
            .Select(i => _kit.Sys.ActorOf(Props.Create(() => new Counter(producers * perProducer, probe)), "c" + i))
            .ToArray();
        Parallel.For(0, producers, _ =>
        {
            for (var m = 0; m < perProducer; m++)
                foreach (var r in refs) r.Tell(m);
        });
        var done = probe.ReceiveN(actors, TimeSpan.FromSeconds(10)).Cast<string>().OrderBy(n => n, StringComparer.Ordinal);
        Assert.Equal(Enumerable.Range(0, actors).Select(i => "c" + i).OrderBy(n => n, StringComparer.Ordinal), done);
    }

    private sealed record Ball(int Remaining);

    private sealed class Player : ReceiveActor
    {
        public Player(IActorRef report)
        {
            Receive<Ball>(b =>
            {
                if (b.Remaining == 0) report.Tell("finished");
                else Sender.Tell(new Ball(b.Remaining - 1));
            });
        }
    }

    [Fact]
    public void Ping_pong_between_two_actors_never_stalls()
    {
        var probe = _kit.CreateTestProbe();
        var a = _kit.Sys.ActorOf(Props.Create(() => new Player(probe)));
        var b = _kit.Sys.ActorOf(Props.Create(() => new Player(probe)));
        a.Tell(new Ball(20_000), b);
        probe.ExpectMsg("finished", TimeSpan.FromSeconds(10));
    }
}
