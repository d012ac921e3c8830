using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
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
    /// <para>With an <paramref name="inputOffset"/> c[in], <paramref name="a"/> holds the input centred on it, A − 1·cᵀ
    /// (the first layer: the data minus the values of a stored 0, so the data's zeros stay zeros the GEMM skips), and
    /// Z = (A − 1·cᵀ)·Wᵀ + 1·(b + W·c)ᵀ, which is A·Wᵀ + b. <paramref name="offsetTerms"/>[out] receives b + W·c.</para>
    /// <para>With <paramref name="sparseInput"/> the product skips the depth steps where rows of the input are zero
    /// together (<see cref="MatMul"/>, sparseA): for the data (image backgrounds) and for ReLU outputs, whose zeros
    /// neighbouring rows share when the batch is ordered by zero pattern.</para>
    /// </summary>
    public unsafe void Forward(MatMul matMul, ReadOnlySpan<float> a, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, Span<float> z, int rows,
        ReadOnlySpan<float> inputOffset = default, Span<float> offsetTerms = default, bool sparseInput = false)
    {
        matMul.MultiplyNT(a, weight, z, rows, Outputs, Inputs, sparseA: sparseInput);
        bool offset = !inputOffset.IsEmpty;
        if (!HasBias && !offset) return;
        if (HasBias && bias.Length < Outputs) throw new ArgumentException($"bias holds {bias.Length} of {Outputs} values");
        if (z.Length < (long)rows * Outputs) throw new ArgumentException($"z holds {z.Length} of {(long)rows * Outputs} values");
        if (offset) CheckOffset(inputOffset, offsetTerms, weight.Length);
        fixed (float* pz = z) fixed (float* pb = bias) fixed (float* pw = weight) fixed (float* pc = inputOffset) fixed (float* pu = offsetTerms)
        {
            float* rowAdd = pb;
            if (offset)
            {
                // u[o] = b[o] + W[o,:]·c, one dot per output, split by outputs.
                var terms = new OffsetArgs { W = pw, Offset = pc, Bias = HasBias ? pb : null, Terms = pu, In = Inputs };
                matMul.ParallelFor(Outputs, (long)Outputs * Inputs, ref terms, &OffsetTermsRows, align: 1, minPerPart: 16);
                rowAdd = pu;
            }
            // Every row is independent: split by rows over the MatMul's threads (8 rows at least per share).
            var args = new BiasArgs { Z = pz, Bias = rowAdd, Rows = rows, C = Outputs };
            matMul.ParallelFor(rows, (long)rows * Outputs, ref args, &AddBiasRows, align: 1, minPerPart: 8);
        }
    }

    private void CheckOffset(ReadOnlySpan<float> inputOffset, Span<float> offsetTerms, int weightLength)
    {
        if (inputOffset.Length != Inputs || offsetTerms.Length < Outputs || weightLength < Inputs * Outputs)
            throw new ArgumentException($"input offset of {inputOffset.Length} values for {Inputs} inputs, offset terms of {offsetTerms.Length} for {Outputs} outputs, or weight of {weightLength} values");
    }

    private unsafe struct BiasArgs
    {
        public float* Z, Bias;
        public int Rows, C;
    }

    private unsafe struct OffsetArgs
    {
        public float* W, Offset, Bias, Terms;
        public int In;
    }

    // Outputs [o0, o1): Terms[o] = Bias[o] (when there is one) + W[o,:]·c.
    private static unsafe void OffsetTermsRows(ref OffsetArgs a, int o0, int o1)
    {
        var c = new ReadOnlySpan<float>(a.Offset, a.In);
        for (int o = o0; o < o1; o++)
            a.Terms[o] = (a.Bias is null ? 0f : a.Bias[o]) + TensorPrimitives.Dot(new ReadOnlySpan<float>(a.W + (long)o * a.In, a.In), c);
    }

    // Rows [o0, o1) of dW[out×in] += g[o] · c (g = Σ_rows dZ in Terms): the centred input's missing rank-1 term.
    private static unsafe void AddOffsetGradientRows(ref OffsetArgs a, int o0, int o1)
    {
        var c = new ReadOnlySpan<float>(a.Offset, a.In);
        for (int o = o0; o < o1; o++)
        {
            var row = new Span<float>(a.W + (long)o * a.In, a.In);
            TensorPrimitives.MultiplyAdd(c, a.Terms[o], row, row);
        }
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
        // Where AVX-512 runs, 64 columns at a time with the sums in registers (the same additions in the same order).
        if (Vector512.IsHardwareAccelerated)
            for (; j0 + 64 <= j1; j0 += 64) BiasGradBlock64(ref a, j0);
        if (j0 == j1) return;
        int w = j1 - j0;
        var outSum = new Span<float>(a.Bias + j0, w);
        Span<float> sum = w <= 4096 ? stackalloc float[w] : outSum;
        sum.Clear();
        for (int i = 0; i < a.Rows; i++) TensorPrimitives.Add(sum, new ReadOnlySpan<float>(a.Z + (long)i * a.C + j0, w), sum);
        if (w <= 4096) sum.CopyTo(outSum);
    }

    // Columns [j, j + 64) of BiasGradColumns: four registers of sums over the rows in order.
    private static unsafe void BiasGradBlock64(ref BiasArgs a, int j)
    {
        Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (int i = 0; i < a.Rows; i++)
        {
            float* row = a.Z + (long)i * a.C + j;
            s0 += Vector512.Load(row);
            s1 += Vector512.Load(row + 16);
            s2 += Vector512.Load(row + 32);
            s3 += Vector512.Load(row + 48);
        }
        float* sum = a.Bias + j;
        s0.Store(sum);
        s1.Store(sum + 16);
        s2.Store(sum + 32);
        s3.Store(sum + 48);
    }

    /// <summary>
    /// dW[out×in] = dZ[n×out]ᵀ · A[n×in];  db[out] = Σ_rows dZ;  dA[n×in] = dZ · W[out×in]: <see cref="BackwardInput"/>
    /// then <see cref="BackwardWeights"/>. dA is skipped when <paramref name="da"/> is empty (first layer: nobody needs
    /// ∂L/∂x); the input is then the data, whose zeros the weight product skips.
    /// </summary>
    public void Backward(MatMul matMul, ReadOnlySpan<float> dz, ReadOnlySpan<float> a, ReadOnlySpan<float> weight,
        Span<float> dWeight, Span<float> dBias, Span<float> da, int rows, ReadOnlySpan<float> inputOffset = default, Span<float> offsetTerms = default)
    {
        if (!inputOffset.IsEmpty && !da.IsEmpty) throw new ArgumentException("an input offset is for the first layer, which computes no input gradient");
        if (!da.IsEmpty) BackwardInput(matMul, dz, weight, da, rows);
        BackwardWeights(matMul, dz, a, dWeight, dBias, rows, inputIsData: da.IsEmpty, inputOffset, offsetTerms);
    }

    /// <summary>dA[n×in] = dZ[n×out] · W[out×in]. The step computes it first: the layer below needs it, the weight
    /// gradients can wait for the next batch-norm reduction to be in flight.</summary>
    public void BackwardInput(MatMul matMul, ReadOnlySpan<float> dz, ReadOnlySpan<float> weight, Span<float> da, int rows) =>
        matMul.MultiplyNN(dz, weight, da, rows, Inputs, Outputs);

    /// <summary>
    /// dW[out×in] = dZ[n×out]ᵀ · A[n×in];  db[out] = Σ_rows dZ. Overwritten, not accumulated. db (by columns) runs split
    /// over the MatMul's threads when large enough; the results do not depend on the split.
    /// <para>With <paramref name="inputIsData"/> (the first layer), dW is computed as (Aᵀ·dZ)ᵀ, the same terms in the same
    /// order: in that form the product skips the groups of input features that are zero together (image backgrounds;
    /// <see cref="MatMul.MultiplyTNStoreTransposed"/>).</para>
    /// <para>With an <paramref name="inputOffset"/> c (see <see cref="Forward"/>: <paramref name="a"/> is A − 1·cᵀ),
    /// dW = dZᵀ·(A − 1·cᵀ) + g·cᵀ with g = Σ_rows dZ, which is dZᵀ·A; <paramref name="offsetTerms"/>[out] receives g.</para>
    /// </summary>
    public unsafe void BackwardWeights(MatMul matMul, ReadOnlySpan<float> dz, ReadOnlySpan<float> a, Span<float> dWeight, Span<float> dBias, int rows,
        bool inputIsData, ReadOnlySpan<float> inputOffset = default, Span<float> offsetTerms = default)
    {
        bool offset = !inputOffset.IsEmpty;
        if (offset) CheckOffset(inputOffset, offsetTerms, dWeight.Length);
        if (inputIsData) matMul.MultiplyTNStoreTransposed(a, dz, dWeight, Inputs, Outputs, rows, sparseA: true);
        else matMul.MultiplyTN(dz, a, dWeight, Outputs, Inputs, rows);
        if (!HasBias && !offset) return;
        if (HasBias && dBias.Length < Outputs) throw new ArgumentException($"dBias holds {dBias.Length} of {Outputs} values");
        if (dz.Length < (long)rows * Outputs) throw new ArgumentException($"dz holds {dz.Length} of {(long)rows * Outputs} values");
        fixed (float* pdz = dz) fixed (float* pdb = dBias) fixed (float* pg = offsetTerms) fixed (float* pdw = dWeight) fixed (float* pc = inputOffset)
        {
            // Per-column sums keep their row order: split by columns (≥ 64 per share; the 10-wide output stays whole).
            var args = new BiasArgs { Z = pdz, Bias = HasBias ? pdb : pg, Rows = rows, C = Outputs };
            matMul.ParallelFor(Outputs, (long)rows * Outputs, ref args, &BiasGradColumns, align: 16, minPerPart: 64,
                minPerChunk: BatchNormLayer.ColumnsPerChunk);
            if (offset)
            {
                if (HasBias) dBias[..Outputs].CopyTo(offsetTerms);
                var rank1 = new OffsetArgs { W = pdw, Offset = pc, Terms = pg, In = Inputs };
                matMul.ParallelFor(Outputs, (long)Outputs * Inputs, ref rank1, &AddOffsetGradientRows, align: 1, minPerPart: 16);
            }
        }
    }
}
