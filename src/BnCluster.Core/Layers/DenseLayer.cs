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
    public void Forward(MatMul matMul, ReadOnlySpan<float> a, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, Span<float> z, int rows)
    {
        matMul.MultiplyNT(a, weight, z, rows, Outputs, Inputs);
        if (!HasBias) return;
        for (int i = 0; i < rows; i++)
        {
            var row = z.Slice(i * Outputs, Outputs);
            TensorPrimitives.Add(row, bias, row);
        }
    }

    /// <summary>
    /// dW[out×in] = dZ[n×out]ᵀ · A[n×in];  db[out] = Σ_rows dZ;  dA[n×in] = dZ · W[out×in].
    /// dA is skipped when <paramref name="da"/> is empty (first layer: nobody needs ∂L/∂x).
    /// Gradients are overwritten, not accumulated.
    /// </summary>
    public void Backward(MatMul matMul, ReadOnlySpan<float> dz, ReadOnlySpan<float> a, ReadOnlySpan<float> weight,
        Span<float> dWeight, Span<float> dBias, Span<float> da, int rows)
    {
        matMul.MultiplyTN(dz, a, dWeight, Outputs, Inputs, rows);
        if (HasBias)
        {
            dBias.Slice(0, Outputs).Clear();
            for (int i = 0; i < rows; i++) TensorPrimitives.Add(dBias, dz.Slice(i * Outputs, Outputs), dBias);
        }
        if (!da.IsEmpty) matMul.MultiplyNN(dz, weight, da, rows, Inputs, Outputs);
    }
}
