using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using BnCluster.Node.Backends;
using Xunit;

namespace BnCluster.IntegrationTests.Processes;

/// <summary>
/// Failures end runs and say so in their exit code: SIGTERM stops a `train --processes` run as Ctrl+C does (exit 143, a
/// whole log, no worker process left, no model), and a worker whose coordinator is gone exits with a non-zero code.
/// The processes are this build's `bncluster`, started and signalled as a service manager would.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class FailureExitTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    static FailureExitTests() => Environment.SetEnvironmentVariable("BNCLUSTER_HEARTBEAT_MS", "500");

    private static Process Start(LineTap output, params string[] args)
    {
        var psi = WorkerProcesses.Executable();
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.RedirectStandardError = true;
        psi.RedirectStandardOutput = true;
        var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => { if (e.Data is { } line) output.WriteLine(line); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is { } line) output.WriteLine(line); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    private static bool Alive(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }
    }

    [Fact]
    public async Task SIGTERM_stops_a_run_of_worker_processes_with_143_a_whole_log_and_no_process_left()
    {
        using var temp = new TempFolder();
        var output = new LineTap();
        var pids = new List<int>();
        var epochOne = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        output.Line += line =>
        {
            var started = Regex.Match(line, @"Started worker process \d+ \(pid (\d+)\)");
            if (started.Success) lock (pids) pids.Add(int.Parse(started.Groups[1].Value));
            if (line.Contains("Epoch 1 done", StringComparison.Ordinal)) epochOne.TrySetResult();
        };
        using var run = Start(output, "train", "--dataset", "digits", "--hidden", "16", "--batch", "32", "--epochs", "50", "--seed", "7",
            "--workers", "2", "--processes", "--out", temp["run"]);
        try
        {
            await Task.WhenAny(epochOne.Task, run.WaitForExitAsync()).WaitAsync(Limit);
            Assert.True(epochOne.Task.IsCompleted, "the run ended before epoch 1 was done:\n" + output);
            PausedWorkerTests.Signal("TERM", run.Id);
            await run.WaitForExitAsync().WaitAsync(Limit);
        }
        finally
        {
            if (!run.HasExited) run.Kill(entireProcessTree: true);
        }
        Assert.True(run.ExitCode == 143, $"exit code {run.ExitCode}:\n{output}");
        int[] children;
        lock (pids) children = pids.ToArray();
        Assert.Equal(2, children.Length);
        Assert.All(children, pid => Assert.False(Alive(pid), $"worker process {pid} is still running after the run exited"));
        Assert.False(File.Exists(Path.Combine(temp["run"], "model.bnc")), "a cancelled run wrote a model");
        using (var record = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(temp["run"], "run.json"))))
        {
            Assert.Equal("cancelled", record.RootElement.GetProperty("outcome").GetString());
            Assert.True(record.RootElement.GetProperty("steps").GetInt64() > 0);
            Assert.True(record.RootElement.GetProperty("final").GetProperty("epoch").GetInt32() >= 1);
        }
        var lines = File.ReadAllLines(Path.Combine(temp["run"], "log.jsonl"));
        Assert.NotEmpty(lines);
        foreach (var line in lines) JsonDocument.Parse(line).Dispose(); // every line whole: the log was flushed, not torn
    }

    /// <summary>
    /// Settings no run can start with (a network no array can hold, a learning rate that is ∞ in float32) are refused before
    /// anything starts — no actor, no worker process, no run folder — with one line and exit code 2.
    /// </summary>
    [Theory]
    [InlineData("--hidden", "2000000000", "")]
    [InlineData("--lr", "1e300", "")]
    [InlineData("--hidden", "2000000000", "--processes")]
    public void Settings_no_run_can_start_with_are_refused_up_front_with_one_line(string flag, string value, string processes)
    {
        using var temp = new TempFolder();
        var run = CliHarness.Run(["train", "--dataset", "digits", flag, value, "--workers", "2", "--epochs", "1", "--out", temp["run"],
            .. processes.Length > 0 ? [processes] : Array.Empty<string>()]);
        Assert.True(run.Exit == 2, $"exit {run.Exit}:\n{run.Error}");
        Assert.StartsWith($"bncluster: {flag}: ", Assert.Single(run.ErrorLines));
        Assert.False(Directory.Exists(temp["run"]));
    }

    /// <summary>
    /// A full disk mid-run (a 256 KiB tmpfs as the run folder): the run fails with exit 1 naming the cause, leaves no model
    /// and no half-written metrics file. Needs root to mount; without it, it fails saying so (it does not skip).
    /// </summary>
    [Fact]
    public void A_full_disk_fails_the_run_with_the_cause_and_leaves_nothing_half_written()
    {
        using var temp = new TempFolder();
        string folder = temp["full"];
        Directory.CreateDirectory(folder);
        Run("mount", "-t", "tmpfs", "-o", "size=256k", "bncluster-full", folder);
        try
        {
            var run = CliHarness.Run(["train", "--dataset", "digits", "--hidden", "16", "--batch", "32", "--epochs", "400", "--workers", "2", "--out", folder]);
            Assert.True(run.Exit == 1, $"exit {run.Exit}:\n{run.Error}");
            Assert.Contains("No space left on device", run.Error.Split('\n').Last(l => l.StartsWith("bncluster: error:", StringComparison.Ordinal)));
            Assert.False(File.Exists(Path.Combine(folder, "model.bnc")));
            Assert.Empty(Directory.GetFiles(folder, "*.tmp")); // the atomic writes cleaned up after themselves
            foreach (var line in File.ReadAllLines(Path.Combine(folder, "metrics.jsonl"))) JsonDocument.Parse(line).Dispose();
        }
        finally { Run("umount", folder); }
    }

    private static void Run(string command, params string[] args)
    {
        var psi = new ProcessStartInfo(command) { RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{command} {string.Join(' ', args)} failed (this test needs root): {error}");
    }

    [Fact]
    public async Task A_worker_started_before_its_coordinator_keeps_trying_and_the_run_completes()
    {
        using var temp = new TempFolder();
        int port;
        using (var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0)) // a free port for the coordinator-to-be
        {
            probe.Start();
            port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
        }
        var output = new LineTap();
        var joining = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        output.Line += line => { if (line.Contains(" joining ", StringComparison.Ordinal)) joining.TrySetResult(); };
        using var worker = Start(output, "worker", "--join", $"127.0.0.1:{port}", "--dataset", "digits", "--threads", "1");
        Process? coordinator = null;
        try
        {
            await joining.Task.WaitAsync(Limit); // the worker is up and trying; no coordinator yet
            Assert.False(worker.HasExited, output.ToString());
            coordinator = Start(output, "coordinator", "--listen", $"127.0.0.1:{port}", "--workers", "1", "--dataset", "digits", "--hidden", "8",
                "--max-steps", "3", "--out", temp["run"]);
            await coordinator.WaitForExitAsync().WaitAsync(Limit);
            await worker.WaitForExitAsync().WaitAsync(Limit);
            Assert.True(coordinator.ExitCode == 0, $"coordinator exit code {coordinator.ExitCode}:\n{output}");
            Assert.True(worker.ExitCode == 0, $"worker exit code {worker.ExitCode}:\n{output}");
            Assert.True(File.Exists(Path.Combine(temp["run"], "model.bnc")));
        }
        finally
        {
            if (!worker.HasExited) worker.Kill(entireProcessTree: true);
            if (coordinator is { HasExited: false }) coordinator.Kill(entireProcessTree: true);
            coordinator?.Dispose();
        }
    }

    [Fact]
    public async Task A_worker_gives_up_joining_after_its_join_timeout_with_exit_1_and_one_line()
    {
        int port;
        using (var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0)) // nobody listens there afterwards
        {
            probe.Start();
            port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
        }
        var output = new LineTap();
        using var worker = Start(output, "worker", "--join", $"127.0.0.1:{port}", "--dataset", "digits", "--join-timeout", "3");
        try { await worker.WaitForExitAsync().WaitAsync(Limit); }
        finally { if (!worker.HasExited) worker.Kill(entireProcessTree: true); }
        Assert.True(worker.ExitCode == 1, $"exit code {worker.ExitCode}:\n{output}");
        Assert.Contains($"could not join the coordinator at akka.tcp://bncluster@127.0.0.1:{port} within 3 s", output.ToString());
    }

    [Fact]
    public async Task A_worker_whose_coordinator_is_killed_exits_with_a_non_zero_code()
    {
        using var temp = new TempFolder();
        var output = new LineTap();
        var listening = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var epochOne = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        output.Line += line =>
        {
            var m = Regex.Match(line, @"--join (127\.0\.0\.1:\d+)");
            if (m.Success) listening.TrySetResult(m.Groups[1].Value);
            if (line.Contains("Epoch 1 done", StringComparison.Ordinal)) epochOne.TrySetResult();
        };
        using var coordinator = Start(output, "coordinator", "--listen", "127.0.0.1:0", "--workers", "1", "--dataset", "digits", "--hidden", "16",
            "--batch", "32", "--epochs", "50", "--seed", "7", "--out", temp["run"]);
        Process? worker = null;
        try
        {
            string endpoint = await listening.Task.WaitAsync(Limit);
            worker = Start(output, "worker", "--join", endpoint, "--dataset", "digits", "--threads", "1");
            await Task.WhenAny(epochOne.Task, coordinator.WaitForExitAsync()).WaitAsync(Limit);
            Assert.True(epochOne.Task.IsCompleted, "the run ended before epoch 1 was done:\n" + output);
            coordinator.Kill(entireProcessTree: true); // kill -9
            await worker.WaitForExitAsync().WaitAsync(Limit);
            Assert.True(worker.ExitCode != 0, $"the worker exited with 0 after its coordinator was killed:\n{output}");
            Assert.Contains("could not join the coordinator", output.ToString());

            // run.json still says "running" (a killed process records nothing) and names the coordinator's settings; the
            // kernel released the folder's lock with the process, so a new run may replace it.
            using (var record = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(temp["run"], "run.json"))))
            {
                Assert.Equal("coordinator", record.RootElement.GetProperty("command").GetString());
                Assert.Equal("running", record.RootElement.GetProperty("outcome").GetString());
                Assert.Equal("127.0.0.1:0", record.RootElement.GetProperty("settings").GetProperty("listen").GetString());
            }
            var again = CliHarness.Run("train", "--workers", "1", "--hidden", "8", "--max-steps", "1", "--out", temp["run"], "--overwrite");
            Assert.True(again.Exit == 0, again.Error);
        }
        finally
        {
            if (!coordinator.HasExited) coordinator.Kill(entireProcessTree: true);
            if (worker is { HasExited: false }) worker.Kill(entireProcessTree: true);
            worker?.Dispose();
        }
    }
}
