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
                    for (; r < rows; r++) d[r] = s[r];
                    for (; r < mr; r++) d[r] = 0f;
                }
            }
            else
            {
                // Row-major A (NN, NT): each source row is contiguous along depth; scatter it with stride MR.
                for (int r = 0; r < rows; r++)
                {
                    float* s = src + (long)r * a.RowStride;
                    float* d = panel + r;
                    if (a.ColStride == 1)
                        for (int p = 0; p < kc; p++) d[p * mr] = s[p];
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
                    if (cols == nr)
                    {
                        new ReadOnlySpan<float>(s, nr).CopyTo(new Span<float>(d, nr));
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
                // Transposed B (NT, B stored n×k): each column is contiguous along depth; scatter with stride NR.
                for (int c = 0; c < cols; c++)
                {
                    float* s = src + (long)c * b.ColStride;
                    float* d = panel + c;
                    if (b.RowStride == 1)
                        for (int p = 0; p < kc; p++) d[p * nr] = s[p];
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
}
