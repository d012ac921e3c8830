using System.Reflection.Emit;
using BnCluster.Node.Backends;

namespace BnCluster.Node.Tests;

/// <summary>The 1-process bench's warm-up runs on until the JIT has compiled nothing for a while, and no longer than its cap.</summary>
public sealed class BenchWarmupTests
{
    [Fact]
    public async Task The_warm_up_ends_once_the_jit_is_quiet()
    {
        await BenchBackend.SettleJitAsync(() => Task.Delay(1)); // (compiles what the loop itself needs)
        int added = await BenchBackend.SettleJitAsync(() => Task.Delay(5));
        Assert.InRange(added, 1, BenchBackend.MaxSettleSteps - 1);
    }

    [Fact]
    public async Task A_jit_that_never_settles_stops_the_warm_up_at_its_cap()
    {
        // Each step compiles a new method: the JIT is never quiet.
        int added = await BenchBackend.SettleJitAsync(() =>
        {
            var method = new DynamicMethod("step", typeof(int), Type.EmptyTypes);
            var il = method.GetILGenerator();
            il.Emit(OpCodes.Ldc_I4_1);
            il.Emit(OpCodes.Ret);
            ((Func<int>)method.CreateDelegate(typeof(Func<int>)))();
            return Task.CompletedTask;
        });
        Assert.Equal(BenchBackend.MaxSettleSteps, added);
    }
}
