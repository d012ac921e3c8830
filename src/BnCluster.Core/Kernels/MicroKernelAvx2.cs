using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace BnCluster.Core.Kernels;

/// <summary>
/// AVX2+FMA micro-kernel: a 6×16 block of C in 12 ymm accumulators, plus 2 B vectors and
/// 1 broadcast = 15 of the 16 ymm registers (the classic Haswell-class sgemm shape).
/// </summary>
internal static unsafe class MicroKernelAvx2
{
    public const int MR = 6;
    public const int NR = 16;

    /// <summary>Same contract as <see cref="MicroKernelAvx512.Run"/> with a 6×16 tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int count, int* steps, float* a0p, float* b0p, float* c, int ldc, int rows, int cols, bool add, float* scratch)
    {
        Vector256<float> c00 = default;
        Vector256<float> c01 = default;
        Vector256<float> c10 = default;
        Vector256<float> c11 = default;
        Vector256<float> c20 = default;
        Vector256<float> c21 = default;
        Vector256<float> c30 = default;
        Vector256<float> c31 = default;
        Vector256<float> c40 = default;
        Vector256<float> c41 = default;
        Vector256<float> c50 = default;
        Vector256<float> c51 = default;
        // As in the AVX-512 kernel: a dense loop with pointer steps and a listed one, around one inlined body.
        if (steps is null)
        {
            for (int t = 0; t < count; t++)
                Step(a0p + t * MR, b0p + t * NR, ref c00, ref c01, ref c10, ref c11, ref c20, ref c21, ref c30, ref c31, ref c40, ref c41, ref c50, ref c51);
        }
        else
        {
            for (int t = 0; t < count; t++)
            {
                long p = steps[t];
                Step(a0p + p * MR, b0p + p * NR, ref c00, ref c01, ref c10, ref c11, ref c20, ref c21, ref c30, ref c31, ref c40, ref c41, ref c50, ref c51);
            }
        }
        bool full = rows == MR && cols == NR;
        float* dst = full ? c : scratch;
        int ld = full ? ldc : NR;
        bool addHere = full && add;
        Store(c00, dst + 0 * ld + 0, addHere);
        Store(c01, dst + 0 * ld + 8, addHere);
        Store(c10, dst + 1 * ld + 0, addHere);
        Store(c11, dst + 1 * ld + 8, addHere);
        Store(c20, dst + 2 * ld + 0, addHere);
        Store(c21, dst + 2 * ld + 8, addHere);
        Store(c30, dst + 3 * ld + 0, addHere);
        Store(c31, dst + 3 * ld + 8, addHere);
        Store(c40, dst + 4 * ld + 0, addHere);
        Store(c41, dst + 4 * ld + 8, addHere);
        Store(c50, dst + 5 * ld + 0, addHere);
        Store(c51, dst + 5 * ld + 8, addHere);
        if (!full) CopyEdge(scratch, c, ldc, rows, cols, add);
    }

    /// <summary>One depth step: C[6×16] += a[0..6] ⊗ b[0..16] (12 FMAs on the accumulators).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Step(float* a, float* b, ref Vector256<float> c00, ref Vector256<float> c01, ref Vector256<float> c10,
        ref Vector256<float> c11, ref Vector256<float> c20, ref Vector256<float> c21, ref Vector256<float> c30, ref Vector256<float> c31,
        ref Vector256<float> c40, ref Vector256<float> c41, ref Vector256<float> c50, ref Vector256<float> c51)
    {
        Vector256<float> b0 = Vector256.Load(b + 0);
        Vector256<float> b1 = Vector256.Load(b + 8);
        Vector256<float> a0 = Vector256.Create(a[0]);
        c00 = Fma.MultiplyAdd(a0, b0, c00);
        c01 = Fma.MultiplyAdd(a0, b1, c01);
        Vector256<float> a1 = Vector256.Create(a[1]);
        c10 = Fma.MultiplyAdd(a1, b0, c10);
        c11 = Fma.MultiplyAdd(a1, b1, c11);
        Vector256<float> a2 = Vector256.Create(a[2]);
        c20 = Fma.MultiplyAdd(a2, b0, c20);
        c21 = Fma.MultiplyAdd(a2, b1, c21);
        Vector256<float> a3 = Vector256.Create(a[3]);
        c30 = Fma.MultiplyAdd(a3, b0, c30);
        c31 = Fma.MultiplyAdd(a3, b1, c31);
        Vector256<float> a4 = Vector256.Create(a[4]);
        c40 = Fma.MultiplyAdd(a4, b0, c40);
        c41 = Fma.MultiplyAdd(a4, b1, c41);
        Vector256<float> a5 = Vector256.Create(a[5]);
        c50 = Fma.MultiplyAdd(a5, b0, c50);
        c51 = Fma.MultiplyAdd(a5, b1, c51);
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
