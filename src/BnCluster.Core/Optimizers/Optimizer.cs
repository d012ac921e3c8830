using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using BnCluster.Core.Kernels;
using BnCluster.Core.Training;

namespace BnCluster.Core.Optimizers;

public enum OptimizerKind { Gd, Momentum, RmsProp, Adam }

/// <summary>Optimizer settings (docs/design.md, "The math"; defaults: β1 0.9, β2 0.999, ε 1e-8).</summary>
public sealed record OptimizerSettings(OptimizerKind Kind, float LearningRate, float Beta1 = 0.9f, float Beta2 = 0.999f, float Epsilon = 1e-8f)
{
    public static OptimizerKind ParseKind(string name) => name.ToLowerInvariant() switch
    {
        "gd" or "sgd" => OptimizerKind.Gd,
        "momentum" => OptimizerKind.Momentum,
        "rmsprop" => OptimizerKind.RmsProp,
        "adam" => OptimizerKind.Adam,
        _ => throw new FormatException($"unknown optimizer '{name}' (expected gd, momentum, rmsprop or adam)"),
    };
}

/// <summary>
/// Where an update also writes each trainable tensor's new values, range by range while they are still in cache
/// (the coordinator's shared-memory files of worker processes), instead of a second pass that reads them again.
/// </summary>
public unsafe interface IParameterMirror
{
    /// <summary>The destination of trainable tensor <paramref name="index"/>, which has <paramref name="length"/> values.</summary>
    float* Trainable(int index, int length);
}

/// <summary>
/// A further rank's gradients that an update adds to the partial sum as it reads it (the coordinator's shared-memory
/// files of the last worker processes to finish), instead of a separate pass that writes the sum first.
/// </summary>
public unsafe interface IGradientAddend
{
    /// <summary>The gradient of trainable tensor <paramref name="index"/>, which has <paramref name="length"/> values.</summary>
    float* Gradient(int index, int length);
}

/// <summary>
/// The course-form optimizers (docs/design.md, "The math"), t = committed step counted from 1:
///   gd        p −= α g
///   momentum  v = β1 v + (1−β1) g;  p −= α v           (note: not torch's v = μ v + g)
///   rmsprop   s = β2 s + (1−β2) g²; p −= α g / (sqrt(s) + ε)
///   adam      v, s as above;        p −= α (v/(1−β1^t)) / (sqrt(s/(1−β2^t)) + ε)
/// State (v, s) is allocated once per trainable tensor. Applies to every tensor of
/// <see cref="Parameters.Trainable"/> (W, biases, γ, β, W_out, b_out); running statistics are not trained.
/// </summary>
public sealed class Optimizer
{
    private readonly float[][] _v;
    private readonly float[][] _s;

    public Optimizer(OptimizerSettings settings, Parameters shape)
    {
        if (!(settings.LearningRate > 0) || !float.IsFinite(settings.LearningRate)) throw new ArgumentOutOfRangeException(nameof(settings), $"learning rate must be positive, got {settings.LearningRate}");
        if (settings.Beta1 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(settings), $"beta1 must be in [0, 1), got {settings.Beta1}");
        if (settings.Beta2 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(settings), $"beta2 must be in [0, 1), got {settings.Beta2}");
        Settings = settings;
        int count = shape.Trainable.Count;
        bool needsV = settings.Kind is OptimizerKind.Momentum or OptimizerKind.Adam;
        bool needsS = settings.Kind is OptimizerKind.RmsProp or OptimizerKind.Adam;
        _v = new float[count][];
        _s = new float[count][];
        for (int i = 0; i < count; i++)
        {
            int n = shape.Trainable[i].Values.Length;
            _v[i] = needsV ? new float[n] : [];
            _s[i] = needsS ? new float[n] : [];
        }
    }

    public OptimizerSettings Settings { get; }

    /// <summary>Committed steps so far (t of the last update).</summary>
    public long Step { get; private set; }

    /// <summary>First-moment state per trainable tensor (empty for gd/rmsprop); for checkpoints.</summary>
    public IReadOnlyList<float[]> FirstMoments => _v;
    /// <summary>Second-moment state per trainable tensor (empty for gd/momentum).</summary>
    public IReadOnlyList<float[]> SecondMoments => _s;

    /// <summary>Restores the step counter (checkpoint resume).</summary>
    public void SetStep(long step) => Step = step >= 0 ? step : throw new ArgumentOutOfRangeException(nameof(step));

    /// <summary>One update of every trainable tensor of <paramref name="p"/> with the (global, summed) gradients <paramref name="g"/>.</summary>
    public void Apply(Parameters p, Gradients g) => Apply(p, g, null);

    /// <summary>
    /// The same update with Adam split by element ranges over the threads of <paramref name="parallel"/> (the step's
    /// <see cref="MatMul"/>; null runs on the caller). Every element's update is independent, so the result is
    /// bit-identical for any number of threads.
    /// </summary>
    public void Apply(Parameters p, Gradients g, MatMul? parallel) => Apply(p, g, parallel, []);

    /// <summary>
    /// The same update, also writing every updated tensor into each of <paramref name="mirrors"/> (Adam: block by
    /// block as the update produces it; the other optimizers after each tensor). The parameters are the same.
    /// </summary>
    public void Apply(Parameters p, Gradients g, MatMul? parallel, IReadOnlyList<IParameterMirror> mirrors) =>
        Apply(p, g, parallel, mirrors, [], overwrite: false, out _);

    /// <summary>
    /// Adam with the gradient completed block by block as the update reads it: gradient = (g + a₀) + a₁ + … over
    /// <paramref name="addends"/> in their order, or with <paramref name="overwrite"/> (g holds nothing yet)
    /// (a₀ + 0) + a₁ + … — the additions of <c>SharedTensorRegion.TryAddGradients</c> (BnCluster.Collectives), element for
    /// element, so the update is bit-identical to summing first; g is not written. <paramref name="gradientFinite"/>
    /// is false when a completed gradient held NaN or ±∞ (the update then used it: callers check the addends first).
    /// Without addends this is the plain update (and <paramref name="overwrite"/> is ignored).
    /// </summary>
    public unsafe void Apply(Parameters p, Gradients g, MatMul? parallel, IReadOnlyList<IParameterMirror> mirrors,
        IReadOnlyList<IGradientAddend> addends, bool overwrite, out bool gradientFinite)
    {
        if (p.Trainable.Count != _v.Length || g.Tensors.Count != _v.Length) throw new ArgumentException("parameters or gradients of another network shape");
        if (mirrors.Count > MaxMirrors) throw new ArgumentException($"{mirrors.Count} parameter mirrors, at most {MaxMirrors}");
        if (addends.Count > MaxAddends) throw new ArgumentException($"{addends.Count} gradient addends, at most {MaxAddends}");
        if (addends.Count > 0 && Settings.Kind != OptimizerKind.Adam) throw new ArgumentException($"gradient addends are read by Adam only, not {Settings.Kind}");
        nint* destinations = stackalloc nint[MaxMirrors];
        nint* sources = stackalloc nint[MaxAddends];
        int nonFinite = 0;
        long t = ++Step;
        float b1 = Settings.Beta1, b2 = Settings.Beta2, eps = Settings.Epsilon;
        var (k1, k2) = AdamScalars(Settings, t);
        for (int i = 0; i < _v.Length; i++)
        {
            var w = p.Trainable[i].Values;
            var grad = g.Tensors[i].Values;
            if (grad.Length != w.Length) throw new ArgumentException($"gradient {g.Tensors[i].Name} has {grad.Length} values, parameter has {w.Length}");
            var v = _v[i];
            var s = _s[i];
            for (int k = 0; k < mirrors.Count; k++) destinations[k] = (nint)mirrors[k].Trainable(i, w.Length);
            for (int k = 0; k < addends.Count; k++) sources[k] = (nint)addends[k].Gradient(i, w.Length);
            switch (Settings.Kind)
            {
                case OptimizerKind.Gd:
                case OptimizerKind.Momentum:
                case OptimizerKind.RmsProp:
                    fixed (float* pw = w) fixed (float* pg = grad) fixed (float* pv = v) fixed (float* ps = s)
                        ScalarRange(Settings, pg, pw, pv, ps, pw, pv, ps, w.Length);
                    break;
                case OptimizerKind.Adam:
                    if (v.Length < w.Length || s.Length < w.Length) throw new ArgumentException("Adam state shorter than its parameter");
                    AdamTensor(parallel, w, grad, v, s, b1, b2, eps, k1, k2, (float**)destinations, mirrors.Count,
                        (float**)sources, addends.Count, overwrite, &nonFinite);
                    continue; // (mirrored as it went)
                default:
                    throw new InvalidOperationException($"unknown optimizer {Settings.Kind}");
            }
            for (int k = 0; k < mirrors.Count; k++) w.AsSpan().CopyTo(new Span<float>((float*)destinations[k], w.Length));
        }
        gradientFinite = nonFinite == 0;
    }

    /// <summary>
    /// Adam's bias corrections at committed step t folded into two float32 scalars: k1 = α/(1 − β1^t) and
    /// k2 = 1/sqrt(1 − β2^t), so that α (v/(1−β1^t)) / (sqrt(s/(1−β2^t)) + ε) = k1·v / (sqrt(s)·k2 + ε) costs one division
    /// and one square root per element instead of three divisions and one: the divider bounded the update (a third
    /// slower than the same loop with neither). Only the rounding differs from the course form.
    /// </summary>
    private static (float K1, float K2) AdamScalars(OptimizerSettings settings, long t) =>
        ((float)(settings.LearningRate / (1 - Math.Pow(settings.Beta1, t))), (float)(1 / Math.Sqrt(1 - Math.Pow(settings.Beta2, t))));

    /// <summary>
    /// One update of <paramref name="n"/> elements out of place (a worker process's slice of a sharded update): the
    /// formulas and operation order of <see cref="Apply(Parameters, Gradients, MatMul?, IReadOnlyList{IParameterMirror}, IReadOnlyList{IGradientAddend}, bool, out bool)"/>,
    /// reading (w, v, s) at wIn, vIn, sIn and writing them at wOut, vOut, sOut (the state of the next committed step),
    /// so each element gets the bits the coordinator's update would give it. <paramref name="t"/> is the committed step
    /// the update makes (from 1). v and s are not touched by the optimizers that keep no such state (may be null).
    /// </summary>
    public static unsafe void UpdateRange(OptimizerSettings settings, long t, float* g, float* wIn, float* vIn, float* sIn,
        float* wOut, float* vOut, float* sOut, int n)
    {
        if (settings.Kind != OptimizerKind.Adam)
        {
            ScalarRange(settings, g, wIn, vIn, sIn, wOut, vOut, sOut, n);
            return;
        }
        var (k1, k2) = AdamScalars(settings, t);
        var args = new AdamArgs
        {
            W = wOut, V = vOut, S = sOut, WIn = wIn, VIn = vIn, SIn = sIn,
            B1 = settings.Beta1, B2 = settings.Beta2, Eps = settings.Epsilon, K1 = k1, K2 = k2,
        };
        AdamBlock(ref args, g, 0, n);
    }

    /// <summary>gd, momentum and rmsprop over n elements, in place when the in and out pointers are the same.</summary>
    private static unsafe void ScalarRange(OptimizerSettings settings, float* g, float* wIn, float* vIn, float* sIn,
        float* wOut, float* vOut, float* sOut, int n)
    {
        float lr = settings.LearningRate, b1 = settings.Beta1, b2 = settings.Beta2, eps = settings.Epsilon;
        switch (settings.Kind)
        {
            case OptimizerKind.Gd:
                for (int j = 0; j < n; j++) wOut[j] = wIn[j] - lr * g[j];
                break;
            case OptimizerKind.Momentum:
                for (int j = 0; j < n; j++)
                {
                    vOut[j] = b1 * vIn[j] + (1 - b1) * g[j];
                    wOut[j] = wIn[j] - lr * vOut[j];
                }
                break;
            case OptimizerKind.RmsProp:
                for (int j = 0; j < n; j++)
                {
                    sOut[j] = b2 * sIn[j] + (1 - b2) * g[j] * g[j];
                    wOut[j] = wIn[j] - lr * g[j] / (MathF.Sqrt(sOut[j]) + eps);
                }
                break;
            default:
                throw new InvalidOperationException($"no scalar update for {settings.Kind}");
        }
    }

    /// <summary>Parameter mirrors one update can write (one per worker process on the coordinator's machine).</summary>
    public const int MaxMirrors = 64;

    /// <summary>Gradient addends one update reads (the last worker processes to finish).</summary>
    public const int MaxAddends = 64;

    // Adam elements per block when mirroring: the block's new values are copied out while in L1 (4 arrays × 8 KB).
    private const int MirrorBlock = 2048;

    private unsafe struct AdamArgs
    {
        public float* W, G, V, S;       // W, V, S: where the new values go
        public float* WIn, VIn, SIn;    // and the old ones (the same pointers for an update in place)
        public float B1, B2, Eps, K1, K2; // K1, K2: AdamScalars
        public float** Mirrors;
        public int MirrorCount;
        public float** Addends;
        public int AddendCount;
        public int Overwrite;
        public int* NonFinite; // set by any range whose completed gradient held NaN or ±∞ (all write the same 1)
    }

    private static unsafe void AdamTensor(MatMul? parallel, float[] w, float[] g, float[] v, float[] s,
        float b1, float b2, float eps, float k1, float k2, float** mirrors, int mirrorCount,
        float** addends, int addendCount, bool overwrite, int* nonFinite)
    {
        fixed (float* pw = w) fixed (float* pg = g) fixed (float* pv = v) fixed (float* ps = s)
        {
            var args = new AdamArgs
            {
                W = pw, G = pg, V = pv, S = ps, WIn = pw, VIn = pv, SIn = ps, B1 = b1, B2 = b2, Eps = eps, K1 = k1, K2 = k2, Mirrors = mirrors, MirrorCount = mirrorCount,
                Addends = addends, AddendCount = addendCount, Overwrite = overwrite ? 1 : 0, NonFinite = nonFinite,
            };
            // Cut at multiples of 16 elements (one cache line) so the threads never share a line.
            if (parallel is null) AdamRange(ref args, 0, w.Length);
            else parallel.ParallelFor(w.Length, w.Length, ref args, &AdamRange, align: 16, minPerPart: 4096);
        }
    }

    /// <summary>
    /// Adam on elements [start, end) of one tensor, block by block when the block's gradient is completed from the addends
    /// first (in L1) or its update is copied to the mirrors right after.
    /// </summary>
    private static unsafe void AdamRange(ref AdamArgs a, int start, int end)
    {
        if (a.MirrorCount == 0 && a.AddendCount == 0)
        {
            AdamBlock(ref a, a.G + start, start, end);
            return;
        }
        float* completed = stackalloc float[MirrorBlock];
        for (int at = start; at < end; at += MirrorBlock)
        {
            int blockEnd = Math.Min(end, at + MirrorBlock);
            float* gradient = a.G + at;
            if (a.AddendCount > 0)
            {
                CompleteGradient(ref a, at, blockEnd - at, completed);
                gradient = completed;
            }
            AdamBlock(ref a, gradient, at, blockEnd);
            var updated = new ReadOnlySpan<float>(a.W + at, blockEnd - at);
            for (int k = 0; k < a.MirrorCount; k++) updated.CopyTo(new Span<float>(a.Mirrors[k] + at, blockEnd - at));
        }
    }

    /// <summary>
    /// The gradient of elements [at, at + n): (g + a₀) + a₁ + … or, overwriting, (a₀ + 0) + a₁ + …, into
    /// <paramref name="into"/>; the same additions, in the same order, as summing the ranks' files into g first.
    /// </summary>
    private static unsafe void CompleteGradient(ref AdamArgs a, int at, int n, float* into)
    {
        var sum = new Span<float>(into, n);
        var first = new ReadOnlySpan<float>(a.Addends[0] + at, n);
        if (a.Overwrite != 0) TensorPrimitives.Add(first, 0f, sum);
        else TensorPrimitives.Add(new ReadOnlySpan<float>(a.G + at, n), first, sum);
        for (int k = 1; k < a.AddendCount; k++) TensorPrimitives.Add(sum, new ReadOnlySpan<float>(a.Addends[k] + at, n), sum);
        if (!TensorPrimitives.IsFiniteAll<float>(sum)) *a.NonFinite = 1;
    }

    /// <summary>
    /// Adam on elements [start, end) of one tensor (<paramref name="g"/>: the gradient of element start): v = β1 v + (1−β1) g; s = β2 s + (1−β2) g²;
    /// w −= k1·v / (sqrt(s)·k2 + ε) (<see cref="AdamScalars"/>).
    /// Vectorized across elements with the scalar formula's exact operation order and no fused multiply-add,
    /// so every element is bit-identical to the scalar loop (the tail runs it), whatever the range bounds. Adam
    /// touches every parameter each step, which made the scalar loop a quarter of a 784-512-256-10 step; with one
    /// division and one square root per element it streams its four arrays at nearly the speed of the same loop
    /// without either, so 256-bit vectors (as in the BN kernels) are enough.
    /// </summary>
    private static unsafe void AdamBlock(ref AdamArgs a, float* g, int start, int end)
    {
        float* w = a.W + start, v = a.V + start, s = a.S + start;
        float* wIn = a.WIn + start, vIn = a.VIn + start, sIn = a.SIn + start;
        int n = end - start, j = 0;
        float b1 = a.B1, b2 = a.B2, eps = a.Eps, k1 = a.K1, k2 = a.K2;
        float omb1 = 1 - b1, omb2 = 1 - b2;
        if (Vector256.IsHardwareAccelerated)
        {
            var vb1 = Vector256.Create(b1); var vomb1 = Vector256.Create(omb1);
            var vb2 = Vector256.Create(b2); var vomb2 = Vector256.Create(omb2);
            var vk1 = Vector256.Create(k1); var vk2 = Vector256.Create(k2); var veps = Vector256.Create(eps);
            for (; j <= n - Vector256<float>.Count; j += Vector256<float>.Count)
            {
                var gj = Vector256.Load(g + j);
                var vj = vb1 * Vector256.Load(vIn + j) + vomb1 * gj;
                var sj = vb2 * Vector256.Load(sIn + j) + vomb2 * gj * gj;
                vj.Store(v + j);
                sj.Store(s + j);
                var wj = Vector256.Load(wIn + j) - vk1 * vj / (Vector256.Sqrt(sj) * vk2 + veps);
                wj.Store(w + j);
            }
        }
        for (; j < n; j++)
        {
            v[j] = b1 * vIn[j] + omb1 * g[j];
            s[j] = b2 * sIn[j] + omb2 * g[j] * g[j];
            w[j] = wIn[j] - k1 * v[j] / (MathF.Sqrt(s[j]) * k2 + eps);
        }
    }
}
