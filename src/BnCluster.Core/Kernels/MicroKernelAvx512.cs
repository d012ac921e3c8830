using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace BnCluster.Core.Kernels;

/// <summary>
/// AVX-512 micro-kernel: an 8×32 block of C lives in 16 zmm accumulators (of 32 registers), leaving room
/// for the 2 B vectors and the A broadcasts. 8 rows divide the usual batch shards (64, 128, 256);
/// 32 columns = two zmm loads per depth step against 16 FMAs, far below the load-port limit.
/// 16 independent accumulators cover the FMA latency × throughput of current cores.
/// </summary>
internal static unsafe class MicroKernelAvx512
{
    public const int MR = 8;
    public const int NR = 32;

    /// <summary>
    /// C[rows×cols] (row stride ldc) = (add ? C : 0) + Σ_{p in steps} Apanel[p]·Bpanel[p] over the
    /// <paramref name="count"/> depth steps listed in <paramref name="steps"/> (ascending: those where the A panel
    /// is not all zero, see <see cref="Packing.NonZeroSteps"/>), or, when <paramref name="steps"/> is null, steps 0..count−1.
    /// Apanel: kc×MR (packed A), Bpanel: kc×NR (packed B). Edge tiles (rows &lt; MR or cols &lt; NR)
    /// go through <paramref name="scratch"/> (MR×NR floats) so loads/stores never leave C.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int count, int* steps, float* a0p, float* b0p, float* c, int ldc, int rows, int cols, bool add, float* scratch) =>
        Tile(count, steps, 0, null, 0, null, a0p, b0p, c, ldc, rows, cols, add, scratch);

    /// <summary>
    /// <see cref="Run"/> over depth steps sorted by which half of the 8-row A panel is not zero there (see
    /// <see cref="Packing.NonZeroHalfSteps"/>): the <c>counts[0]</c> steps at <paramref name="steps"/> where both halves
    /// have a nonzero value run all 8 rows; the <c>counts[1]</c> at steps + <paramref name="stride"/>, where only rows
    /// 0–3 have one, run those 4 rows; the <c>counts[2]</c> at steps + 2·stride run rows 4–7. A skipped half adds only
    /// zero terms. Images have zeros in 4 rows at a depth step far more often than in 8 (Fashion-MNIST batches: 36–38%
    /// of half-steps against 28–29% of steps), and a half step costs half the FMAs. Each row's sum takes its steps in
    /// the order of the lists: the result depends only on the panel, not on the thread split.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RunHalves(int* counts, int* steps, int stride, float* a0p, float* b0p, float* c, int ldc, int rows, int cols, bool add,
        float* scratch) =>
        Tile(counts[0], steps, counts[1], steps + stride, counts[2], steps + 2L * stride, a0p, b0p, c, ldc, rows, cols, add, scratch);

    /// <summary>The body of <see cref="Run"/> and <see cref="RunHalves"/>: the full steps (all of them when
    /// <paramref name="steps"/> is null), then the steps of rows 0–3 only, then those of rows 4–7 only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tile(int count, int* steps, int upperCount, int* upperSteps, int lowerCount, int* lowerSteps,
        float* a0p, float* b0p, float* c, int ldc, int rows, int cols, bool add, float* scratch)
    {
        Vector512<float> c00 = default;
        Vector512<float> c01 = default;
        Vector512<float> c10 = default;
        Vector512<float> c11 = default;
        Vector512<float> c20 = default;
        Vector512<float> c21 = default;
        Vector512<float> c30 = default;
        Vector512<float> c31 = default;
        Vector512<float> c40 = default;
        Vector512<float> c41 = default;
        Vector512<float> c50 = default;
        Vector512<float> c51 = default;
        Vector512<float> c60 = default;
        Vector512<float> c61 = default;
        Vector512<float> c70 = default;
        Vector512<float> c71 = default;
        // Two loops around one inlined body: the dense one walks the panels with pointer steps (an index load per
        // step costs ~3% on dense products), the listed one jumps to the steps that are not all zero.
        if (steps is null)
        {
            for (int t = 0; t < count; t++)
                Step(a0p + t * MR, b0p + t * NR, ref c00, ref c01, ref c10, ref c11, ref c20, ref c21, ref c30, ref c31,
                    ref c40, ref c41, ref c50, ref c51, ref c60, ref c61, ref c70, ref c71);
        }
        else
        {
            for (int t = 0; t < count; t++)
            {
                long p = steps[t];
                Step(a0p + p * MR, b0p + p * NR, ref c00, ref c01, ref c10, ref c11, ref c20, ref c21, ref c30, ref c31,
                    ref c40, ref c41, ref c50, ref c51, ref c60, ref c61, ref c70, ref c71);
            }
        }
        for (int t = 0; t < upperCount; t++)
        {
            long p = upperSteps[t];
            HalfStep(a0p + p * MR, b0p + p * NR, ref c00, ref c01, ref c10, ref c11, ref c20, ref c21, ref c30, ref c31);
        }
        for (int t = 0; t < lowerCount; t++)
        {
            long p = lowerSteps[t];
            HalfStep(a0p + p * MR + 4, b0p + p * NR, ref c40, ref c41, ref c50, ref c51, ref c60, ref c61, ref c70, ref c71);
        }
        bool full = rows == MR && cols == NR;
        float* dst = full ? c : scratch;
        int ld = full ? ldc : NR;
        bool addHere = full && add;
        Store(c00, dst + 0 * ld + 0, addHere);
        Store(c01, dst + 0 * ld + 16, addHere);
        Store(c10, dst + 1 * ld + 0, addHere);
        Store(c11, dst + 1 * ld + 16, addHere);
        Store(c20, dst + 2 * ld + 0, addHere);
        Store(c21, dst + 2 * ld + 16, addHere);
        Store(c30, dst + 3 * ld + 0, addHere);
        Store(c31, dst + 3 * ld + 16, addHere);
        Store(c40, dst + 4 * ld + 0, addHere);
        Store(c41, dst + 4 * ld + 16, addHere);
        Store(c50, dst + 5 * ld + 0, addHere);
        Store(c51, dst + 5 * ld + 16, addHere);
        Store(c60, dst + 6 * ld + 0, addHere);
        Store(c61, dst + 6 * ld + 16, addHere);
        Store(c70, dst + 7 * ld + 0, addHere);
        Store(c71, dst + 7 * ld + 16, addHere);
        if (!full) CopyEdge(scratch, NR, c, ldc, rows, cols, add);
    }

    /// <summary>Columns of the narrow tile (<see cref="RunNarrow"/>).</summary>
    public const int NarrowNR = 16;

    /// <summary>
    /// <see cref="Run"/> on an 8×16 tile (8 zmm accumulators, one B vector per step), for products with at most 16
    /// columns such as the 10-class output layer: there the 8×32 tile computes 32 columns for 10, this one 16. Each
    /// step is still 8 FMAs against 1 load and 8 broadcasts, within the load ports' reach. Bpanel: kc×16 (packed B).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RunNarrow(int count, int* steps, float* a0p, float* b0p, float* c, int ldc, int rows, int cols, bool add, float* scratch)
    {
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
        for (int t = 0; t < count; t++)
        {
            long p = steps is null ? t : steps[t];
            float* a = a0p + p * MR;
            Vector512<float> b = Vector512.Load(b0p + p * NarrowNR);
            c0 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[0]), b, c0);
            c1 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[1]), b, c1);
            c2 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[2]), b, c2);
            c3 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[3]), b, c3);
            c4 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[4]), b, c4);
            c5 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[5]), b, c5);
            c6 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[6]), b, c6);
            c7 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[7]), b, c7);
        }
        bool full = rows == MR && cols == NarrowNR;
        float* dst = full ? c : scratch;
        int ld = full ? ldc : NarrowNR;
        bool addHere = full && add;
        Store(c0, dst + 0 * ld, addHere);
        Store(c1, dst + 1 * ld, addHere);
        Store(c2, dst + 2 * ld, addHere);
        Store(c3, dst + 3 * ld, addHere);
        Store(c4, dst + 4 * ld, addHere);
        Store(c5, dst + 5 * ld, addHere);
        Store(c6, dst + 6 * ld, addHere);
        Store(c7, dst + 7 * ld, addHere);
        if (!full) CopyEdge(scratch, NarrowNR, c, ldc, rows, cols, add);
    }

    /// <summary>One depth step: C[8×32] += a[0..8] ⊗ b[0..32] (16 FMAs on the accumulators).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Step(float* a, float* b, ref Vector512<float> c00, ref Vector512<float> c01, ref Vector512<float> c10,
        ref Vector512<float> c11, ref Vector512<float> c20, ref Vector512<float> c21, ref Vector512<float> c30, ref Vector512<float> c31,
        ref Vector512<float> c40, ref Vector512<float> c41, ref Vector512<float> c50, ref Vector512<float> c51, ref Vector512<float> c60,
        ref Vector512<float> c61, ref Vector512<float> c70, ref Vector512<float> c71)
    {
        Vector512<float> b0 = Vector512.Load(b + 0);
        Vector512<float> b1 = Vector512.Load(b + 16);
        FourRows(a, b0, b1, ref c00, ref c01, ref c10, ref c11, ref c20, ref c21, ref c30, ref c31);
        FourRows(a + 4, b0, b1, ref c40, ref c41, ref c50, ref c51, ref c60, ref c61, ref c70, ref c71);
    }

    /// <summary>Half a depth step: C[4×32] += a[0..4] ⊗ b[0..32] (8 FMAs on the 4 rows' accumulators).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void HalfStep(float* a, float* b, ref Vector512<float> c00, ref Vector512<float> c01, ref Vector512<float> c10,
        ref Vector512<float> c11, ref Vector512<float> c20, ref Vector512<float> c21, ref Vector512<float> c30, ref Vector512<float> c31) =>
        FourRows(a, Vector512.Load(b + 0), Vector512.Load(b + 16), ref c00, ref c01, ref c10, ref c11, ref c20, ref c21, ref c30, ref c31);

    /// <summary>Rows a[0..4] of a step against its B vectors b0 = b[0..16], b1 = b[16..32].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FourRows(float* a, Vector512<float> b0, Vector512<float> b1, ref Vector512<float> c00, ref Vector512<float> c01,
        ref Vector512<float> c10, ref Vector512<float> c11, ref Vector512<float> c20, ref Vector512<float> c21, ref Vector512<float> c30,
        ref Vector512<float> c31)
    {
        Vector512<float> a0 = Vector512.Create(a[0]);
        c00 = Avx512F.FusedMultiplyAdd(a0, b0, c00);
        c01 = Avx512F.FusedMultiplyAdd(a0, b1, c01);
        Vector512<float> a1 = Vector512.Create(a[1]);
        c10 = Avx512F.FusedMultiplyAdd(a1, b0, c10);
        c11 = Avx512F.FusedMultiplyAdd(a1, b1, c11);
        Vector512<float> a2 = Vector512.Create(a[2]);
        c20 = Avx512F.FusedMultiplyAdd(a2, b0, c20);
        c21 = Avx512F.FusedMultiplyAdd(a2, b1, c21);
        Vector512<float> a3 = Vector512.Create(a[3]);
        c30 = Avx512F.FusedMultiplyAdd(a3, b0, c30);
        c31 = Avx512F.FusedMultiplyAdd(a3, b1, c31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector512<float> v, float* dst, bool add)
    {
        if (add) v += Vector512.Load(dst);
        Vector512.Store(v, dst);
    }

    private static void CopyEdge(float* tile, int nr, float* c, int ldc, int rows, int cols, bool add)
    {
        for (int r = 0; r < rows; r++)
        {
            float* src = tile + r * nr;
            float* dst = c + (long)r * ldc;
            if (add) for (int j = 0; j < cols; j++) dst[j] += src[j];
            else for (int j = 0; j < cols; j++) dst[j] = src[j];
        }
    }
}
