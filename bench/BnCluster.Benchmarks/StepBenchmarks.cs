using System.Diagnostics;
using BnCluster.Core.Data;

namespace BnCluster.Benchmarks;

/// <summary>
/// `-- step [--threads T] [--steps S] [--rounds R] [--dataset D]`: the single-node training step (LocalCollective) of the
/// 784-512-256-10 BN-before-ReLU net at batch 256 with Adam, on synthetic data, or with --dataset on that dataset's
/// normalized training split, side by side (rounds interleaved): as the normalized view training reads (its
/// input centred on the values of a stored 0, so the zero pixels are skipped by the GEMMs; each batch's rows
/// gathered in <see cref="Dataset.ZeroPatternRanks"/> order), the same view with the rows gathered as given, and a
/// float copy of the same values (no zeros to skip). Prints ms per step (best of R rounds of S steps, `--rounds R`, 5
/// by default), split in place into the dense
/// layers (GEMM + bias, <see cref="Workspace.DenseTicks"/>), the Adam update, and the rest (gather, BN, activations,
/// softmax CE, running stats); the step's eight products timed alone on random data for comparison; samples/s; GC
/// gen0 collections and bytes allocated (all threads) over 100 steady-state steps.
/// </summary>
internal static class StepBench
{
    private const int Batch = 256;

    public static void Run(ReadOnlySpan<string> args)
    {
        int[] threadCounts = [1, 2];
        int steps = 50, rounds = 5;
        string? dataset = null;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--threads" when i + 1 < args.Length && int.TryParse(args[i + 1], out int t) && t > 0:
                    threadCounts = [t]; i++; break;
                case "--steps" when i + 1 < args.Length && int.TryParse(args[i + 1], out int s) && s > 0:
                    steps = s; i++; break;
                case "--rounds" when i + 1 < args.Length && int.TryParse(args[i + 1], out int r) && r > 0:
                    rounds = r; i++; break;
                case "--dataset" when i + 1 < args.Length:
                    dataset = args[++i]; break;
                default:
                    throw new ArgumentException($"step: unknown or incomplete argument '{args[i]}' (expected --threads T, --steps S, --rounds R, --dataset D)");
            }
        }

        var spec = new NetworkSpec(784, [512, 256], 10, Activation.Relu, BatchNormPlacement.Before);
        var inputs = dataset is null ? [("synthetic", Synthetic(4096, spec.Inputs, spec.Classes), true)] : ViewAndCopy(dataset);
        if (inputs[0].Data.FeatureCount != spec.Inputs) throw new ArgumentException($"step: dataset '{dataset}' has {inputs[0].Data.FeatureCount} features, the benchmark's network {spec.Inputs}");
        Console.WriteLine("input                        threads  ms/step  dense ms  adam ms  other ms  other %  gemm-alone ms  samples/s  gen0/100  alloc B/100");
        var softmaxUs = new List<double>();
        foreach (int threads in threadCounts)
        {
            using var mm = new MatMul(threads);
            var runs = inputs.Select(input => new StepRun(spec, input.Name, input.Data, input.OrderRows, mm)).ToArray();
            foreach (var run in runs) run.Warm();
            // Best of the rounds each (the machine is shared: the best round is the least disturbed one), the inputs'
            // rounds interleaved so that a slow minute hits both.
            for (int round = 0; round < rounds; round++)
                foreach (var run in runs) run.Round(steps);
            double gemmMs = BestMs(GemmSequence(mm), steps);
            foreach (var run in runs)
            {
                var (gen0, allocated) = run.Steady();
                double otherMs = run.StepMs - run.DenseMs - run.AdamMs;
                Console.WriteLine($"{run.Name,-27}  {mm.Threads,7}  {run.StepMs,7:F3}  {run.DenseMs,8:F3}  {run.AdamMs,7:F3}  {otherMs,8:F3}  " +
                                  $"{100 * otherMs / run.StepMs,6:F1}%  {gemmMs,13:F3}  {Batch / run.StepMs * 1000,9:F0}  {gen0,8}  {allocated,11}");
            }
            // Softmax CE forward + backward of the step's 256×10 logits alone (scalar Math.Exp on 10 classes).
            var ws = runs[0].Workspace;
            var labels = ws.Labels.AsSpan(0, Batch).ToArray();
            softmaxUs.Add(1000 * BestMs(() =>
            {
                SoftmaxCrossEntropy.Forward(ws.Logits, labels, ws.Probs, Batch, spec.Classes);
                SoftmaxCrossEntropy.Backward(ws.Probs, labels, ws.DLogits, Batch, spec.Classes, Batch);
            }, steps));
        }
        Console.WriteLine($"softmax CE forward+backward alone: {softmaxUs.Min():F1} µs per step");
    }

    /// <summary>
    /// The normalized training split as training reads it, the same with the rows as given (when it has zero
    /// offsets), and a float copy of its values (no zero offsets).
    /// </summary>
    private static (string Name, Dataset Data, bool OrderRows)[] ViewAndCopy(string dataset)
    {
        var train = DatasetCatalog.Load(dataset, 1).Train;
        var view = InputNormalizer.Fit(train).Apply(train);
        var values = new float[(long)view.Count * view.FeatureCount];
        view.CopyRows(0, view.Count, values);
        var copy = new Dataset(view.Name, values, view.Labels, view.FeatureCount, view.ClassNames);
        if (view.ZeroOffsets is null) return [("view", view, true), ("float copy", copy, true)];
        return [("view (zeros, rows ordered)", view, true), ("view (zeros, rows as given)", view, false), ("float copy", copy, true)];
    }

    /// <summary>One model, workspace and optimizer stepping on one input; keeps its best round and that round's split.</summary>
    private sealed class StepRun
    {
        private readonly Parameters _p;
        private readonly Optimizer _opt;
        private readonly Dataset _data;
        private readonly MatMul _mm;
        private readonly int[] _rows = new int[Batch];
        private int _cursor;
        private long _adamTicks;

        public StepRun(NetworkSpec spec, string name, Dataset data, bool orderRows, MatMul mm)
        {
            Name = name;
            _data = data;
            _mm = mm;
            _p = Parameters.Initialize(spec, 42);
            _opt = new Optimizer(new OptimizerSettings(OptimizerKind.Adam, 1e-3f), _p);
            Workspace = new Workspace(_p, Batch, mm) { OrderRowsByZeroPattern = orderRows };
        }

        public string Name { get; }
        public Workspace Workspace { get; }
        public double StepMs { get; private set; } = double.MaxValue;
        public double DenseMs { get; private set; }
        public double AdamMs { get; private set; }

        private void Step()
        {
            for (int i = 0; i < Batch; i++) _rows[i] = (_cursor + i * 7) % _data.Count;
            _cursor = (_cursor + Batch) % _data.Count;
            var pending = TrainingStep.ForwardBackwardAsync(_p, Workspace, _data, _rows, Batch, LocalCollective.Instance);
            if (!pending.IsCompleted) throw new InvalidOperationException("the local collective should complete synchronously");
            pending.GetAwaiter().GetResult();
            long t0 = Stopwatch.GetTimestamp();
            _opt.Apply(_p, Workspace.Gradients, _mm);
            _adamTicks += Stopwatch.GetTimestamp() - t0;
            TrainingStep.UpdateRunningStats(_p, Workspace);
        }

        public void Warm()
        {
            for (int i = 0; i < 20; i++) Step(); // JIT, pool warm-up
        }

        public void Round(int steps)
        {
            Workspace.DenseTicks = 0;
            _adamTicks = 0;
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < steps; i++) Step();
            double ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds / steps;
            if (ms >= StepMs) return;
            StepMs = ms;
            DenseMs = TicksToMs(Workspace.DenseTicks) / steps;
            AdamMs = TicksToMs(_adamTicks) / steps;
        }

        /// <summary>GC gen0 collections and bytes allocated over 100 steady-state steps.</summary>
        public (long Gen0, long Allocated) Steady()
        {
            long gen0 = GC.CollectionCount(0);
            long total = GC.GetTotalAllocatedBytes(precise: true);
            for (int i = 0; i < 100; i++) Step();
            return (GC.CollectionCount(0) - gen0, GC.GetTotalAllocatedBytes(precise: true) - total);
        }
    }

    private static double TicksToMs(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;

    // The eight products of one step in TrainingStep's order: forward NT per layer, output backward,
    // then per hidden layer dW (TN) and dA (NN, skipped for the first layer).
    private static Action GemmSequence(MatMul mm)
    {
        var rng = new Random(3);
        float[] x = Rand(rng, Batch * 784), w0 = Rand(rng, 512 * 784), a0 = Rand(rng, Batch * 512), w1 = Rand(rng, 256 * 512),
            a1 = Rand(rng, Batch * 256), w2 = Rand(rng, 10 * 256), logits = new float[Batch * 10], dw0 = new float[512 * 784],
            dw1 = new float[256 * 512], dw2 = new float[10 * 256], da1 = new float[Batch * 256], da0 = new float[Batch * 512];
        return () =>
        {
            mm.MultiplyNT(x, w0, a0, Batch, 512, 784);
            mm.MultiplyNT(a0, w1, a1, Batch, 256, 512);
            mm.MultiplyNT(a1, w2, logits, Batch, 10, 256);
            mm.MultiplyTN(logits, a1, dw2, 10, 256, Batch);
            mm.MultiplyNN(logits, w2, da1, Batch, 256, 10);
            mm.MultiplyTN(da1, a0, dw1, 256, 512, Batch);
            mm.MultiplyNN(da1, w1, da0, Batch, 512, 256);
            mm.MultiplyTN(da0, x, dw0, 512, 784, Batch);
        };
    }

    // Best of 5 rounds: the machine is shared, the best round is the least disturbed one.
    private static double BestMs(Action once, int reps)
    {
        for (int i = 0; i < 3; i++) once();
        double best = double.MaxValue;
        for (int round = 0; round < 5; round++)
        {
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < reps; i++) once();
            best = Math.Min(best, Stopwatch.GetElapsedTime(t0).TotalMilliseconds / reps);
        }
        return best;
    }

    private static Dataset Synthetic(int count, int features, int classes)
    {
        var rng = new Random(7);
        var x = Rand(rng, count * features);
        var labels = new int[count];
        for (int i = 0; i < count; i++) labels[i] = rng.Next(classes);
        return new Dataset("synthetic", x, labels, features, Enumerable.Range(0, classes).Select(c => c.ToString()).ToArray());
    }

    private static float[] Rand(Random rng, int length)
    {
        var x = new float[length];
        for (int i = 0; i < length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }
}
