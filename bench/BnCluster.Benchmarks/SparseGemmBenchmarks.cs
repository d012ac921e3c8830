using BenchmarkDotNet.Attributes;

namespace BnCluster.Benchmarks;

/// <summary>
/// The first layer's two products at batch 256 on an image-like input X[256×784] (28×28 pixels, each zero in a sample
/// with a probability that grows from 10% at the centre to 95% at the border, about half the values in all), with
/// the zero steps skipped (SkipZeros, as training runs them: MatMul's sparseA) or multiplied: the forward Z = X·Wᵀ
/// (NT 256×512×784) and the weight gradient dW = dZᵀ·X computed as Xᵀ·dZ and stored transposed (TNT 784×512×256).
/// Run: dotnet run -c Release --project bench/BnCluster.Benchmarks -- --filter '*SparseGemm*'
/// </summary>
[MemoryDiagnoser]
public class SparseGemmBenchmarks
{
    private const int Batch = 256, Pixels = 784, Side = 28, Outputs = 512;

    private MatMul _mm = null!;
    private float[] _x = null!, _w = null!, _z = null!, _dz = null!, _dw = null!;

    [Params(1, 2)]
    public int Threads { get; set; }

    [Params(false, true)]
    public bool SkipZeros { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        _x = new float[Batch * Pixels];
        for (int i = 0; i < Batch; i++)
            for (int p = 0; p < Pixels; p++)
            {
                double dr = (p / Side - (Side - 1) / 2.0) / (Side / 2.0), dc = (p % Side - (Side - 1) / 2.0) / (Side / 2.0);
                double zero = 0.1 + 0.85 * Math.Min(1, Math.Sqrt(dr * dr + dc * dc));
                _x[i * Pixels + p] = rng.NextDouble() < zero ? 0f : (float)rng.NextDouble();
            }
        _w = Enumerable.Range(0, Outputs * Pixels).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        _dz = Enumerable.Range(0, Batch * Outputs).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        _z = new float[Batch * Outputs];
        _dw = new float[Outputs * Pixels];
        _mm = new MatMul(Threads);
    }

    [GlobalCleanup]
    public void Cleanup() => _mm.Dispose();

    /// <summary>Z[256×512] = X·Wᵀ.</summary>
    [Benchmark]
    public void FirstLayerForwardNT() => _mm.MultiplyNT(_x, _w, _z, Batch, Outputs, Pixels, sparseA: SkipZeros);

    /// <summary>dW[512×784] = (Xᵀ·dZ)ᵀ.</summary>
    [Benchmark]
    public void FirstLayerWeightGradTNT() => _mm.MultiplyTNStoreTransposed(_x, _dz, _dw, Pixels, Outputs, Batch, sparseA: SkipZeros);
}
