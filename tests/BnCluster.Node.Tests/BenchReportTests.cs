using System.Text.Json;
using BnCluster.Node.Backends;
using BnCluster.Node.Commands;
using BnCluster.Node.Diagnostics;
using BnCluster.Node.Logging;
using Serilog;

namespace BnCluster.Node.Tests;

/// <summary>The pieces of `bench` on the cluster: captured events read by LogSummary, /proc peak RSS, the n/a report.</summary>
public sealed class BenchReportTests
{
    private static BenchOptions ParseBench(params string[] args)
    {
        BenchOptions? parsed = null;
        var backends = new CliBackends { Bench = (o, _, _) => { parsed = o; return Task.FromResult(Cli.ExitOk); } };
        var error = new StringWriter();
        Assert.True(Cli.Run(["bench", .. args], new StringWriter(), error, backends, CancellationToken.None) == Cli.ExitOk, error.ToString());
        return parsed!;
    }

    [Fact]
    public void Bench_threads_are_per_worker_and_default_to_the_cores_shared_between_the_workers()
    {
        var two = ParseBench("--workers", "2", "--processes", "--dataset", "digits");
        Assert.Equal((2, true, "digits"), (two.Workers, two.Processes, two.Dataset));
        Assert.Equal(Math.Max(1, Environment.ProcessorCount / 2), two.Threads);
        Assert.Equal(BenchOptions.DefaultWarmup, two.Warmup);
        Assert.Equal((true, true, true), (two.SharedMemory, two.ShardedUpdate, two.PinWorkers));
        var unpinned = ParseBench("--workers", "2", "--processes", "--dataset", "digits", "--no-pin", "--no-shared-memory", "--no-sharded-update");
        Assert.Equal((false, false, false), (unpinned.SharedMemory, unpinned.ShardedUpdate, unpinned.PinWorkers));

        var given = ParseBench("--workers", "2", "--threads", "3", "--warmup", "1");
        Assert.Equal((3, 1), (given.Threads, given.Warmup));
        Assert.Equal(Environment.ProcessorCount, ParseBench().Threads);
    }

    [Fact]
    public void Bench_warmup_must_be_at_least_one_step()
    {
        var error = new StringWriter();
        var backends = new CliBackends { Bench = (_, _, _) => Task.FromResult(Cli.ExitOk) };
        Assert.Equal(Cli.ExitUsage, Cli.Run(["bench", "--warmup", "0"], new StringWriter(), error, backends, CancellationToken.None));
        Assert.Contains("--warmup", error.ToString());
    }

    [Fact]
    public void Captured_events_render_as_log_lines_that_LogSummary_sums_with_the_filter_applied()
    {
        var captured = new CapturedLogEvents();
        using (var log = new LoggerConfiguration().MinimumLevel.Debug().WriteTo.Sink(captured).CreateLogger())
        {
            for (long step = 1; step <= 3; step++)
            {
                log.StepPhase(step, 1, 0, "a", LogEvents.Phases.Compute, 10 * step);
                log.StepPhase(step, 1, 1, "b", LogEvents.Phases.BnWait, 2, layer: 0);
                log.StepPhase(step, 1, 1, "b", LogEvents.Phases.Compute, 7);
            }
            log.Information("Started worker process {Index} (pid {Pid})", 1, 4242);
        }
        Assert.Equal(4242, CapturedLogEvents.IntegerProperty(captured.Events[^1], "Pid"));
        Assert.Null(CapturedLogEvents.IntegerProperty(captured.Events[^1], "Missing"));

        var lines = new StringWriter();
        captured.WriteJsonLines(lines, e => CapturedLogEvents.IntegerProperty(e, LogEvents.Step) >= 2);
        var summary = LogSummary.Read(new StringReader(lines.ToString()), "captured");

        Assert.Equal(6, summary.Events);
        Assert.Equal(["0", "1"], summary.Workers.Select(w => w.Worker));
        Assert.Equal(20 + 30, summary.Workers[0].ComputeMs);
        Assert.Equal(7 + 7, summary.Workers[1].ComputeMs);
        Assert.Equal(2 + 2, summary.Workers[1].WaitingMs);
    }

    [Fact]
    public void Only_a_worker_process_s_warnings_errors_and_crashes_reach_the_bench_console()
    {
        var captured = new CapturedLogEvents();
        using (var log = new LoggerConfiguration().MinimumLevel.Debug().WriteTo.Sink(captured).CreateLogger())
        {
            log.Information("[worker {Index}] {Line:l}", 0, "01:02:03 INF Worker joining 127.0.0.1:4000");
            log.Information("[worker {Index}] {Line:l}", 1, "01:02:03 ERR Worker on n1 refused by the coordinator: dataset differs");
            log.Information("[worker {Index}] {Line:l}", 1, "01:02:04 WRN slow");
            log.Information("[worker {Index}] {Line:l}", 1, "Unhandled exception. System.IO.IOException: disk");
            log.Information("{Line:l} has ERR in it but no worker index", " ERR ");
        }
        Assert.Equal([false, true, true, true, false], captured.Events.Select(BenchBackend.IsWorkerProcessProblem));
    }

    [Fact]
    public void VmHWM_is_read_in_kB_from_a_status_file_with_tabs()
    {
        Assert.Equal(45256, ProcessMemory.ParseVmHwmKb(["Name:\tdotnet", "VmPeak:\t  999 kB", "VmHWM:\t   45256 kB", "VmRSS:\t 1 kB"], "status"));
        Assert.Null(ProcessMemory.ParseVmHwmKb(["Name:\tzombie", "State:\tZ (zombie)"], "status"));
        var bad = Assert.Throws<FormatException>(() => ProcessMemory.ParseVmHwmKb(["VmHWM:\tlots"], "/proc/7/status"));
        Assert.Contains("/proc/7/status", bad.Message);
        Assert.Contains("VmHWM", bad.Message);
    }

    [Fact]
    public void Peak_RSS_of_this_process_is_positive_and_of_a_missing_one_null()
    {
        Assert.True(ProcessMemory.PeakRssMb(Environment.ProcessId) > 1);
        Assert.Null(ProcessMemory.PeakRssMb(int.MaxValue));
    }

    [Fact]
    public void Without_worker_phase_events_the_split_is_n_a_in_text_and_null_in_json()
    {
        var result = new BenchResult(1000, 2.5, null, null, null, null, 0, 1, 0, 123, 80, [150.25, null], [0, null], [1536.25, null],
            Workers: 2, Processes: true, Threads: 1, Batch: 256, Hidden: [512, 256], Steps: 10, WarmupSteps: 5);

        string text = BenchBackend.ToText(result);
        Assert.Contains("2 worker processes, 1 thread(s) each", text);
        Assert.Contains("compute/bn-wait/grad-exchange n/a", text);
        Assert.Contains("worker peak RSS 150, n/a MB", text);
        Assert.Contains("worker GC gen0 0, n/a, bytes allocated/step 1536, n/a", text);

        var json = JsonDocument.Parse(BenchBackend.ToJson(result)).RootElement;
        foreach (string key in new[] { "compute_ms", "bn_wait_ms", "grad_exchange_ms", "other_ms", "waiting_percent" })
            Assert.Equal(JsonValueKind.Null, json.GetProperty(key).ValueKind);
        Assert.Equal([JsonValueKind.Number, JsonValueKind.Null], json.GetProperty("worker_peak_rss_mb").EnumerateArray().Select(e => e.ValueKind));
        Assert.Equal(150.25, json.GetProperty("worker_peak_rss_mb")[0].GetDouble());
        Assert.Equal([JsonValueKind.Number, JsonValueKind.Null], json.GetProperty("worker_gen0").EnumerateArray().Select(e => e.ValueKind));
        Assert.Equal(1536.25, json.GetProperty("worker_allocated_bytes_per_step")[0].GetDouble());
    }
}
