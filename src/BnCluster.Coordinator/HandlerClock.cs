using System.Diagnostics;
using BnCluster.Collectives;
using Serilog;

namespace BnCluster.Coordinator;

/// <summary>
/// The coordinator's busy time per handler kind and the process's garbage collections since the last reset:
/// what a step costs beyond the workers' compute (logged at Debug once per epoch).
/// </summary>
internal sealed class HandlerClock
{
    public enum Kind { BnStats, BnGradStats, Gradients, Count }

    private readonly long[] _ticks = new long[(int)Kind.Count];
    private readonly int[] _calls = new int[(int)Kind.Count];
    private int _gen0 = GC.CollectionCount(0), _gen1 = GC.CollectionCount(1), _gen2 = GC.CollectionCount(2);
    private long _allocated = GC.GetTotalAllocatedBytes(), _poolAllocations = TensorPool.Allocations;

    public static long Now => Stopwatch.GetTimestamp();

    public void Add(Kind kind, long startTimestamp)
    {
        _ticks[(int)kind] += Stopwatch.GetTimestamp() - startTimestamp;
        _calls[(int)kind]++;
    }

    public void LogAndReset(ILogger log, int epoch)
    {
        double Ms(Kind k) => _ticks[(int)k] * 1000.0 / Stopwatch.Frequency;
        int gen0 = GC.CollectionCount(0), gen1 = GC.CollectionCount(1), gen2 = GC.CollectionCount(2);
        long allocated = GC.GetTotalAllocatedBytes();
        log.Debug("Coordinator epoch {Epoch}: handlers BnStats {BnStatsMs:F1} ms ({BnStatsCalls}), BnGradStats {BnGradStatsMs:F1} ms ({BnGradStatsCalls}), " +
                  "StepGradients {GradientsMs:F1} ms ({GradientsCalls}); process GC gen0 {Gen0} gen1 {Gen1} gen2 {Gen2}, allocated {AllocatedMB:F1} MB, tensor pool misses {PoolMisses}",
            epoch, Ms(Kind.BnStats), _calls[(int)Kind.BnStats], Ms(Kind.BnGradStats), _calls[(int)Kind.BnGradStats],
            Ms(Kind.Gradients), _calls[(int)Kind.Gradients], gen0 - _gen0, gen1 - _gen1, gen2 - _gen2, (allocated - _allocated) / 1e6, TensorPool.Allocations - _poolAllocations);
        Array.Clear(_ticks);
        Array.Clear(_calls);
        (_gen0, _gen1, _gen2, _allocated, _poolAllocations) = (gen0, gen1, gen2, allocated, TensorPool.Allocations);
    }
}
