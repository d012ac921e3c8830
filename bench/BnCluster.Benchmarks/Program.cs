using System.Diagnostics;
using BenchmarkDotNet.Running;
using BnCluster.Core.Kernels;

namespace BnCluster.Benchmarks;

public static class Program
{
    public static void Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "gemm")
        {
            QuickGemm.Run();
            return;
        }
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}

/// <summary>`-- gemm`: a quick Stopwatch measurement, GFLOP/s per product, shape and thread count.</summary>
internal static class QuickGemm
{
    public static void Run()
    {
        Console.WriteLine("product  m×n×k            threads  GFLOP/s");
        foreach (int threads in new[] { 1, 2 })
        {
            using var mm = new MatMul(threads);
            Measure(mm, "NT", 256, 512, 784);
            Measure(mm, "TN", 512, 784, 256);
            Measure(mm, "NN", 256, 784, 512);
            Measure(mm, "NN", 1024, 1024, 1024);
        }
        // Smaller products of a 64-row shard and the tiny output layer, where waking the pool costs
        // a noticeable share (this is what the parallel threshold in MatMul is chosen from).
        Console.WriteLine();
        foreach (int threads in new[] { 1, 2 })
        {
            using var mm = new MatMul(threads);
            Measure(mm, "NT", 64, 512, 784);
            Measure(mm, "NT", 64, 256, 512);
            Measure(mm, "NT", 64, 10, 256);
            Measure(mm, "NN", 32, 64, 64);
            Measure(mm, "NN", 64, 64, 128);
            Measure(mm, "NN", 64, 128, 256);
        }
    }

    private static void Measure(MatMul mm, string op, int m, int n, int k)
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
        Console.WriteLine($"{op,-8} {$"{m}×{n}×{k}",-16} {mm.Threads,7}  {best,7:F1}");
    }

    private static float[] RandomArray(Random rng, int length)
    {
        var x = new float[length];
        for (int i = 0; i < length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }
}
