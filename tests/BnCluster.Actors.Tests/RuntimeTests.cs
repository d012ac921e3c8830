using System.Collections.Concurrent;
using BnCluster.Actors;
using BnCluster.TestKit;
using Xunit;

namespace BnCluster.Actors.Tests;

public sealed class RuntimeTests : IDisposable
{
    private readonly ActorTestKit _kit = new("runtime");
    private ActorSystem Sys => _kit.Sys;

    public void Dispose() => _kit.Dispose();

    private sealed record Ping(int Value);
    private sealed record Pong(int Value);
    private sealed record Boom(string Why);
    private sealed record GetCount;
    private sealed record Reply(object Value);

    private sealed class EchoActor : ReceiveActor
    {
        public EchoActor()
        {
            Receive<Ping>(p => Sender.Tell(new Pong(p.Value)));
            Receive<string>(s => s.StartsWith("fwd:", StringComparison.Ordinal), s => Sender.Tell(s[4..]));
        }
    }

    [Fact]
    public void Tell_reaches_actor_and_reply_goes_to_sender()
    {
        var echo = Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
        var probe = _kit.CreateTestProbe();
        echo.Tell(new Ping(7), probe);
        Assert.Equal(7, probe.ExpectMsg<Pong>().Value);
        Assert.Equal(echo, probe.Sender);
        Assert.Equal("/user/echo", echo.Path.ToStringWithoutAddress());
    }

    [Fact]
    public async Task Ask_round_trip_and_typed_reply()
    {
        var echo = Sys.ActorOf(Props.Create(() => new EchoActor()));
        var pong = await echo.Ask<Pong>(new Ping(3), TimeSpan.FromSeconds(3));
        Assert.Equal(3, pong.Value);
        await Assert.ThrowsAsync<InvalidCastException>(() => echo.Ask<Ping>(new Ping(1), TimeSpan.FromSeconds(3)));
    }

    [Fact]
    public async Task Ask_timeout_names_target_message_type_and_timeout()
    {
        var echo = Sys.ActorOf(Props.Create(() => new EchoActor()), "silent");
        var error = await Assert.ThrowsAsync<AskTimeoutException>(() => echo.Ask<Pong>("no reply", TimeSpan.FromMilliseconds(100)));
        Assert.Contains("/user/silent", error.Message);
        Assert.Contains("String", error.Message);
        Assert.Contains("100 ms", error.Message);
    }

    [Fact]
    public async Task Ask_on_a_stopped_actor_fails_promptly()
    {
        var echo = Sys.ActorOf(Props.Create(() => new EchoActor()), "gone");
        var probe = _kit.CreateTestProbe();
        probe.Watch(echo);
        Sys.Stop(echo);
        probe.ExpectTerminated(echo);
        var started = DateTime.UtcNow;
        var error = await Assert.ThrowsAsync<AskTimeoutException>(() => echo.Ask<Pong>(new Ping(1), TimeSpan.FromSeconds(10)));
        Assert.Contains("terminated", error.Message);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(2));
    }

    [Fact]
    public async Task Status_failure_reply_faults_the_ask()
    {
        var actor = Sys.ActorOf(Props.Create(() => new FailingReplier()));
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => actor.Ask<int>("x", TimeSpan.FromSeconds(3)));
        Assert.Equal("nope", error.Message);
    }

    private sealed class FailingReplier : ReceiveActor
    {
        public FailingReplier() => ReceiveAny(_ => Sender.Tell(new Status.Failure(new InvalidOperationException("nope"))));
    }

    private sealed class Recorder : ReceiveActor
    {
        public Recorder(IActorRef target) => Receive<int>(i => target.Tell(i));
    }

    [Fact]
    public void Messages_from_one_sender_arrive_in_order()
    {
        var probe = _kit.CreateTestProbe();
        var recorder = Sys.ActorOf(Props.Create(() => new Recorder(probe)));
        for (var i = 0; i < 2000; i++) recorder.Tell(i);
        var received = probe.ReceiveN(2000);
        Assert.Equal(Enumerable.Range(0, 2000).Cast<object>(), received);
    }

    private sealed class ConcurrencyChecker : ReceiveActor
    {
        private int _inside;
        private int _count;

        public ConcurrencyChecker(IActorRef report, int total, StrongBox<int> maxInside)
        {
            Receive<int>(_ =>
            {
                var now = Interlocked.Increment(ref _inside);
                if (now > maxInside.Value) maxInside.Value = now;
                Thread.SpinWait(200);
                Interlocked.Decrement(ref _inside);
                if (++_count == total) report.Tell("done");
            });
        }
    }

    private sealed class StrongBox<T>(T value) { public T Value = value; }

    [Fact]
    public void Concurrent_tells_never_run_a_handler_concurrently()
    {
        var probe = _kit.CreateTestProbe();
        var maxInside = new StrongBox<int>(0);
        var actor = Sys.ActorOf(Props.Create(() => new ConcurrencyChecker(probe, 4000, maxInside)));
        Parallel.For(0, 4, _ =>
        {
            for (var i = 0; i < 1000; i++) actor.Tell(i);
        });
        probe.ExpectMsg<string>(s => s == "done", TimeSpan.FromSeconds(10));
        Assert.Equal(1, maxInside.Value);
    }

    private sealed class AsyncActor : ReceiveActor
    {
        public AsyncActor(TaskCompletionSource gate, IActorRef report)
        {
            ReceiveAsync<string>(async s =>
            {
                report.Tell("started " + s);
                await gate.Task;
                report.Tell("finished " + s);
            });
            Receive<int>(i => report.Tell(i));
        }
    }

    [Fact]
    public void ReceiveAsync_blocks_the_mailbox_until_the_task_completes()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var probe = _kit.CreateTestProbe();
        var actor = Sys.ActorOf(Props.Create(() => new AsyncActor(gate, probe)));
        actor.Tell("a");
        actor.Tell(42);
        probe.ExpectMsg("started a");
        probe.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
        gate.SetResult();
        probe.ExpectMsg("finished a");
        probe.ExpectMsg(42);
    }

    private sealed class Parent : ReceiveActor
    {
        public Parent(IActorRef report)
        {
            Receive<string>(name => Sender.Tell(Context.ActorOf(Props.Create(() => new EchoActor()), name)));
            Receive<GetCount>(_ => Sender.Tell(Context.Children.Count));
            Receive<Boom>(b => report.Tell(b));
        }
    }

    [Fact]
    public async Task Children_get_nested_paths_and_unique_names()
    {
        var parent = Sys.ActorOf(Props.Create(() => new Parent(ActorRefs.Nobody)), "parent");
        var child = await parent.Ask<IActorRef>("kid", TimeSpan.FromSeconds(3));
        Assert.Equal("/user/parent/kid", child.Path.ToStringWithoutAddress());
        Assert.Equal("bncluster://runtime/user/parent/kid", child.Path.ToString());
        Assert.Equal(1, await parent.Ask<int>(new GetCount(), TimeSpan.FromSeconds(3)));
        // The duplicate name fails inside the parent: the handler throws and the parent is restarted,
        // so the Ask gets no answer; check directly on the system level instead.
        Assert.Throws<InvalidActorNameException>(() => Sys.ActorOf(Props.Create(() => new EchoActor()), "parent"));
        var badName = Assert.Throws<InvalidActorNameException>(() => Sys.ActorOf(Props.Create(() => new EchoActor()), "a/b"));
        Assert.Contains("'/'", badName.Message);
        Assert.Equal(new Pong(5), await child.Ask<Pong>(new Ping(5), TimeSpan.FromSeconds(3)));
    }

    private sealed class Fragile : ReceiveActor
    {
        public Fragile(IActorRef report)
        {
            Receive<Boom>(b => throw new InvalidOperationException(b.Why));
            Receive<Ping>(p => Sender.Tell(new Pong(p.Value)));
            ReceiveAny(_ => { });
            report.Tell("created");
        }

        protected internal override void PreRestart(Exception reason, object? message)
        {
            Context.System.EventStream.Publish(new Reply("prerestart:" + reason.Message));
            base.PreRestart(reason, message);
        }

        protected internal override void PostStop() => Context.System.EventStream.Publish(new Reply("poststop"));
    }

    private sealed class Supervisor : ReceiveActor
    {
        private readonly Directive _directive;

        public Supervisor(Directive directive, IActorRef report)
        {
            _directive = directive;
            Receive<string>(name => Sender.Tell(Context.ActorOf(Props.Create(() => new Fragile(report)), name)));
        }

        protected internal override SupervisorStrategy SupervisorStrategy() =>
            new OneForOneStrategy(2, TimeSpan.FromMinutes(1), _ => _directive);
    }

    [Fact]
    public async Task Restart_runs_PreRestart_and_PostStop_and_recreates_until_the_retry_budget_is_spent()
    {
        var events = _kit.CreateTestProbe();
        Sys.EventStream.Subscribe(events, typeof(Reply));
        var report = _kit.CreateTestProbe();
        var supervisor = Sys.ActorOf(Props.Create(() => new Supervisor(Directive.Restart, report)));
        var child = await supervisor.Ask<IActorRef>("fragile", TimeSpan.FromSeconds(3));
        report.ExpectMsg("created");
        events.Watch(child);

        child.Tell(new Boom("one"));
        Assert.Equal(new Reply("prerestart:one"), events.ExpectMsg<Reply>());
        Assert.Equal(new Reply("poststop"), events.ExpectMsg<Reply>());
        report.ExpectMsg("created");
        Assert.Equal(new Pong(1), await child.Ask<Pong>(new Ping(1), TimeSpan.FromSeconds(3)));

        child.Tell(new Boom("two"));
        events.ExpectMsg<Reply>(r => r.Value.Equals("prerestart:two"));
        events.ExpectMsg<Reply>(r => r.Value.Equals("poststop"));
        report.ExpectMsg("created");

        // Third failure within the window exceeds maxNrOfRetries = 2: stopped, not restarted.
        child.Tell(new Boom("three"));
        events.ExpectMsg<Reply>(r => r.Value.Equals("poststop"));
        events.ExpectTerminated(child);
        report.ExpectNoMsg(TimeSpan.FromMilliseconds(50));
    }

    [Fact]
    public async Task Stop_directive_stops_and_Resume_keeps_state()
    {
        var report = _kit.CreateTestProbe();
        var stopper = Sys.ActorOf(Props.Create(() => new Supervisor(Directive.Stop, report)));
        var child = await stopper.Ask<IActorRef>("a", TimeSpan.FromSeconds(3));
        report.ExpectMsg("created");
        report.Watch(child);
        child.Tell(new Boom("x"));
        report.ExpectTerminated(child);

        var resumer = Sys.ActorOf(Props.Create(() => new Supervisor(Directive.Resume, report)));
        var survivor = await resumer.Ask<IActorRef>("b", TimeSpan.FromSeconds(3));
        report.ExpectMsg("created");
        survivor.Tell(new Boom("y"));
        Assert.Equal(new Pong(2), await survivor.Ask<Pong>(new Ping(2), TimeSpan.FromSeconds(3)));
        report.ExpectNoMsg(TimeSpan.FromMilliseconds(50)); // not re-created
    }

    [Fact]
    public void Watching_an_already_dead_actor_still_yields_Terminated()
    {
        var echo = Sys.ActorOf(Props.Create(() => new EchoActor()));
        var first = _kit.CreateTestProbe();
        first.Watch(echo);
        echo.Tell(PoisonPill.Instance);
        first.ExpectTerminated(echo);

        var late = _kit.CreateTestProbe();
        late.Watch(echo);
        late.ExpectTerminated(echo);
    }

    [Fact]
    public void Unwatch_suppresses_Terminated()
    {
        var echo = Sys.ActorOf(Props.Create(() => new EchoActor()));
        var probe = _kit.CreateTestProbe();
        probe.Watch(echo);
        probe.Unwatch(echo);
        Sys.Stop(echo);
        probe.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
    }

    private sealed record StartSingle(TimeSpan Delay);
    private sealed record StartPeriodic(TimeSpan Interval);
    private sealed record CancelTimer;

    private sealed class TimerActor : ReceiveActor
    {
        public TimerActor(IActorRef report)
        {
            Receive<StartSingle>(s => Timers.StartSingleTimer("single", "single-fired", s.Delay));
            Receive<StartPeriodic>(p => Timers.StartPeriodicTimer("tick", "tick", p.Interval));
            Receive<CancelTimer>(_ =>
            {
                Timers.Cancel("tick");
                report.Tell("cancelled");
            });
            Receive<string>(s => report.Tell(s));
        }
    }

    [Fact]
    public void Single_and_periodic_timers_fire_and_cancel()
    {
        var probe = _kit.CreateTestProbe();
        var actor = Sys.ActorOf(Props.Create(() => new TimerActor(probe)));
        actor.Tell(new StartSingle(TimeSpan.FromMilliseconds(20)));
        probe.ExpectMsg("single-fired");
        probe.ExpectNoMsg(TimeSpan.FromMilliseconds(60)); // single: once only

        actor.Tell(new StartPeriodic(TimeSpan.FromMilliseconds(15)));
        probe.ExpectMsg("tick");
        probe.ExpectMsg("tick");
        probe.ExpectMsg("tick");
        actor.Tell(new CancelTimer());
        probe.FishForMessage<string>(s => s == "cancelled");
        probe.ExpectNoMsg(TimeSpan.FromMilliseconds(80)); // a tick already queued before Cancel is dropped too
    }

    [Fact]
    public void Timers_are_cancelled_when_the_actor_stops()
    {
        var probe = _kit.CreateTestProbe();
        var deadLetters = _kit.CreateTestProbe();
        Sys.EventStream.Subscribe(deadLetters, typeof(DeadLetter));
        var actor = Sys.ActorOf(Props.Create(() => new TimerActor(probe)));
        actor.Tell(new StartPeriodic(TimeSpan.FromMilliseconds(10)));
        probe.ExpectMsg("tick");
        probe.Watch(actor);
        Sys.Stop(actor);
        probe.FishForMessage<Terminated>(_ => true);
        probe.ExpectNoMsg(TimeSpan.FromMilliseconds(60));
        deadLetters.ExpectNoMsg(TimeSpan.FromMilliseconds(10));
    }

    private sealed class LifecycleActor : ReceiveActor
    {
        private readonly ConcurrentQueue<string> _log;

        public LifecycleActor(ConcurrentQueue<string> log, int depth)
        {
            _log = log;
            if (depth > 0) Context.ActorOf(Props.Create(() => new LifecycleActor(log, depth - 1)), "level" + (depth - 1));
            ReceiveAsync<string>(_ => new TaskCompletionSource().Task); // never answers: for pending-ask test
        }

        protected internal override void PostStop() => _log.Enqueue(Self.Path.ToStringWithoutAddress());
    }

    [Fact]
    public async Task Terminate_stops_children_before_parents_and_fails_pending_asks()
    {
        var log = new ConcurrentQueue<string>();
        var kit = new ActorTestKit("shutdown");
        try
        {
            var top = kit.Sys.ActorOf(Props.Create(() => new LifecycleActor(log, 2)), "top");
            var echo = kit.Sys.ActorOf(Props.Create(() => new EchoActor()), "echo");
            var pending = echo.Ask<Pong>("never answered", TimeSpan.FromSeconds(30));
            await kit.Sys.Terminate().WaitAsync(TimeSpan.FromSeconds(5));
            Assert.True(kit.Sys.WhenTerminated.IsCompleted);
            var error = await Assert.ThrowsAsync<AskTimeoutException>(() => pending.WaitAsync(TimeSpan.FromSeconds(2)));
            Assert.Contains("terminated", error.Message);
            Assert.Equal(["/user/top/level1/level0", "/user/top/level1", "/user/top"], log.ToArray());
            Assert.Equal(top.Path, top.Path);
        }
        finally
        {
            kit.Dispose();
        }
    }

    [Fact]
    public void Messages_to_dead_actors_become_DeadLetters_and_unhandled_are_published()
    {
        var listener = _kit.CreateTestProbe();
        Sys.EventStream.Subscribe(listener, typeof(DeadLetter));
        Sys.EventStream.Subscribe(listener, typeof(UnhandledMessage));
        var echo = Sys.ActorOf(Props.Create(() => new EchoActor()), "dl");
        echo.Tell(12345);
        var unhandled = listener.ExpectMsg<UnhandledMessage>();
        Assert.Equal(12345, unhandled.Message);
        Assert.Equal(echo, unhandled.Recipient);

        listener.Watch(echo);
        Sys.Stop(echo);
        listener.ExpectTerminated(echo);
        echo.Tell(new Ping(9), listener);
        var dead = listener.ExpectMsg<DeadLetter>();
        Assert.Equal(new Ping(9), dead.Message);
        Assert.Equal(echo, dead.Recipient);
        Assert.Equal(listener, dead.Sender);
    }

    private sealed class BecomeActor : ReceiveActor
    {
        public BecomeActor()
        {
            Receive<string>(s => s == "flip", _ => Become(() => Receive<string>(_ => Sender.Tell("flipped"))));
            Receive<string>(_ => Sender.Tell("normal"));
        }
    }

    [Fact]
    public async Task Become_replaces_handlers()
    {
        var actor = Sys.ActorOf(Props.Create(() => new BecomeActor()));
        Assert.Equal("normal", await actor.Ask<string>("x", TimeSpan.FromSeconds(3)));
        actor.Tell("flip");
        Assert.Equal("flipped", await actor.Ask<string>("x", TimeSpan.FromSeconds(3)));
    }

    [Fact]
    public void Constructing_an_actor_with_new_is_refused()
    {
        var error = Assert.Throws<InvalidOperationException>(() => new EchoActor());
        Assert.Contains("ActorOf", error.Message);
    }

    [Fact]
    public void TestKit_failures_throw_with_a_reason()
    {
        var probe = _kit.CreateTestProbe();
        var error = Assert.Throws<TestKitAssertionException>(() => probe.ExpectMsg<string>(timeout: TimeSpan.FromMilliseconds(30)));
        Assert.Contains("Timeout", error.Message);
        probe.Tell(5);
        Assert.Throws<TestKitAssertionException>(() => probe.ExpectMsg<string>());
        Assert.Throws<TestKitAssertionException>(() => _kit.Within(TimeSpan.FromMilliseconds(30), () => probe.ExpectMsg<string>()));
    }

    [Fact]
    public void Probe_reply_and_forward()
    {
        var a = _kit.CreateTestProbe("a");
        var b = _kit.CreateTestProbe("b");
        var c = _kit.CreateTestProbe("c");
        a.Tell("hello", b);
        a.ExpectMsg("hello");
        a.Reply("back");
        Assert.Equal("back", b.ExpectMsg<string>());
        Assert.Equal(a, b.Sender);
        a.Forward(c);
        c.ExpectMsg("hello");
        Assert.Equal(b, c.Sender);
    }
}
