namespace BnCluster.Node;

/// <summary>
/// An idle .NET thread-pool thread spins (sched_yield) for more work before it blocks, unless
/// DOTNET_ThreadPool_UnfairSemaphoreSpinLimit is 0. In a worker process, and in the coordinator of worker processes on
/// its machine, those spins run on the cores the workers compute on: the actors' bursts of messages left threads spinning
/// there (perf: a third of the coordinator's CPU), and the worker sharing a core with them fell behind at the next
/// batch-norm reduction. Measured on the 2-vCPU machine of 2026-12-03, 2 worker processes, runs alternated: coordinator
/// CPU per step −20%, waiting 13–14% → 11% (samples/s unchanged). Everywhere else the spinning pays (the in-process
/// cluster hands every reduction between pool threads: −5.6% samples/s without it, 5 alternated pairs), so it stays.
/// .NET reads the variable when the pool starts its first worker thread: set it before anything uses the pool.
/// </summary>
internal static class ThreadPoolSpinning
{
    public const string Variable = "DOTNET_ThreadPool_UnfairSemaphoreSpinLimit";

    /// <summary>Turns the spinning off for a `worker` process or a run with `--processes` (and the processes it
    /// starts), unless the variable is set already (the user's choice wins).</summary>
    public static void AvoidWhenSharingCores(IReadOnlyList<string> args)
    {
        if (SharesCores(args) && Environment.GetEnvironmentVariable(Variable) is null) Environment.SetEnvironmentVariable(Variable, "0");
    }

    /// <summary>A worker process (`worker …`), or a command that starts worker processes (`--processes`).</summary>
    internal static bool SharesCores(IReadOnlyList<string> args) => args.Count > 0 && args[0] == "worker" || args.Contains("--processes");
}
