using System.Numerics.Tensors;
using BnCluster.Core.Model;

namespace BnCluster.Core.Layers;

/// <summary>Element-wise activations. Backward uses the forward OUTPUT a (all three derivatives are functions of it).</summary>
public static class ActivationLayer
{
    /// <summary>a[len] = g(z[len]): relu max(z,0), tanh, sigmoid 1/(1+e^−z).</summary>
    public static void Forward(Activation kind, ReadOnlySpan<float> z, Span<float> a)
    {
        switch (kind)
        {
            case Activation.Relu: TensorPrimitives.Max(z, 0f, a); break;
            case Activation.Tanh: TensorPrimitives.Tanh(z, a); break;
            case Activation.Sigmoid: TensorPrimitives.Sigmoid(z, a); break;
            default: throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown activation");
        }
    }

    /// <summary>dz = da ⊙ g'(z): relu [a&gt;0], tanh 1−a², sigmoid a(1−a); all from the output a.</summary>
    public static void Backward(Activation kind, ReadOnlySpan<float> a, ReadOnlySpan<float> da, Span<float> dz)
    {
        int n = a.Length;
        switch (kind)
        {
            case Activation.Relu:
                for (int i = 0; i < n; i++) dz[i] = a[i] > 0f ? da[i] : 0f;
                break;
            case Activation.Tanh:
                for (int i = 0; i < n; i++) dz[i] = da[i] * (1f - a[i] * a[i]);
                break;
            case Activation.Sigmoid:
                for (int i = 0; i < n; i++) dz[i] = da[i] * a[i] * (1f - a[i]);
                break;
            default: throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown activation");
        }
    }

    public static string Name(Activation kind) => kind switch
    {
        Activation.Relu => "relu",
        Activation.Tanh => "tanh",
        Activation.Sigmoid => "sigmoid",
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    public static Activation Parse(string name) => name switch
    {
        "relu" => Activation.Relu,
        "tanh" => Activation.Tanh,
        "sigmoid" => Activation.Sigmoid,
        _ => throw new FormatException($"unknown activation '{name}' (expected relu, tanh or sigmoid)"),
    };
}
