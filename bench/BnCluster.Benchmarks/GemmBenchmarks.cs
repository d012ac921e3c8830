using BenchmarkDotNet.Attributes;

namespace BnCluster.Benchmarks;

/// <summary>
/// The three dense-layer products at the training shapes of the 784-512-256-10 net (batch 256 and a
/// 64-row shard) plus 1024³. Shape strings are "m×n×k" of C[m×n] = op(A)·op(B) over depth k.
/// Run: dotnet run -c Release --project bench/BnCluster.Benchmarks -- --filter '*Gemm*'
/// </summary>
[MemoryDiagnoser]
public class GemmBenchmarks
{
    private MatMul _mm = null!;
    private float[] _a = null!, _b = null!, _c = null!;
    private int _m, _n, _k;

    [Params(1, 2)]
    public int Threads { get; set; }

    [Params("256x512x784", "256x256x512", "256x10x256", "64x512x784", "1024x1024x1024")]
    public string Shape { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        int[] dims = Shape.Split('x').Select(int.Parse).ToArray();
        (_m, _n, _k) = (dims[0], dims[1], dims[2]);
        var rng = new Random(1);
        // Every product reads at most max(m,n)·k elements of A and B; one size fits all three layouts.
        _a = Enumerable.Range(0, _m * _k).Select(_ => (float)rng.NextDouble()).ToArray();
        _b = Enumerable.Range(0, _k * _n).Select(_ => (float)rng.NextDouble()).ToArray();
        _c = new float[_m * _n];
        _mm = new MatMul(Threads);
    }

    [GlobalCleanup]
    public void Cleanup() => _mm.Dispose();

    /// <summary>Forward Z = A·Wᵀ (m = batch, n = out, k = in).</summary>
    [Benchmark]
    public void ForwardNT() => _mm.MultiplyNT(_a, _b, _c, _m, _n, _k);

    /// <summary>Weight grad dW = dZᵀ·A read as C[m×n] = A[k×m]ᵀ·B[k×n] (m = out, n = in, k = batch).</summary>
    [Benchmark]
    public void WeightGradTN() => _mm.MultiplyTN(_a, _b, _c, _m, _n, _k);

    /// <summary>Input grad dA = dZ·W (m = batch, n = in, k = out).</summary>
    [Benchmark]
    public void InputGradNN() => _mm.MultiplyNN(_a, _b, _c, _m, _n, _k);
}
