using BnCluster.TestKit;
using Xunit;

namespace BnCluster.Actors.Tests;

public sealed class MoreRuntimeTests : IDisposable
{
    private readonly ActorTestKit _kit = new("more", new ActorSystemOptions { Logger = Serilog.Core.Logger.None });

    public void Dispose() => _kit.Dispose();

    private sealed class Slow : ReceiveActor
    {
        public Slow(TaskCompletionSource gate, IActorRef? created = null)
        {
            created?.Tell("created");
            ReceiveAsync<string>(async s =>
            {
                await gate.Task;
                if (s == "fail") throw new InvalidOperationException("async failure");
                Sender.Tell("done " + s);
            });
        }
    }

    [Fact]
    public async Task Ask_queued_behind_a_stop_fails_promptly_via_dead_letters()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var actor = _kit.Sys.ActorOf(Props.Create(() => new Slow(gate)));
        actor.Tell("first");           // occupies the actor
        var queued = actor.Ask<string>("second", TimeSpan.FromSeconds(30));
        actor.Tell(PoisonPill.Instance);
        _kit.Sys.Stop(actor);          // system message: runs right after "first" completes
        gate.SetResult();
        var error = await Assert.ThrowsAsync<AskTimeoutException>(() => queued.WaitAsync(TimeSpan.FromSeconds(3)));
        Assert.Contains("terminated", error.Message);
    }

    [Fact]
    public async Task Ask_honours_cancellation()
    {
        var gate = new TaskCompletionSource();
        var actor = _kit.Sys.ActorOf(Props.Create(() => new Slow(gate)));
        using var cts = new CancellationTokenSource();
        var pending = actor.Ask<string>("x", TimeSpan.FromSeconds(30), cts.Token);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending.WaitAsync(TimeSpan.FromSeconds(3)));
        gate.SetResult();
    }

    [Fact]
    public void Exception_in_ReceiveAsync_goes_to_supervision()
    {
        var gate = new TaskCompletionSource();
        gate.SetResult();
        var probe = _kit.CreateTestProbe();
        var actor = _kit.Sys.ActorOf(Props.Create(() => new Slow(gate, probe)));
        probe.ExpectMsg("created");
        actor.Tell("fail", probe);
        actor.Tell("after", probe); // default strategy restarts: the next message is processed by the new instance
        probe.ExpectMsg("created");
        probe.ExpectMsg("done after");
        probe.ExpectNoMsg(TimeSpan.FromMilliseconds(30));
    }

    [Fact]
    public async Task Within_async_bounds_expectations()
    {
        var probe = _kit.CreateTestProbe();
        probe.Tell(1);
        await _kit.Within(TimeSpan.FromSeconds(1), async () =>
        {
            await Task.Yield();
            probe.ExpectMsg(1);
        });
        var started = DateTime.UtcNow;
        Assert.Throws<TestKitAssertionException>(() =>
            _kit.Within(TimeSpan.FromMilliseconds(50), () => probe.ExpectMsg<int>(timeout: TimeSpan.FromSeconds(5))));
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(2), "Within must cut the inner timeout short");
    }

    [Fact]
    public async Task ActorOf_after_terminate_is_refused_and_tells_become_dead_letters()
    {
        var kit = new ActorTestKit("after");
        try
        {
            var before = kit.Sys.ActorOf(Props.Create(() => new Slow(new TaskCompletionSource())));
            await kit.Sys.Terminate();
            var dead = await Assert.ThrowsAsync<AskTimeoutException>(() => before.Ask<string>("x", TimeSpan.FromSeconds(5)).WaitAsync(TimeSpan.FromSeconds(2)));
            Assert.Contains("terminated", dead.Message);
            Assert.Throws<InvalidOperationException>(() => kit.Sys.ActorOf(Props.Create(() => new Slow(new TaskCompletionSource()))));
            var error = await Assert.ThrowsAsync<AskTimeoutException>(() => ActorRefs.Nobody.Ask<int>("x", TimeSpan.FromSeconds(5)));
            Assert.Contains("Nobody", error.Message);
        }
        finally
        {
            kit.Dispose();
        }
    }

    [Fact]
    public void Default_timeout_is_configurable()
    {
        _kit.DefaultTimeout = TimeSpan.FromMilliseconds(40);
        var probe = _kit.CreateTestProbe();
        var started = DateTime.UtcNow;
        var error = Assert.Throws<TestKitAssertionException>(() => probe.ExpectMsg<int>());
        Assert.Contains("40 ms", error.Message);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(2));
    }

    [Fact]
    public async Task Terminate_does_not_hang_on_an_actor_stuck_in_ReceiveAsync()
    {
        var kit = new ActorTestKit("stuck", new ActorSystemOptions { Logger = Serilog.Core.Logger.None, ShutdownTimeout = TimeSpan.FromMilliseconds(200) });
        try
        {
            var stuck = kit.Sys.ActorOf(Props.Create(() => new Slow(new TaskCompletionSource())));
            stuck.Tell("forever");
            var pending = stuck.Ask<string>("queued", TimeSpan.FromSeconds(30));
            await kit.Sys.Terminate().WaitAsync(TimeSpan.FromSeconds(3));
            Assert.True(kit.Sys.WhenTerminated.IsCompleted);
            await Assert.ThrowsAsync<AskTimeoutException>(() => pending.WaitAsync(TimeSpan.FromSeconds(1)));
        }
        finally
        {
            kit.Dispose();
        }
    }
}
