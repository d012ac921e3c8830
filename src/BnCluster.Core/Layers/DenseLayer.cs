using System.Numerics.Tensors;
using BnCluster.Core.Kernels;

namespace BnCluster.Core.Layers;

/// <summary>
/// A fully connected layer, weight [out][in] row-major like nn.Linear.weight, optional bias.
/// Stateless apart from its shape: parameters and buffers are passed in (they live in
/// <see cref="Training.Parameters"/> and <see cref="Training.Workspace"/>).
/// </summary>
public sealed class DenseLayer(int inputs, int outputs, bool hasBias)
{
    public int Inputs { get; } = inputs;
    public int Outputs { get; } = outputs;
    public bool HasBias { get; } = hasBias;

    /// <summary>
    /// Z[n×out] = A[n×in] · W[out×in]ᵀ (+ b[out] on every row).
    /// <paramref name="bias"/> is ignored (may be empty) when the layer has no bias.
    /// </summary>
    public unsafe void Forward(MatMul matMul, ReadOnlySpan<float> a, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, Span<float> z, int rows)
    {
        matMul.MultiplyNT(a, weight, z, rows, Outputs, Inputs);
        if (!HasBias) return;
        if (bias.Length < Outputs || z.Length < (long)rows * Outputs) throw new ArgumentException($"bias holds {bias.Length} of {Outputs} values or z {z.Length} of {(long)rows * Outputs}");
        fixed (float* pz = z) fixed (float* pb = bias)
        {
            // Every row is independent: split by rows over the MatMul's threads (8 rows at least per share).
            var args = new BiasArgs { Z = pz, Bias = pb, Rows = rows, C = Outputs };
            matMul.ParallelFor(rows, (long)rows * Outputs, ref args, &AddBiasRows, align: 1, minPerPart: 8);
        }
    }

    private unsafe struct BiasArgs
    {
        public float* Z, Bias;
        public int Rows, C;
    }

    // Rows [i0, i1) of Z[n×out] += b.
    private static unsafe void AddBiasRows(ref BiasArgs a, int i0, int i1)
    {
        var bias = new ReadOnlySpan<float>(a.Bias, a.C);
        for (int i = i0; i < i1; i++)
        {
            var row = new Span<float>(a.Z + (long)i * a.C, a.C);
            TensorPrimitives.Add(row, bias, row);
        }
    }

    // Columns [j0, j1) of db[out] = Σ_rows dZ, rows in order (float32), summed in a private buffer then stored, so the
    // threads never write the same cache line per row.
    private static unsafe void BiasGradColumns(ref BiasArgs a, int j0, int j1)
    {
        int w = j1 - j0;
        var outSum = new Span<float>(a.Bias + j0, w);
        Span<float> sum = w <= 4096 ? stackalloc float[w] : outSum;
        sum.Clear();
        for (int i = 0; i < a.Rows; i++) TensorPrimitives.Add(sum, new ReadOnlySpan<float>(a.Z + (long)i * a.C + j0, w), sum);
        if (w <= 4096) sum.CopyTo(outSum);
    }

    /// <summary>
    /// dW[out×in] = dZ[n×out]ᵀ · A[n×in];  db[out] = Σ_rows dZ;  dA[n×in] = dZ · W[out×in].
    /// dA is skipped when <paramref name="da"/> is empty (first layer: nobody needs ∂L/∂x). The first layer computes dW as
    /// (Aᵀ·dZ)ᵀ, the same terms in the same order: its input is the data, where whole groups of features are zero
    /// (image backgrounds), and in that form the product skips them (<see cref="MatMul.MultiplyTNStoreTransposed"/>).
    /// Gradients are overwritten, not accumulated. The bias add (by rows) and db (by columns) run split over the
    /// MatMul's threads when large enough; the results do not depend on the split.
    /// </summary>
    public unsafe void Backward(MatMul matMul, ReadOnlySpan<float> dz, ReadOnlySpan<float> a, ReadOnlySpan<float> weight,
        Span<float> dWeight, Span<float> dBias, Span<float> da, int rows)
    {
        if (da.IsEmpty) matMul.MultiplyTNStoreTransposed(a, dz, dWeight, Inputs, Outputs, rows);
        else matMul.MultiplyTN(dz, a, dWeight, Outputs, Inputs, rows);
        if (HasBias)
        {
            if (dBias.Length < Outputs || dz.Length < (long)rows * Outputs) throw new ArgumentException($"dBias holds {dBias.Length} of {Outputs} values or dz {dz.Length} of {(long)rows * Outputs}");
            fixed (float* pdz = dz) fixed (float* pdb = dBias)
            {
                // Per-column sums keep their row order: split by columns (≥ 64 per share; the 10-wide output stays whole).
                var args = new BiasArgs { Z = pdz, Bias = pdb, Rows = rows, C = Outputs };
                matMul.ParallelFor(Outputs, (long)rows * Outputs, ref args, &BiasGradColumns, align: 16, minPerPart: 64);
            }
        }
        if (!da.IsEmpty) matMul.MultiplyNN(dz, weight, da, rows, Inputs, Outputs);
    }
}
