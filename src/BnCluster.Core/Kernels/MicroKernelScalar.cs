namespace BnCluster.Core.Kernels;

/// <summary>
/// Portable micro-kernel for CPUs without AVX2/FMA: a 4×4 tile accumulated in the scratch tile.
/// Correct for any shape via the same packing as the SIMD paths; not tuned.
/// </summary>
internal static unsafe class MicroKernelScalar
{
    public const int MR = 4;
    public const int NR = 4;

    /// <summary>Same contract as <see cref="MicroKernelAvx512.Run"/> with a 4×4 tile.</summary>
    public static void Run(int count, int* steps, float* a, float* b, float* c, int ldc, int rows, int cols, bool add, float* scratch)
    {
        for (int i = 0; i < MR * NR; i++) scratch[i] = 0f;
        for (int t = 0; t < count; t++)
        {
            int p = steps is null ? t : steps[t];
            float* ap = a + p * MR;
            float* bp = b + p * NR;
            for (int r = 0; r < MR; r++)
            {
                float ar = ap[r];
                float* acc = scratch + r * NR;
                for (int j = 0; j < NR; j++) acc[j] += ar * bp[j];
            }
        }
        for (int r = 0; r < rows; r++)
        {
            float* src = scratch + r * NR;
            float* dst = c + (long)r * ldc;
            if (add) for (int j = 0; j < cols; j++) dst[j] += src[j];
            else for (int j = 0; j < cols; j++) dst[j] = src[j];
        }
    }
}
