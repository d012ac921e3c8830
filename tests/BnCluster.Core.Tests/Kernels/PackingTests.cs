using System.Runtime.Intrinsics;
using BnCluster.Core.Kernels;
using Xunit;

namespace BnCluster.Core.Tests.Kernels;

public sealed unsafe class PackingTests
{
    /// <summary>
    /// The depth steps a sparse product runs: those of a packed panel whose MR values are not all zero, ascending, for
    /// the 8-row panels of the AVX-512 kernel and the 4-row ones of AVX2 (8 steps at a time in vectors, then a tail), and
    /// the scalar loop of any other height (6). −0 is zero, NaN is not, and a single nonzero value keeps its step.
    /// </summary>
    [Theory]
    [InlineData(8, 0)]
    [InlineData(8, 7)]
    [InlineData(8, 8)]
    [InlineData(8, 259)]
    [InlineData(4, 0)]
    [InlineData(4, 7)]
    [InlineData(4, 8)]
    [InlineData(4, 259)]
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

    /// <summary>
    /// The three step lists of an 8-row panel for the AVX-512 halves kernel, against a scalar reference: steps where
    /// both halves (rows 0–3, rows 4–7) have a value that is not zero, where only the first does, where only the second
    /// does; all-zero steps in none. −0 is zero, NaN is not. The lists stay inside their stride (here larger than kc, with
    /// a guard after the last), 8 steps at a time and in the tail.
    /// </summary>
    [Theory]
    [InlineData(0)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(64)]
    [InlineData(259)]
    public void NonZeroHalfStepsSortsTheStepsByTheHalvesThatAreNotZero(int kc)
    {
        var rng = new Random(31 + kc);
        var panel = new float[kc * 8];
        for (int p = 0; p < kc; p++)
        {
            int kind = rng.Next(6); // 0: all zero; 1, 2: one half zero; 3: one value nonzero; 4: all nonzero; 5: −0s and a NaN
            for (int r = 0; r < 8; r++)
                panel[p * 8 + r] = kind switch
                {
                    0 => 0f,
                    1 => r < 4 ? 0f : 2f,
                    2 => r < 4 ? -1f : 0f,
                    3 => r == p % 8 ? 1.5f : 0f,
                    4 => (float)rng.NextDouble() + 0.1f,
                    _ => r == p % 8 ? float.NaN : -0f,
                };
        }
        bool NotZero(int p, int half) => Enumerable.Range(half * 4, 4).Any(r => !(panel[p * 8 + r] == 0f));
        var steps = Enumerable.Range(0, kc);
        int[][] expected =
        [
            steps.Where(p => NotZero(p, 0) && NotZero(p, 1)).ToArray(),
            steps.Where(p => NotZero(p, 0) && !NotZero(p, 1)).ToArray(),
            steps.Where(p => !NotZero(p, 0) && NotZero(p, 1)).ToArray(),
        ];
        int stride = kc + 3;
        var lists = new int[3 * stride + 1];
        const int guard = -12345;
        lists[^1] = guard;
        var counts = new int[3];
        fixed (float* pp = panel) fixed (int* ps = lists) fixed (int* pc = counts)
            Packing.NonZeroHalfSteps(pp, kc, ps, stride, pc);
        for (int list = 0; list < 3; list++)
            Assert.Equal(expected[list], lists.Skip(list * stride).Take(counts[list]).ToArray());
        Assert.Equal(guard, lists[^1]);
    }

    /// <summary>The 4×8 register transpose behind the AVX2 path's A packing and transposed stores: column j of the block
    /// lands in half j % 2 of output vector j / 2, its 4 rows in order, with a source row stride wider than 8.</summary>
    [Fact]
    public void Transpose4x8GivesTheColumnsInPairs()
    {
        const int stride = 11;
        var src = Enumerable.Range(0, 4 * stride).Select(v => (float)v).ToArray();
        var columns = new float[32];
        fixed (float* ps = src) fixed (float* pc = columns)
        {
            Packing.Transpose4x8(ps, stride, out var c01, out var c23, out var c45, out var c67);
            c01.Store(pc);
            c23.Store(pc + 8);
            c45.Store(pc + 16);
            c67.Store(pc + 24);
        }
        for (int j = 0; j < 8; j++)
            for (int i = 0; i < 4; i++)
                Assert.Equal(src[i * stride + j], columns[j * 4 + i]);
    }
}
