using System.Collections.Concurrent;
using BnCluster.TestKit;
using Serilog;
using Serilog.Core;
using Serilog.Events;
using Xunit;

namespace BnCluster.Actors.Tests;

public sealed class SupervisionLoggingTests
{
    private sealed class CapturingSink : ILogEventSink
    {
        public ConcurrentQueue<LogEvent> Events { get; } = new();
        public void Emit(LogEvent logEvent) => Events.Enqueue(logEvent);
    }

    private sealed record Crash;

    private sealed class Crasher : ReceiveActor
    {
        public Crasher(IActorRef report)
        {
            Receive<Crash>(_ => throw new InvalidDataException("bad row 7"));
            ReceiveAny(m => report.Tell(m));
            report.Tell("started " + Self.Path.Name);
        }
    }

    private sealed class Middle : ReceiveActor
    {
        public Middle(IActorRef report)
        {
            var child = Context.ActorOf(Props.Create(() => new Crasher(report)), "leaf");
            ReceiveAny(m => child.Forward(m, Context));
            report.Tell("started middle");
        }

        protected internal override SupervisorStrategy SupervisorStrategy() =>
            new OneForOneStrategy(_ => Directive.Escalate);
    }

    [Fact]
    public void Failure_is_logged_with_path_and_message_type_and_escalation_restarts_the_parent()
    {
        var sink = new CapturingSink();
        var logger = new LoggerConfiguration().MinimumLevel.Debug().WriteTo.Sink(sink).CreateLogger();
        using var kit = new ActorTestKit("logged", new ActorSystemOptions { Logger = logger });
        var report = kit.CreateTestProbe();
        var middle = kit.Sys.ActorOf(Props.Create(() => new Middle(report)), "middle");
        report.ExpectMsg("started middle");
        report.ExpectMsg("started leaf");

        middle.Tell(new Crash());
        // Escalated to /user, whose default strategy restarts "middle" (which re-creates "leaf").
        report.ExpectMsg("started middle");
        report.ExpectMsg("started leaf");
        middle.Tell("still alive");
        report.ExpectMsg("still alive");

        var failure = sink.Events.First(e => e.Level == LogEventLevel.Error);
        Assert.Equal("\"/user/middle/leaf\"", failure.Properties["Path"].ToString());
        Assert.Equal("\"Crash\"", failure.Properties["MessageType"].ToString());
        Assert.IsType<InvalidDataException>(failure.Exception);
    }

    [Fact]
    public void Failing_constructor_stops_the_actor()
    {
        using var kit = new ActorTestKit("initfail", new ActorSystemOptions { Logger = Serilog.Core.Logger.None });
        var probe = kit.CreateTestProbe();
        var actor = kit.Sys.ActorOf(Props.Create(() => new ThrowingConstructor()));
        probe.Watch(actor);
        probe.ExpectTerminated(actor);
    }

    private sealed class ThrowingConstructor : ReceiveActor
    {
        public ThrowingConstructor() => throw new InvalidOperationException("cannot start");
    }

    [Fact]
    public void Unhandled_messages_are_logged_at_debug()
    {
        var sink = new CapturingSink();
        var logger = new LoggerConfiguration().MinimumLevel.Debug().WriteTo.Sink(sink).CreateLogger();
        using var kit = new ActorTestKit("unhandled", new ActorSystemOptions { Logger = logger });
        var listener = kit.CreateTestProbe();
        kit.Sys.EventStream.Subscribe(listener, typeof(UnhandledMessage));
        var actor = kit.Sys.ActorOf(Props.Create(() => new Crasher(ActorRefs.Nobody)), "quiet");
        actor.Tell(PoisonPill.Instance); // handled by the runtime, never unhandled
        var other = kit.Sys.ActorOf(Props.Create(() => new Middle(ActorRefs.Nobody)));
        other.Tell(new Crash()); // forwarded to leaf, escalated: no unhandled
        var silent = kit.Sys.ActorOf(Props.Create<NoHandlers>());
        silent.Tell(3.5);
        Assert.Equal(3.5, listener.ExpectMsg<UnhandledMessage>().Message);
        kit.AwaitCondition(() => sink.Events.Any(e => e.Level == LogEventLevel.Debug && e.MessageTemplate.Text.StartsWith("Unhandled", StringComparison.Ordinal)));
    }

    private sealed class NoHandlers : ReceiveActor
    {
    }
}
