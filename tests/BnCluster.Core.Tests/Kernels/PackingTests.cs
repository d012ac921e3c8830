using BnCluster.Core.Kernels;
using Xunit;

namespace BnCluster.Core.Tests.Kernels;

public sealed unsafe class PackingTests
{
    /// <summary>
    /// The depth steps a sparse product runs: those of a packed panel whose MR values are not all zero, ascending, for
    /// the 8-row panels of the AVX-512 kernel (8 steps at a time there, then a tail) and the 6-row ones of AVX2. −0 is
    /// zero, NaN is not, and a single nonzero value keeps its step.
    /// </summary>
    [Theory]
    [InlineData(8, 0)]
    [InlineData(8, 7)]
    [InlineData(8, 8)]
    [InlineData(8, 259)]
    [InlineData(6, 131)]
    public void NonZeroStepsListsTheStepsThatAreNotAllZero(int mr, int kc)
    {
        var rng = new Random(kc + mr);
        var panel = new float[kc * mr];
        for (int p = 0; p < kc; p++)
        {
            int kind = rng.Next(5); // 0, 1: all zero; 2: one value nonzero; 3: all nonzero; 4: −0s and a NaN or zeros
            for (int r = 0; r < mr; r++)
                panel[p * mr + r] = kind switch
                {
                    0 or 1 => 0f,
                    2 => r == p % mr ? 1.5f : 0f,
                    3 => (float)rng.NextDouble() + 0.1f,
                    _ => p % 2 == 0 ? -0f : r == 0 ? float.NaN : 0f,
                };
        }
        var expected = Enumerable.Range(0, kc).Where(p => Enumerable.Range(0, mr).Any(r => !(panel[p * mr + r] == 0f))).ToArray();
        var steps = new int[Math.Max(1, kc)];
        int count;
        fixed (float* pp = panel) fixed (int* ps = steps) count = Packing.NonZeroSteps(pp, kc, mr, ps);
        Assert.Equal(expected, steps.Take(count).ToArray());
    }
}
