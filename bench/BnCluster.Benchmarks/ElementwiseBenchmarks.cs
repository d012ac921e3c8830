using BenchmarkDotNet.Attributes;

namespace BnCluster.Benchmarks;

/// <summary>
/// The training step's element-wise kernels at the 784-512-256-10 net's first hidden layer (a batch of 256 rows × 512
/// features, BN before ReLU), in the order a step runs them, each on 1 and 2 threads (split by feature columns, as in
/// the step): the BN forward moments, the fused normalize + scale + shift + ReLU, the fused backward pass 1 (ReLU
/// backward + Σdy, Σdy·z_norm) and pass 2 (the input gradient); the softmax cross-entropy forward and backward of the
/// 256×10 logits; and Adam over all of the net's 536,586 parameters.
/// Run: dotnet run -c Release --project bench/BnCluster.Benchmarks -- --filter '*Elementwise*'
/// </summary>
[MemoryDiagnoser]
public class ElementwiseBenchmarks
{
    private const int Rows = 256, Features = 512, Classes = 10;

    private MatMul _mm = null!;
    private BatchNormLayer _bn = null!;
    private BatchNormStats _stats = null!;
    private BatchNormGradSums _sums = null!;
    private float[] _z = null!, _a = null!, _da = null!, _dy = null!, _dz = null!, _gamma = null!, _beta = null!, _meanF = null!, _invStdF = null!;
    private double[] _mean = null!, _invStd = null!, _scratch = null!;
    private float[] _logits = null!, _probs = null!, _dLogits = null!;
    private int[] _labels = null!;
    private Parameters _p = null!;
    private Gradients _g = null!;
    private Optimizer _adam = null!;

    [Params(1, 2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        float[] Uniform(int n, float scale) => Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();
        _mm = new MatMul(Threads);
        _bn = new BatchNormLayer(Features);
        _z = Uniform(Rows * Features, 3f);
        _da = Uniform(Rows * Features, 1f);
        _gamma = Uniform(Features, 1f);
        _beta = Uniform(Features, 0.5f);
        _a = new float[Rows * Features];
        _dy = new float[Rows * Features];
        _dz = new float[Rows * Features];
        _stats = new BatchNormStats(Features);
        _sums = new BatchNormGradSums(Features);
        _mean = new double[Features];
        _invStd = new double[Features];
        _meanF = new float[Features];
        _invStdF = new float[Features];
        _scratch = new double[3 * Features];
        // The moments and activations the later passes read, as the step would leave them.
        _bn.LocalStats(_z, Rows, _stats, _mm);
        _bn.PrepareNormalize(_stats, _mean, _invStd, _meanF, _invStdF);
        _bn.NormalizeActivate(Activation.Relu, _z, _meanF, _invStdF, _gamma, _beta, _a, Rows, _mm);
        _bn.ActivationBackwardGradSums(Activation.Relu, _a, _da, _z, _mean, _invStd, _dy, Rows, _sums, _mm);

        _logits = Uniform(Rows * Classes, 4f);
        _probs = new float[Rows * Classes];
        _dLogits = new float[Rows * Classes];
        _labels = Enumerable.Range(0, Rows).Select(_ => rng.Next(Classes)).ToArray();

        _p = Parameters.Initialize(new NetworkSpec(784, [512, 256], Classes, Activation.Relu, BatchNormPlacement.Before), 1);
        _g = new Gradients(_p);
        foreach (var t in _g.Tensors) Uniform(t.Values.Length, 1e-2f).CopyTo(t.Values, 0);
        _adam = new Optimizer(new OptimizerSettings(OptimizerKind.Adam, 1e-3f), _p);
    }

    [GlobalCleanup]
    public void Cleanup() => _mm.Dispose();

    /// <summary>Forward pass 1: this shard's (n, mean, M2) per feature of z[256×512], float64, two passes over the rows.</summary>
    [Benchmark]
    public void BnForwardMoments()
    {
        _stats.Clear();
        _bn.LocalStats(_z, Rows, _stats, _mm);
    }

    /// <summary>Forward pass 2, fused: a = ReLU(γ ⊙ (z − μ)·invStd + β), one pass over z.</summary>
    [Benchmark]
    public void BnNormalizeRelu() => _bn.NormalizeActivate(Activation.Relu, _z, _meanF, _invStdF, _gamma, _beta, _a, Rows, _mm);

    /// <summary>Backward pass 1, fused: dy = da ⊙ ReLU'(a), and Σdy, Σdy·z_norm per feature (float64).</summary>
    [Benchmark]
    public void BnBackwardReluSums()
    {
        _sums.Clear();
        _bn.ActivationBackwardGradSums(Activation.Relu, _a, _da, _z, _mean, _invStd, _dy, Rows, _sums, _mm);
    }

    /// <summary>Backward pass 2: dz = γ·invStd·(dy − Σdy/N − z_norm·Σ(dy·z_norm)/N).</summary>
    [Benchmark]
    public void BnInputGradient() => _bn.InputGradient(_dy, _z, _mean, _invStd, _sums, Rows, _gamma, _dz, Rows, _scratch, _mm);

    /// <summary>Softmax cross-entropy of the 256×10 logits, forward (loss, probabilities) and backward (dlogits); one thread.</summary>
    [Benchmark]
    public double SoftmaxCrossEntropyForwardBackward()
    {
        var (loss, _) = SoftmaxCrossEntropy.Forward(_logits, _labels, _probs, Rows, Classes);
        SoftmaxCrossEntropy.Backward(_probs, _labels, _dLogits, Rows, Classes, Rows);
        return loss;
    }

    /// <summary>One Adam update of all the net's parameters from fixed gradients.</summary>
    [Benchmark]
    public void Adam() => _adam.Apply(_p, _g, _mm);
}
