using System.Reflection.Emit;
using BnCluster.Node.Backends;

namespace BnCluster.Node.Tests;

/// <summary>The 1-process bench's warm-up runs on until the JIT has compiled nothing for a while, and no longer than its cap.</summary>
public sealed class BenchWarmupTests
{
    [Fact]
    public async Task The_warm_up_ends_once_the_jit_is_quiet()
    {
        await BenchBackend.SettleJitAsync(Work); // (compiles what the loop and the step need)
        int added = await BenchBackend.SettleJitAsync(Work);
        Assert.InRange(added, 1, BenchBackend.MaxSettleSteps - 1);
    }

    // A step of about a millisecond of arithmetic that compiles nothing new: the 0.25 s of quiet take a few hundred.
    private static double _sink;

    private static Task Work()
    {
        double sum = 0;
        for (int i = 1; i <= 1_000_000; i++) sum += 1.0 / i;
        _sink += sum;
        return Task.CompletedTask;
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
