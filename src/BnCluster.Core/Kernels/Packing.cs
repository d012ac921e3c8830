using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace BnCluster.Core.Kernels;

/// <summary>
/// A strided view of a logical matrix: element (r, c) is at Ptr[r·RowStride + c·ColStride].
/// Transposition is just swapped strides, so one packing routine serves NN, NT and TN.
/// </summary>
internal readonly unsafe struct StridedMatrix(float* ptr, int rowStride, int colStride)
{
    public readonly float* Ptr = ptr;
    public readonly int RowStride = rowStride;
    public readonly int ColStride = colStride;
}

/// <summary>
/// Copies cache blocks of the operands into the contiguous layout the micro-kernels read:
/// A block (mc×kc) → ⌈mc/MR⌉ panels, each kc steps of MR consecutive row values;
/// B block (kc×nc) → ⌈nc/NR⌉ panels, each kc steps of NR consecutive column values.
/// Rows/columns past the edge are zero-filled so the kernels always run full MR×NR tiles.
/// </summary>
internal static unsafe class Packing
{
    /// <summary>Packs rows [row0, row0+mc) × depth [p0, p0+kc) of <paramref name="a"/> (logical m×k) into <paramref name="dest"/>.</summary>
    public static void PackA(StridedMatrix a, int row0, int mc, int p0, int kc, int mr, float* dest)
    {
        for (int ir = 0; ir < mc; ir += mr)
        {
            int rows = Math.Min(mr, mc - ir);
            float* panel = dest + (long)ir * kc;
            float* src = a.Ptr + (long)(row0 + ir) * a.RowStride + (long)p0 * a.ColStride;
            if (a.RowStride == 1)
            {
                // Transposed A (TN): the MR row values of one depth step are contiguous in memory.
                for (int p = 0; p < kc; p++)
                {
                    float* s = src + (long)p * a.ColStride;
                    float* d = panel + p * mr;
                    int r = 0;
                    if (rows == mr)
                    {
                        for (; r + 8 <= mr; r += 8) Vector256.Store(Vector256.Load(s + r), d + r);
                        for (; r + 4 <= mr; r += 4) Vector128.Store(Vector128.Load(s + r), d + r);
                    }
                    for (; r < rows; r++) d[r] = s[r];
                    for (; r < mr; r++) d[r] = 0f;
                }
            }
            else
            {
                // Row-major A (NN, NT): each source row is contiguous along depth, so packing is a
                // transpose. Full groups of 8 rows go through 8×8 register transposes (a scalar
                // scatter costs as much as the products themselves for small m); the rest is scalar.
                int done = 0;
                if (a.ColStride == 1 && Avx.IsSupported && rows == mr && mr % 8 == 0)
                {
                    int kc8 = kc & ~7;
                    for (int r8 = 0; r8 < mr; r8 += 8)
                        for (int p = 0; p < kc8; p += 8)
                            Transpose8x8(src + (long)r8 * a.RowStride + p, a.RowStride, panel + p * mr + r8, mr, add: false);
                    done = kc8;
                }
                else if (a.ColStride == 1 && Avx.IsSupported && rows == 4 && mr == 4)
                {
                    // The AVX2 kernel's 4-row panels: 8 depth steps of the 4 rows are 32 consecutive packed values.
                    int kc8 = kc & ~7;
                    for (int p = 0; p < kc8; p += 8)
                    {
                        Transpose4x8(src + p, a.RowStride, out var s01, out var s23, out var s45, out var s67);
                        float* d = panel + p * 4;
                        Vector256.Store(s01, d);
                        Vector256.Store(s23, d + 8);
                        Vector256.Store(s45, d + 16);
                        Vector256.Store(s67, d + 24);
                    }
                    done = kc8;
                }
                for (int r = 0; r < rows; r++)
                {
                    float* s = src + (long)r * a.RowStride;
                    float* d = panel + r;
                    if (a.ColStride == 1)
                        for (int p = done; p < kc; p++) d[p * mr] = s[p];
                    else
                        for (int p = 0; p < kc; p++) d[p * mr] = s[(long)p * a.ColStride];
                }
                for (int r = rows; r < mr; r++)
                {
                    float* d = panel + r;
                    for (int p = 0; p < kc; p++) d[p * mr] = 0f;
                }
            }
        }
    }

    /// <summary>Packs depth [p0, p0+kc) × columns [col0, col0+nc) of <paramref name="b"/> (logical k×n) into <paramref name="dest"/>.</summary>
    public static void PackB(StridedMatrix b, int p0, int kc, int col0, int nc, int nr, float* dest)
    {
        for (int jr = 0; jr < nc; jr += nr)
        {
            int cols = Math.Min(nr, nc - jr);
            float* panel = dest + (long)jr * kc;
            float* src = b.Ptr + (long)p0 * b.RowStride + (long)(col0 + jr) * b.ColStride;
            if (b.ColStride == 1)
            {
                // Row-major B (NN, TN): NR column values of one depth step are contiguous; plain copy.
                for (int p = 0; p < kc; p++)
                {
                    float* s = src + (long)p * b.RowStride;
                    float* d = panel + p * nr;
                    if (cols == nr && nr % 8 == 0)
                    {
                        // Inline vector copy: a Memmove call per 128-byte row cost as much as the copy.
                        for (int c = 0; c < nr; c += 8) Vector256.Store(Vector256.Load(s + c), d + c);
                    }
                    else
                    {
                        int c = 0;
                        for (; c < cols; c++) d[c] = s[c];
                        for (; c < nr; c++) d[c] = 0f;
                    }
                }
            }
            else
            {
                // Transposed B (NT, B stored n×k): each column is contiguous along depth, so packing is
                // a transpose; full 8×8 blocks in registers, the edges scalar (see PackA).
                int full8 = 0, kc8 = 0;
                if (b.RowStride == 1 && Avx.IsSupported)
                {
                    full8 = cols & ~7;
                    kc8 = kc & ~7;
                    for (int c8 = 0; c8 < full8; c8 += 8)
                        for (int p = 0; p < kc8; p += 8)
                            Transpose8x8(src + (long)c8 * b.ColStride + p, b.ColStride, panel + p * nr + c8, nr, add: false);
                }
                for (int c = 0; c < cols; c++)
                {
                    float* s = src + (long)c * b.ColStride;
                    float* d = panel + c;
                    if (b.RowStride == 1)
                        for (int p = c < full8 ? kc8 : 0; p < kc; p++) d[p * nr] = s[p];
                    else
                        for (int p = 0; p < kc; p++) d[p * nr] = s[(long)p * b.RowStride];
                }
                for (int c = cols; c < nr; c++)
                {
                    float* d = panel + c;
                    for (int p = 0; p < kc; p++) d[p * nr] = 0f;
                }
            }
        }
    }

    /// <summary>
    /// Writes to <paramref name="steps"/> the depth steps p of a packed A panel (kc steps of mr values) whose mr values
    /// are not all zero, ascending, and returns how many. −0 counts as zero; NaN does not.
    /// </summary>
    public static int NonZeroSteps(float* panel, int kc, int mr, int* steps)
    {
        if (mr == 8 && Vector512.IsHardwareAccelerated && Avx512F.VL.IsSupported && Bmi2.X64.IsSupported) return NonZeroSteps8Avx512(panel, kc, steps);
        if (mr == 4 && Vector256.IsHardwareAccelerated) return NonZeroSteps4(panel, kc, steps);
        int count = 0;
        if (mr == 8 && Vector256.IsHardwareAccelerated)
        {
            for (int p = 0; p < kc; p++)
            {
                steps[count] = p;
                count += Vector256.EqualsAll(Vector256.Load(panel + p * 8), Vector256<float>.Zero) ? 0 : 1;
            }
            return count;
        }
        for (int p = 0; p < kc; p++)
        {
            float* v = panel + p * mr;
            bool zero = true;
            for (int r = 0; r < mr && zero; r++) zero = v[r] == 0f;
            steps[count] = p;
            count += zero ? 0 : 1;
        }
        return count;
    }

    /// <summary>
    /// <see cref="NonZeroSteps"/> of a 4-row panel (the AVX2 kernel's), 8 steps (32 values, four ymm compares) at a time:
    /// one bit per value that is zero, a nibble per step, folded to one bit per step; the steps that are not all zero
    /// are then written as 8 indices in one store, picked from a table by that byte (<see cref="CompressedIndices"/>).
    /// Comparing a step at a time with early exits mispredicts on images, whose values are zero about half the time.
    /// </summary>
    private static int NonZeroSteps4(float* panel, int kc, int* steps)
    {
        int count = 0, p = 0;
        if (Avx2.IsSupported)
        {
            for (; p + 8 <= kc; p += 8)
            {
                // Bit 0 of each nibble: some value of that step is not zero (the folds stay inside the nibble).
                uint run = ~ZeroBits4x8(panel + p * 4);
                run |= run >> 2;
                run |= run >> 1;
                // Writes 8 slots at count ≤ p: inside the panel's kc slots, as p + 8 ≤ kc.
                count += CompressStepsAvx2(NibbleBits(run), p, steps + count);
            }
        }
        for (; p < kc; p++)
        {
            steps[count] = p;
            count += Vector128.EqualsAll(Vector128.Load(panel + p * 4), Vector128<float>.Zero) ? 0 : 1;
        }
        return count;
    }

    /// <summary>One bit per value of 8 packed 4-row steps (32 floats at <paramref name="q"/>), set where it is zero:
    /// nibble i holds step i, bit r of it row r.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint ZeroBits4x8(float* q) =>
        Vector256.Equals(Vector256.Load(q), Vector256<float>.Zero).ExtractMostSignificantBits()
        | Vector256.Equals(Vector256.Load(q + 8), Vector256<float>.Zero).ExtractMostSignificantBits() << 8
        | Vector256.Equals(Vector256.Load(q + 16), Vector256<float>.Zero).ExtractMostSignificantBits() << 16
        | Vector256.Equals(Vector256.Load(q + 24), Vector256<float>.Zero).ExtractMostSignificantBits() << 24;

    /// <summary>Bit 0 of each of the 8 nibbles of <paramref name="bits"/>, gathered into one byte (bit i from nibble i);
    /// shifts rather than PEXT, which is microcoded and slow on AMD cores before Zen 3.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int NibbleBits(uint bits)
    {
        bits &= 0x11111111;
        bits = (bits | bits >> 3) & 0x03030303;
        bits = (bits | bits >> 6) & 0x000F000F;
        return (int)((bits | bits >> 12) & 0xFF);
    }

    /// <summary>Stores p0 + i for the set bits i of <paramref name="mask"/> (8 bits), ascending, at
    /// <paramref name="dest"/> in one 8-slot store of indices picked from a table; returns how many.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int CompressStepsAvx2(int mask, int p0, int* dest)
    {
        (Avx2.ConvertToVector256Int32(CompressedIndices + 8 * mask) + Vector256.Create(p0)).Store(dest);
        return BitOperations.PopCount((uint)mask);
    }

    /// <summary>For each byte m, the positions of its set bits ascending (8 slots, the rest 0): row m at 8·m.</summary>
    private static readonly byte* CompressedIndices = BuildCompressedIndices();

    private static byte* BuildCompressedIndices()
    {
        // Process lifetime: 2 KB, never freed.
        var table = (byte*)NativeMemory.AlignedAlloc(256 * 8, 64);
        for (int m = 0; m < 256; m++)
        {
            int n = 0;
            for (int bit = 0; bit < 8; bit++)
                if ((m >> bit & 1) != 0) table[8 * m + n++] = (byte)bit;
            for (; n < 8; n++) table[8 * m + n] = 0;
        }
        return table;
    }

    /// <summary>
    /// <see cref="NonZeroSteps"/> of an 8-row panel, 8 steps (64 values, four zmm compares) at a time: one bit per value
    /// that is zero, a byte per step; the steps whose byte is not all ones are compressed out of 8 indices in one
    /// vector store. Twice as fast as a step at a time, whose branch-free store and count chain every step.
    /// </summary>
    private static int NonZeroSteps8Avx512(float* panel, int kc, int* steps)
    {
        int count = 0, p = 0;
        for (; p + 8 <= kc; p += 8)
        {
            // Bit 0 of each byte of `run`: some value of that step is not zero (the folds stay inside the byte).
            ulong run = ~ZeroBits8(panel + p * 8);
            run |= run >> 4;
            run |= run >> 2;
            run |= run >> 1;
            // Writes 8 slots at count ≤ p: inside the panel's kc slots, as p + 8 ≤ kc.
            count += CompressSteps((int)Bmi2.X64.ParallelBitExtract(run, 0x0101010101010101), p, steps + count);
        }
        for (; p < kc; p++)
        {
            steps[count] = p;
            count += Vector256.EqualsAll(Vector256.Load(panel + p * 8), Vector256<float>.Zero) ? 0 : 1;
        }
        return count;
    }

    /// <summary>
    /// Sorts the depth steps of a packed 8-row panel (kc steps of 8 values) by which of its halves, rows 0–3 and rows
    /// 4–7, have a value that is not zero there, for <see cref="MicroKernelAvx512.RunHalves"/>: the steps where both do,
    /// ascending, at <paramref name="steps"/>; those where only rows 0–3 do at steps + <paramref name="stride"/>; those
    /// where only rows 4–7 do at steps + 2·stride (stride ≥ kc); their counts in counts[0..3]. Steps zero in all 8 rows
    /// are in no list. −0 counts as zero; NaN does not.
    /// </summary>
    public static void NonZeroHalfSteps(float* panel, int kc, int* steps, int stride, int* counts)
    {
        int both = 0, upper = 0, lower = 0, p = 0;
        int* upperSteps = steps + stride, lowerSteps = steps + 2L * stride;
        if (Vector512.IsHardwareAccelerated && Avx512F.VL.IsSupported && Bmi2.X64.IsSupported)
        {
            // 8 steps at a time as in NonZeroSteps8Avx512, with one bit per half: bit 0 of each byte for rows 0–3,
            // bit 4 for rows 4–7 (the folds stay inside each nibble).
            for (; p + 8 <= kc; p += 8)
            {
                ulong run = ~ZeroBits8(panel + p * 8);
                run |= run >> 2;
                run |= run >> 1;
                int up = (int)Bmi2.X64.ParallelBitExtract(run, 0x0101010101010101);
                int low = (int)Bmi2.X64.ParallelBitExtract(run, 0x1010101010101010);
                // Each list writes 8 slots at its count ≤ p: inside its stride ≥ kc slots, as p + 8 ≤ kc.
                both += CompressSteps(up & low, p, steps + both);
                upper += CompressSteps(up & ~low, p, upperSteps + upper);
                lower += CompressSteps(low & ~up, p, lowerSteps + lower);
            }
        }
        for (; p < kc; p++)
        {
            float* v = panel + p * 8;
            bool up = !(v[0] == 0f && v[1] == 0f && v[2] == 0f && v[3] == 0f);
            bool low = !(v[4] == 0f && v[5] == 0f && v[6] == 0f && v[7] == 0f);
            if (up && low) steps[both++] = p;
            else if (up) upperSteps[upper++] = p;
            else if (low) lowerSteps[lower++] = p;
        }
        counts[0] = both;
        counts[1] = upper;
        counts[2] = lower;
    }

    /// <summary>One bit per value of 8 packed 8-row steps (64 floats at <paramref name="q"/>), set where it is zero;
    /// byte b holds step b, bit r of it row r.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong ZeroBits8(float* q) =>
        Vector512.Equals(Vector512.Load(q), Vector512<float>.Zero).ExtractMostSignificantBits()
        | Vector512.Equals(Vector512.Load(q + 16), Vector512<float>.Zero).ExtractMostSignificantBits() << 16
        | Vector512.Equals(Vector512.Load(q + 32), Vector512<float>.Zero).ExtractMostSignificantBits() << 32
        | Vector512.Equals(Vector512.Load(q + 48), Vector512<float>.Zero).ExtractMostSignificantBits() << 48;

    /// <summary>Stores p0 + i for the set bits i of <paramref name="mask"/> (8 bits), ascending, at
    /// <paramref name="dest"/> in one 8-slot compressed store; returns how many.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int CompressSteps(int mask, int p0, int* dest)
    {
        var laneBits = Vector256.Create(1, 2, 4, 8, 16, 32, 64, 128);
        var keep = Vector256.Equals(Vector256.Create(mask) & laneBits, laneBits);
        Avx512F.VL.Compress(Vector256<int>.Zero, keep, Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7) + Vector256.Create(p0)).Store(dest);
        return BitOperations.PopCount((uint)mask);
    }

    /// <summary>
    /// The 4×8 block src[i·srcStride + j] (i &lt; 4, j &lt; 8) as its 8 columns of 4, two to a vector: c01 holds columns 0
    /// and 1 (src[0..4, 0] then src[0..4, 1]), c23 columns 2 and 3, and so on: 4 loads, 12 shuffles.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Transpose4x8(float* src, int srcStride, out Vector256<float> c01, out Vector256<float> c23, out Vector256<float> c45,
        out Vector256<float> c67)
    {
        Vector256<float> r0 = Avx.LoadVector256(src);
        Vector256<float> r1 = Avx.LoadVector256(src + srcStride);
        Vector256<float> r2 = Avx.LoadVector256(src + 2L * srcStride);
        Vector256<float> r3 = Avx.LoadVector256(src + 3L * srcStride);
        // Per 128-bit lane (columns 0–3 | 4–7): interleave rows 0, 1 and rows 2, 3, then gather each column's 4 rows.
        Vector256<float> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1);
        Vector256<float> t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
        Vector256<float> u0 = Avx.Shuffle(t0, t2, 0x44), u1 = Avx.Shuffle(t0, t2, 0xEE); // columns 0 | 4, 1 | 5
        Vector256<float> u2 = Avx.Shuffle(t1, t3, 0x44), u3 = Avx.Shuffle(t1, t3, 0xEE); // columns 2 | 6, 3 | 7
        c01 = Avx.Permute2x128(u0, u1, 0x20);
        c23 = Avx.Permute2x128(u2, u3, 0x20);
        c45 = Avx.Permute2x128(u0, u1, 0x31);
        c67 = Avx.Permute2x128(u2, u3, 0x31);
    }

    /// <summary>dst[j·dstStride + i] (+)= src[i·srcStride + j] for i, j &lt; 8, with AVX shuffles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Transpose8x8(float* src, int srcStride, float* dst, int dstStride, bool add)
    {
        Vector256<float> r0 = Avx.LoadVector256(src);
        Vector256<float> r1 = Avx.LoadVector256(src + srcStride);
        Vector256<float> r2 = Avx.LoadVector256(src + 2L * srcStride);
        Vector256<float> r3 = Avx.LoadVector256(src + 3L * srcStride);
        Vector256<float> r4 = Avx.LoadVector256(src + 4L * srcStride);
        Vector256<float> r5 = Avx.LoadVector256(src + 5L * srcStride);
        Vector256<float> r6 = Avx.LoadVector256(src + 6L * srcStride);
        Vector256<float> r7 = Avx.LoadVector256(src + 7L * srcStride);

        // Interleave pairs of rows, then pairs of pairs, then swap 128-bit halves.
        Vector256<float> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1);
        Vector256<float> t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
        Vector256<float> t4 = Avx.UnpackLow(r4, r5), t5 = Avx.UnpackHigh(r4, r5);
        Vector256<float> t6 = Avx.UnpackLow(r6, r7), t7 = Avx.UnpackHigh(r6, r7);

        Vector256<float> u0 = Avx.Shuffle(t0, t2, 0x44), u1 = Avx.Shuffle(t0, t2, 0xEE);
        Vector256<float> u2 = Avx.Shuffle(t1, t3, 0x44), u3 = Avx.Shuffle(t1, t3, 0xEE);
        Vector256<float> u4 = Avx.Shuffle(t4, t6, 0x44), u5 = Avx.Shuffle(t4, t6, 0xEE);
        Vector256<float> u6 = Avx.Shuffle(t5, t7, 0x44), u7 = Avx.Shuffle(t5, t7, 0xEE);

        Store(dst, Avx.Permute2x128(u0, u4, 0x20), add);
        Store(dst + dstStride, Avx.Permute2x128(u1, u5, 0x20), add);
        Store(dst + 2L * dstStride, Avx.Permute2x128(u2, u6, 0x20), add);
        Store(dst + 3L * dstStride, Avx.Permute2x128(u3, u7, 0x20), add);
        Store(dst + 4L * dstStride, Avx.Permute2x128(u0, u4, 0x31), add);
        Store(dst + 5L * dstStride, Avx.Permute2x128(u1, u5, 0x31), add);
        Store(dst + 6L * dstStride, Avx.Permute2x128(u2, u6, 0x31), add);
        Store(dst + 7L * dstStride, Avx.Permute2x128(u3, u7, 0x31), add);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* dst, Vector256<float> v, bool add)
    {
        if (add) v = Avx.Add(v, Avx.LoadVector256(dst));
        Avx.Store(dst, v);
    }
}
