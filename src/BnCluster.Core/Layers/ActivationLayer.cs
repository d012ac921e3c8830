using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using BnCluster.Core.Kernels;
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

    /// <summary>
    /// dz = da ⊙ g'(z): relu [a&gt;0], tanh 1−a², sigmoid a(1−a); all from the output a. Vectorized with the
    /// scalar form's operations and order, so results do not depend on the vector width.
    /// </summary>
    public static void Backward(Activation kind, ReadOnlySpan<float> a, ReadOnlySpan<float> da, Span<float> dz)
    {
        int n = a.Length, i = 0;
        if (da.Length < n || dz.Length < n) throw new ArgumentException($"activation backward over {n} values got {da.Length} gradients and {dz.Length} outputs");
        ref float ar = ref MemoryMarshal.GetReference(a);
        ref float dar = ref MemoryMarshal.GetReference(da);
        ref float dzr = ref MemoryMarshal.GetReference(dz);
        int last = Vector256.IsHardwareAccelerated ? n - Vector256<float>.Count : -1;
        var one = Vector256.Create(1f);
        switch (kind)
        {
            case Activation.Relu:
                for (; i <= last; i += Vector256<float>.Count)
                {
                    var av = Vector256.LoadUnsafe(ref ar, (nuint)i);
                    Vector256.ConditionalSelect(Vector256.GreaterThan(av, Vector256<float>.Zero), Vector256.LoadUnsafe(ref dar, (nuint)i), Vector256<float>.Zero)
                        .StoreUnsafe(ref dzr, (nuint)i);
                }
                for (; i < n; i++) dz[i] = a[i] > 0f ? da[i] : 0f;
                break;
            case Activation.Tanh:
                for (; i <= last; i += Vector256<float>.Count)
                {
                    var av = Vector256.LoadUnsafe(ref ar, (nuint)i);
                    (Vector256.LoadUnsafe(ref dar, (nuint)i) * (one - av * av)).StoreUnsafe(ref dzr, (nuint)i);
                }
                for (; i < n; i++) dz[i] = da[i] * (1f - a[i] * a[i]);
                break;
            case Activation.Sigmoid:
                for (; i <= last; i += Vector256<float>.Count)
                {
                    var av = Vector256.LoadUnsafe(ref ar, (nuint)i);
                    (Vector256.LoadUnsafe(ref dar, (nuint)i) * av * (one - av)).StoreUnsafe(ref dzr, (nuint)i);
                }
                for (; i < n; i++) dz[i] = da[i] * a[i] * (1f - a[i]);
                break;
            default: throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown activation");
        }
    }

    private unsafe struct ElementArgs
    {
        public float* A, B, Out;
        public Activation Kind;
    }

    // Shares of whole cache lines and at least 4096 elements: no thread shares a line, and no share is so short that
    // TensorPrimitives would take a scalar path where the whole span took a vector one (tanh, sigmoid).
    private const int ElementAlign = 16, MinElementsPerPart = 4096;

    /// <summary>
    /// <see cref="Forward(Activation, ReadOnlySpan{float}, Span{float})"/> split by element ranges over the threads of
    /// <paramref name="parallel"/> (null: the caller alone); every element is independent, so the result is the same.
    /// </summary>
    public static unsafe void Forward(Activation kind, ReadOnlySpan<float> z, Span<float> a, MatMul? parallel)
    {
        if (parallel is null || a.Length < z.Length)
        {
            Forward(kind, z, a);
            return;
        }
        fixed (float* pz = z) fixed (float* pa = a)
        {
            var args = new ElementArgs { A = pz, Out = pa, Kind = kind };
            parallel.ParallelFor(z.Length, z.Length, ref args, &ForwardRange, ElementAlign, MinElementsPerPart);
        }
    }

    private static unsafe void ForwardRange(ref ElementArgs p, int start, int end) =>
        Forward(p.Kind, new ReadOnlySpan<float>(p.A + start, end - start), new Span<float>(p.Out + start, end - start));

    /// <summary>
    /// <see cref="Backward(Activation, ReadOnlySpan{float}, ReadOnlySpan{float}, Span{float})"/> split by element ranges
    /// over the threads of <paramref name="parallel"/> (null: the caller alone); the same result.
    /// </summary>
    public static unsafe void Backward(Activation kind, ReadOnlySpan<float> a, ReadOnlySpan<float> da, Span<float> dz, MatMul? parallel)
    {
        int n = a.Length;
        if (parallel is null || da.Length < n || dz.Length < n)
        {
            Backward(kind, a, da, dz);
            return;
        }
        fixed (float* pa = a) fixed (float* pda = da) fixed (float* pdz = dz)
        {
            var args = new ElementArgs { A = pa, B = pda, Out = pdz, Kind = kind };
            parallel.ParallelFor(n, n, ref args, &BackwardRange, ElementAlign, MinElementsPerPart);
        }
    }

    private static unsafe void BackwardRange(ref ElementArgs p, int start, int end)
    {
        int n = end - start;
        Backward(p.Kind, new ReadOnlySpan<float>(p.A + start, n), new ReadOnlySpan<float>(p.B + start, n), new Span<float>(p.Out + start, n));
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
