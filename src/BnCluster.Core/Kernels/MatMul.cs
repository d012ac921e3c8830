namespace BnCluster.Core.Kernels;

/// <summary>
/// The three matrix products of a dense layer, row-major float32, with the weight stored
/// [out][in] like nn.Linear.weight:
///   forward        Z[n×out]   = A[n×in] · W[out×in]ᵀ      → MultiplyNT
///   weight grad    dW[out×in] = dZ[n×out]ᵀ · A[n×in]      → MultiplyTN
///   input grad     dA[n×in]   = dZ[n×out] · W[out×in]     → MultiplyNN
/// One instance per trainer or worker: it owns its threads and packing buffers.
/// PLACEHOLDER naive implementation; replaced by the blocked SIMD kernels.
/// </summary>
public sealed class MatMul : IDisposable
{
    public MatMul(int threads = 1)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), "threads must be at least 1");
        Threads = threads;
    }

    public int Threads { get; }

    /// <summary>C[m×n] = A[m×k] · B[k×n]; adds into C when <paramref name="accumulate"/>.</summary>
    public void MultiplyNN(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int n, int k, bool accumulate = false)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                float s = 0;
                for (int p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
                c[i * n + j] = accumulate ? c[i * n + j] + s : s;
            }
    }

    /// <summary>C[m×n] = A[m×k] · B[n×k]ᵀ; adds into C when <paramref name="accumulate"/>.</summary>
    public void MultiplyNT(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int n, int k, bool accumulate = false)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                float s = 0;
                for (int p = 0; p < k; p++) s += a[i * k + p] * b[j * k + p];
                c[i * n + j] = accumulate ? c[i * n + j] + s : s;
            }
    }

    /// <summary>C[m×n] = A[k×m]ᵀ · B[k×n]; adds into C when <paramref name="accumulate"/>.</summary>
    public void MultiplyTN(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int n, int k, bool accumulate = false)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                float s = 0;
                for (int p = 0; p < k; p++) s += a[p * m + i] * b[p * n + j];
                c[i * n + j] = accumulate ? c[i * n + j] + s : s;
            }
    }

    public void Dispose() { }
}
