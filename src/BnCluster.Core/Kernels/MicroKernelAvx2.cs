using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace BnCluster.Core.Kernels;

/// <summary>
/// AVX2+FMA micro-kernel: a 4×24 block of C in 12 ymm accumulators, plus 3 B vectors and 1 broadcast = all 16 ymm
/// registers. Against the classic 6×16 Haswell shape it makes the same 12 FMAs per depth step from 7 loads instead of 8
/// (3 B vectors + 4 broadcasts), and its 4-row A panels are zero together far more often than 6-row ones, which is what
/// a sparse product skips: on Fashion-MNIST batches 35% of the first layer's forward steps (6 rows: 32%), 37% of its
/// weight gradient's (30%) and 22% of the second layer's forward steps (17%). Four rows are also half of an 8×8
/// register transpose, so packing and the zero scan run in vectors.
/// </summary>
internal static unsafe class MicroKernelAvx2
{
    public const int MR = 4;
    public const int NR = 24;

    /// <summary>Same contract as <see cref="MicroKernelAvx512.Run"/> with a 4×24 tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int count, int* steps, float* a0p, float* b0p, float* c, int ldc, int rows, int cols, bool add, float* scratch)
    {
        Vector256<float> c00 = default, c01 = default, c02 = default;
        Vector256<float> c10 = default, c11 = default, c12 = default;
        Vector256<float> c20 = default, c21 = default, c22 = default;
        Vector256<float> c30 = default, c31 = default, c32 = default;
        // As in the AVX-512 kernel: a dense loop with pointer steps and a listed one, around one inlined body; both two
        // steps per iteration (the address arithmetic of a step, 5–7 instructions, was as many as its loads and
        // broadcasts: unrolled, the products ran 11–15% faster, 24 interleaved rounds in one process). No third loop:
        // with one more the JIT spilled the accumulators to the stack in all of them.
        if (steps is null)
        {
            float* a = a0p, b = b0p, aEnd = a0p + (long)(count & ~1) * MR;
            for (; a < aEnd; a += 2 * MR, b += 2 * NR)
            {
                Step(a, b, ref c00, ref c01, ref c02, ref c10, ref c11, ref c12, ref c20, ref c21, ref c22, ref c30, ref c31, ref c32);
                Step(a + MR, b + NR, ref c00, ref c01, ref c02, ref c10, ref c11, ref c12, ref c20, ref c21, ref c22, ref c30, ref c31, ref c32);
            }
            if ((count & 1) != 0)
                Step(a, b, ref c00, ref c01, ref c02, ref c10, ref c11, ref c12, ref c20, ref c21, ref c22, ref c30, ref c31, ref c32);
        }
        else
        {
            int* s = steps, sEnd = steps + (count & ~1);
            for (; s < sEnd; s += 2)
            {
                long p = s[0], q = s[1];
                Step(a0p + p * MR, b0p + p * NR, ref c00, ref c01, ref c02, ref c10, ref c11, ref c12, ref c20, ref c21, ref c22, ref c30, ref c31, ref c32);
                Step(a0p + q * MR, b0p + q * NR, ref c00, ref c01, ref c02, ref c10, ref c11, ref c12, ref c20, ref c21, ref c22, ref c30, ref c31, ref c32);
            }
            if ((count & 1) != 0)
            {
                long p = s[0];
                Step(a0p + p * MR, b0p + p * NR, ref c00, ref c01, ref c02, ref c10, ref c11, ref c12, ref c20, ref c21, ref c22, ref c30, ref c31, ref c32);
            }
        }
        bool full = rows == MR && cols == NR;
        float* dst = full ? c : scratch;
        int ld = full ? ldc : NR;
        bool addHere = full && add;
        Store(c00, dst + 0 * ld + 0, addHere);
        Store(c01, dst + 0 * ld + 8, addHere);
        Store(c02, dst + 0 * ld + 16, addHere);
        Store(c10, dst + 1 * ld + 0, addHere);
        Store(c11, dst + 1 * ld + 8, addHere);
        Store(c12, dst + 1 * ld + 16, addHere);
        Store(c20, dst + 2 * ld + 0, addHere);
        Store(c21, dst + 2 * ld + 8, addHere);
        Store(c22, dst + 2 * ld + 16, addHere);
        Store(c30, dst + 3 * ld + 0, addHere);
        Store(c31, dst + 3 * ld + 8, addHere);
        Store(c32, dst + 3 * ld + 16, addHere);
        if (!full) CopyEdge(scratch, c, ldc, rows, cols, add);
    }

    /// <summary>One depth step: C[4×24] += a[0..4] ⊗ b[0..24] (12 FMAs on the accumulators).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Step(float* a, float* b, ref Vector256<float> c00, ref Vector256<float> c01, ref Vector256<float> c02,
        ref Vector256<float> c10, ref Vector256<float> c11, ref Vector256<float> c12, ref Vector256<float> c20, ref Vector256<float> c21,
        ref Vector256<float> c22, ref Vector256<float> c30, ref Vector256<float> c31, ref Vector256<float> c32)
    {
        Vector256<float> b0 = Vector256.Load(b + 0);
        Vector256<float> b1 = Vector256.Load(b + 8);
        Vector256<float> b2 = Vector256.Load(b + 16);
        Vector256<float> a0 = Vector256.Create(a[0]);
        c00 = Fma.MultiplyAdd(a0, b0, c00);
        c01 = Fma.MultiplyAdd(a0, b1, c01);
        c02 = Fma.MultiplyAdd(a0, b2, c02);
        Vector256<float> a1 = Vector256.Create(a[1]);
        c10 = Fma.MultiplyAdd(a1, b0, c10);
        c11 = Fma.MultiplyAdd(a1, b1, c11);
        c12 = Fma.MultiplyAdd(a1, b2, c12);
        Vector256<float> a2 = Vector256.Create(a[2]);
        c20 = Fma.MultiplyAdd(a2, b0, c20);
        c21 = Fma.MultiplyAdd(a2, b1, c21);
        c22 = Fma.MultiplyAdd(a2, b2, c22);
        Vector256<float> a3 = Vector256.Create(a[3]);
        c30 = Fma.MultiplyAdd(a3, b0, c30);
        c31 = Fma.MultiplyAdd(a3, b1, c31);
        c32 = Fma.MultiplyAdd(a3, b2, c32);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector256<float> v, float* dst, bool add)
    {
        if (add) v += Vector256.Load(dst);
        Vector256.Store(v, dst);
    }

    private static void CopyEdge(float* tile, float* c, int ldc, int rows, int cols, bool add)
    {
        for (int r = 0; r < rows; r++)
        {
            float* src = tile + r * NR;
            float* dst = c + (long)r * ldc;
            if (add) for (int j = 0; j < cols; j++) dst[j] += src[j];
            else for (int j = 0; j < cols; j++) dst[j] = src[j];
        }
    }
}
