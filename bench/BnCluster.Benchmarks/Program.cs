using System.Diagnostics;
using System.Globalization;
using BenchmarkDotNet.Running;

namespace BnCluster.Benchmarks;

public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "gemm")
        {
            try
            {
                QuickGemm.Run(args.AsSpan(1));
                return 0;
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine(e.Message);
                return 2;
            }
        }
        if (args.Length > 0 && args[0] == "step")
        {
            try
            {
                StepBench.Run(args.AsSpan(1));
                return 0;
            }
            catch (Exception e) when (e is ArgumentException or BnCluster.Core.Data.DatasetException)
            {
                Console.Error.WriteLine(e.Message);
                return 2;
            }
        }
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }
}

/// <summary>
/// `-- gemm [--json] [--shape MxNxK] [--threads T]`: a quick Stopwatch measurement, GFLOP/s per
/// product, shape and thread count. `--json` prints one JSON object per line (the shapes that
/// bench/compare.sh sets against numpy/OpenBLAS); `--shape` and `--threads` select a subset.
/// </summary>
internal static class QuickGemm
{
    // The products of the 784-512-256-10 net at batch 256 ("m×n×k" of C[m×n] = op(A)·op(B)), and 1024³.
    private static readonly (string Op, int M, int N, int K)[] MainShapes =
    [
        ("NT", 256, 512, 784), ("TN", 512, 784, 256), ("NN", 256, 784, 512), ("NN", 1024, 1024, 1024),
    ];

    // The second hidden layer's products at batch 256 (forward, weight gradient, input gradient): a third of the
    // step's multiply-adds, on shapes small enough that packing and the split between threads show.
    private static readonly (string Op, int M, int N, int K)[] SecondLayerShapes =
    [
        ("NT", 256, 256, 512), ("TN", 256, 512, 256), ("NN", 256, 512, 256),
        ("NT", 256, 10, 256), ("TN", 10, 256, 256), ("NN", 256, 256, 10),
    ];

    // Smaller products of a 64-row shard and the tiny output layer, where waking the pool costs
    // a noticeable share (this is what the parallel threshold in MatMul is chosen from).
    private static readonly (string Op, int M, int N, int K)[] SmallShapes =
    [
        ("NT", 64, 512, 784), ("NT", 64, 256, 512), ("NT", 64, 10, 256),
        ("NN", 32, 64, 64), ("NN", 64, 64, 128), ("NN", 64, 128, 256),
    ];

    public static void Run(ReadOnlySpan<string> args)
    {
        bool json = false;
        string? shape = null;
        int[] threadCounts = [1, 2];
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--json": json = true; break;
                case "--shape" when i + 1 < args.Length: shape = args[++i]; break;
                case "--threads" when i + 1 < args.Length && int.TryParse(args[i + 1], out int t) && t > 0:
                    threadCounts = [t]; i++; break;
                default:
                    throw new ArgumentException(
                        $"gemm: unknown or incomplete argument '{args[i]}' (expected --json, --shape MxNxK, --threads T)");
            }
        }

        var groups = json ? new[] { MainShapes } : new[] { MainShapes, SecondLayerShapes, SmallShapes };
        if (shape is not null)
        {
            var chosen = MainShapes.Concat(SecondLayerShapes).Concat(SmallShapes).Where(s => $"{s.M}x{s.N}x{s.K}" == shape).ToArray();
            if (chosen.Length == 0)
                throw new ArgumentException($"gemm: --shape '{shape}' is none of the measured shapes (MxNxK, e.g. 256x784x512)");
            groups = [chosen];
        }

        if (!json)
        {
            using (var probe = new MatMul()) Console.WriteLine($"kernel: {probe.KernelName}");
            Console.WriteLine("product  m×n×k            threads  GFLOP/s");
        }
        for (int g = 0; g < groups.Length; g++)
        {
            if (g > 0 && !json) Console.WriteLine();
            foreach (int threads in threadCounts)
            {
                using var mm = new MatMul(threads);
                foreach (var (op, m, n, k) in groups[g])
                {
                    double gflops = Measure(mm, op, m, n, k);
                    Console.WriteLine(json
                        ? string.Create(CultureInfo.InvariantCulture,
                            $"{{\"impl\": \"bncluster\", \"product\": \"{op}\", \"shape\": \"{m}x{n}x{k}\", \"threads\": {mm.Threads}, \"gflops\": {gflops:F2}, \"kernel\": \"{mm.KernelName}\"}}")
                        : $"{op,-8} {$"{m}×{n}×{k}",-16} {mm.Threads,7}  {gflops,7:F1}");
                }
            }
        }
    }

    private static double Measure(MatMul mm, string op, int m, int n, int k)
    {
        var rng = new Random(1);
        float[] a = RandomArray(rng, m * k), b = RandomArray(rng, k * n), c = new float[m * n];
        void Once()
        {
            switch (op)
            {
                case "NT": mm.MultiplyNT(a, b, c, m, n, k); break;
                case "TN": mm.MultiplyTN(a, b, c, m, n, k); break;
                default: mm.MultiplyNN(a, b, c, m, n, k); break;
            }
        }
        double flop = 2.0 * m * n * k;
        // Warm up (JIT tiers, buffers), then keep the best of 15 short rounds (~60 ms each): the
        // machine is shared, and the best round is the one least disturbed by other processes.
        for (int i = 0; i < 5; i++) Once();
        int reps = Math.Max(1, (int)(6e9 / flop));
        double best = 0;
        for (int round = 0; round < 15; round++)
        {
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < reps; i++) Once();
            sw.Stop();
            best = Math.Max(best, flop * reps / sw.Elapsed.TotalSeconds / 1e9);
        }
        return best;
    }

    private static float[] RandomArray(Random rng, int length)
    {
        var x = new float[length];
        for (int i = 0; i < length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }
}
