using System.Diagnostics;
using System.Text.RegularExpressions;
using BnCluster.Core.Model;
using Xunit;

namespace BnCluster.IntegrationTests.Processes;

/// <summary>
/// A live worker falsely taken for dead: SIGSTOP one of two worker processes of `train --processes` for longer than the
/// failure detector allows, then SIGCONT. With --min-workers 2 the run cannot finish without it, so completing every
/// step proves it was re-admitted; it re-enters in its old rank, so the model is the uninterrupted run's.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class PausedWorkerTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(90);

    // 500 ms heartbeats (inherited by the child workers): unreachable after ~2-3 s, downed 4 s later.
    static PausedWorkerTests() => Environment.SetEnvironmentVariable("BNCLUSTER_HEARTBEAT_MS", "500");

    /// <summary>Three epochs of 15 steps (1437 digits rows, batch 96), two workers, both needed.</summary>
    private static string[] Train(string outDir, bool processes) =>
    [
        "train", "--dataset", "digits", "--hidden", "16,16", "--batch", "96", "--epochs", "3", "--seed", "7",
        "--workers", "2", "--min-workers", "2", "--threads", "2", "--out", outDir,
        .. processes ? ["--processes"] : Array.Empty<string>(),
    ];

    [Theory]
    [InlineData("unreachable")] // SIGCONT once the coordinator dropped it: its node becomes reachable again
    [InlineData("removed")]     // SIGCONT only after the cluster removed its node: the node must join again first
    public async Task A_paused_worker_process_is_dropped_comes_back_and_the_run_gives_the_uninterrupted_model(string resumeAfter)
    {
        using var temp = new TempFolder();
        var reference = await Task.Run(() => CliHarness.Run(Train(temp["ref"], processes: false))).WaitAsync(Limit);
        Assert.True(reference.Exit == 0, reference.Error);

        var tap = new LineTap();
        var pids = new Dictionary<int, int>();
        var epochOne = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var dropped = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var removed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        string? pausedNode = null; // the address of worker process 1, the one paused
        int paused = 0;            // its pid while it is stopped
        tap.Line += line =>
        {
            var started = Regex.Match(line, @"Started worker process (\d+) \(pid (\d+)\)");
            if (started.Success) lock (pids) pids[int.Parse(started.Groups[1].Value)] = int.Parse(started.Groups[2].Value);
            var joining = Regex.Match(line, @"\[worker 1\] Worker (\S+) joining");
            if (joining.Success) Volatile.Write(ref pausedNode, joining.Groups[1].Value);
            if (line.Contains("Epoch 1 done", StringComparison.Ordinal)) epochOne.TrySetResult();
            // Only what follows the pause counts (a loaded machine can give a false unreachable before it).
            if (Volatile.Read(ref paused) == 0 || Volatile.Read(ref pausedNode) is not { } node || !line.Contains(node, StringComparison.Ordinal)) return;
            if (line.Contains(" left: unreachable", StringComparison.Ordinal)) dropped.TrySetResult(node);
            if (dropped.Task.IsCompleted && line.Contains("of dropped worker", StringComparison.Ordinal) && line.Contains("removed from the cluster", StringComparison.Ordinal))
                removed.TrySetResult();
        };

        using var cancel = new CancellationTokenSource();
        var running = Task.Run(() => CliHarness.Run(cancel.Token, tap, Train(temp["proc"], processes: true)));
        CliRun run;
        try
        {
            await Task.WhenAny(epochOne.Task, running).WaitAsync(Limit);
            Assert.True(epochOne.Task.IsCompleted, "the run ended before epoch 1 was done:\n" + tap);
            int pid;
            lock (pids) pid = pids[1];
            Signal("STOP", pid);
            Volatile.Write(ref paused, pid);
            await Wait(dropped.Task, "the coordinator to drop the paused worker as unreachable", tap);
            if (resumeAfter == "removed") await Wait(removed.Task, "the cluster to remove the paused worker's node", tap);
            Signal("CONT", pid);
            Volatile.Write(ref paused, -1); // resumed; what follows still counts
            run = await running.WaitAsync(Limit);
        }
        catch (TimeoutException)
        {
            cancel.Cancel();
            throw new Xunit.Sdk.XunitException("the run did not finish in time:\n" + tap);
        }
        finally
        {
            if (Volatile.Read(ref paused) > 0) Signal("CONT", paused); // so that the run's own cleanup can stop it
            cancel.Cancel();
            await running.WaitAsync(Limit);
        }
        Assert.True(run.Exit == 0, run.Error);
        string worker = Regex.Escape(await dropped.Task);
        AssertLog(run.Error, @$"Worker \d+ on {worker} left: unreachable");
        AssertLog(run.Error, @$"Worker \d+ on {worker} joined again");
        // The worker's own warning, forwarded by the parent at its level and with one timestamp: told by the coordinator
        // (its node reachable again), or finding its node downed (removed), when it joins again as a new node.
        AssertLog(run.Error, @$"(?m)^\d\d:\d\d:\d\d WRN \[worker \d\] Worker (\d+ on )?{worker} was dropped");
        Assert.False(Regex.IsMatch(run.Error, @"\[worker \d+\] \d\d:\d\d:\d\d [A-Z]{3} "), "a child's line with two timestamps:\n" + run.Error);

        var a = ModelFile.Read(Path.Combine(temp["ref"], "model.bnc"));
        var b = ModelFile.Read(Path.Combine(temp["proc"], "model.bnc"));
        Assert.Equal(45L, Convert.ToInt64(b.Training["steps"]));
        // Every committed step ran on both workers in their original ranks (aborted attempts change nothing):
        // bitwise, which is stricter than the 1e-4 a re-split over different workers would need.
        ProcessClusterTests.AssertTensors(a, b, relative: 0);
    }

    private static void AssertLog(string log, string pattern) =>
        Assert.True(Regex.IsMatch(log, pattern), $"no log line matches {pattern}:\n{log}");

    private static async Task Wait(Task task, string what, LineTap tap)
    {
        try { await task.WaitAsync(TimeSpan.FromSeconds(30)); }
        catch (TimeoutException) { throw new Xunit.Sdk.XunitException($"waited 30 s for {what}:\n{tap}"); }
    }

    /// <summary>Sends SIG<paramref name="signal"/> to <paramref name="pid"/> with kill(1), as a person or a service manager would.</summary>
    internal static void Signal(string signal, int pid)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill") { ArgumentList = { "-" + signal, pid.ToString() } })!;
        kill.WaitForExit();
        Assert.True(kill.ExitCode == 0, $"kill -{signal} {pid} failed");
    }
}
