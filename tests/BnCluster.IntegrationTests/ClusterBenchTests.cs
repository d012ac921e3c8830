using System.Text.Json;
using BnCluster.IntegrationTests.Processes;
using BnCluster.Node.Commands;
using Xunit;

namespace BnCluster.IntegrationTests;

/// <summary>`bncluster bench` on the cluster, through the real backends: in-process actors, and worker processes.</summary>
/// <remarks>
/// Not run alongside other tests: the in-process cluster shares this test host's thread pool, and once (1 full run in
/// about 6, never alone nor under a CPU hog) the workers' phases summed to 23× the step time while the rest of the
/// suite ran beside it. The cause was not found; the bench itself runs alone in its process.
/// </remarks>
[Collection(TimingCollection.Name)]
public sealed class ClusterBenchTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Bench_on_two_in_process_workers_prints_a_split_that_adds_up_to_the_step_time()
    {
        var run = await Task.Run(() => CliHarness.Run("bench", "--workers", "2", "--dataset", "digits", "--hidden", "64,32", "--batch", "128",
            "--steps", "30", "--threads", "1", "--json")).WaitAsync(Limit);

        Assert.True(run.Exit == Cli.ExitOk, run.Error);
        var json = JsonDocument.Parse(run.Out).RootElement;
        Assert.Equal(2, json.GetProperty("workers").GetInt32());
        Assert.False(json.GetProperty("processes").GetBoolean());
        Assert.Equal(1, json.GetProperty("threads").GetInt32());
        Assert.Empty(json.GetProperty("worker_peak_rss_mb").EnumerateArray()); // the workers are this process
        Assert.Empty(json.GetProperty("worker_gen0").EnumerateArray()); // (their GC is this process's: gen0 above)
        double ms = json.GetProperty("ms_per_step").GetDouble();
        // Digits: 1437 training rows = 11 batches of 128 and one of 29 per epoch; the steps that end an epoch (12 and
        // 24: the short batch, then the test evaluation) are left out, so every counted step has 128 rows.
        Assert.Equal(128 * 1000 / ms, json.GetProperty("samples_per_second").GetDouble(), 128 * 1000 / ms * 1e-9);

        double compute = json.GetProperty("compute_ms").GetDouble(), bn = json.GetProperty("bn_wait_ms").GetDouble(),
            grad = json.GetProperty("grad_exchange_ms").GetDouble(), waiting = json.GetProperty("waiting_percent").GetDouble();
        Assert.True(compute > 0 && bn > 0 && grad > 0, $"compute {compute}, bn-wait {bn}, grad-exchange {grad}: every phase takes time");
        // A worker's step is compute, then waits, until the next step arrives: the phases tile the coordinator's step.
        double sum = compute + bn + grad;
        Assert.True(Math.Abs(sum - ms) <= 0.25 * ms + 0.2, $"compute + bn-wait + grad-exchange = {sum:F3} ms per worker, step {ms:F3} ms");
        Assert.Equal(ms - sum, json.GetProperty("other_ms").GetDouble(), 1e-9); // the rest of the step, named
        // Mean of the workers' shares vs share of the means: equal when the workers' step times are (nearly) equal.
        Assert.InRange(waiting, 100 * (bn + grad) / sum - 5, 100 * (bn + grad) / sum + 5);
        Assert.True(json.GetProperty("peak_rss_mb").GetDouble() > 10);
    }

    [Fact]
    public void Bench_on_two_in_process_workers_takes_random_data_and_says_so_in_text()
    {
        var run = CliHarness.Run("bench", "--workers", "2", "--features", "20", "--classes", "3", "--hidden", "16", "--batch", "32", "--steps", "5");

        Assert.True(run.Exit == Cli.ExitOk, run.Error);
        Assert.Matches(@"^\d+ samples/s, [\d.]+ ms/step \(batch 32, hidden 16, 2 workers, 1 thread\(s\) each\); per step per worker: compute [\d.]+ ms, bn-wait [\d.]+ ms, grad-exchange [\d.]+ ms, other -?[\d.]+ ms, waiting [\d.]+%;", run.Out);
        Assert.Contains("5 timed steps after 5 warm-up", run.Out);
    }

    /// <summary>
    /// The executable's standard output is the JSON and nothing else, also with Akka nodes starting and stopping around
    /// it (compare.sh and bench/ab.sh parse it): Akka's own logger writes to standard error only.
    /// </summary>
    [Fact]
    public async Task Bench_json_of_worker_processes_is_the_whole_standard_output_of_the_executable()
    {
        var psi = Node.Backends.WorkerProcesses.Executable();
        foreach (var a in new[] { "bench", "--dataset", "digits", "--hidden", "16", "--batch", "32", "--steps", "5", "--warmup", "2",
                     "--workers", "2", "--processes", "--threads", "1", "--json" })
            psi.ArgumentList.Add(a);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        using var bench = System.Diagnostics.Process.Start(psi)!;
        var stderr = bench.StandardError.ReadToEndAsync();
        string stdout = await bench.StandardOutput.ReadToEndAsync().WaitAsync(Limit);
        await bench.WaitForExitAsync().WaitAsync(Limit);
        Assert.True(bench.ExitCode == 0, await stderr);
        using var json = JsonDocument.Parse(stdout); // throws on anything before or after the object
        Assert.True(json.RootElement.GetProperty("samples_per_second").GetDouble() > 0);
    }

    [Fact]
    public void Bench_with_processes_and_no_dataset_is_refused_in_one_line()
    {
        var run = CliHarness.Run("bench", "--workers", "2", "--processes", "--steps", "3");

        Assert.Equal(Cli.ExitUsage, run.Exit);
        Assert.Equal("", run.Out);
        var line = Assert.Single(run.ErrorLines);
        Assert.Contains("--processes needs --dataset", line);
    }
}

/// <summary>The bench of worker processes; in the process collection so it never runs beside the other process tests.</summary>
[Collection(ProcessCollection.Name)]
public sealed class ProcessBenchTests
{
    [Fact]
    public async Task Bench_on_two_worker_processes_reports_their_peak_rss_and_leaves_none_behind()
    {
        var run = await Task.Run(() => CliHarness.Run("bench", "--workers", "2", "--processes", "--dataset", "digits", "--hidden", "16",
            "--batch", "96", "--steps", "5", "--warmup", "2", "--threads", "1", "--json")).WaitAsync(TimeSpan.FromSeconds(90));

        Assert.True(run.Exit == Cli.ExitOk, run.Error);
        var json = JsonDocument.Parse(run.Out).RootElement;
        Assert.True(json.GetProperty("processes").GetBoolean());
        Assert.True(json.GetProperty("samples_per_second").GetDouble() > 0);
        var rss = json.GetProperty("worker_peak_rss_mb").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        Assert.Equal(2, rss.Length);
        Assert.All(rss, mb => Assert.InRange(mb, 10, 2000));
        // The split comes from per-worker events; whether they reach the coordinator or not, it is all there or all n/a.
        string[] split = ["compute_ms", "bn_wait_ms", "grad_exchange_ms", "waiting_percent"];
        var kinds = split.Select(k => json.GetProperty(k).ValueKind).Distinct().ToArray();
        Assert.True(kinds is [JsonValueKind.Null] or [JsonValueKind.Number], string.Join(",", kinds));
        // Each worker process's GC figures come with its compute events: one per worker, and a worker step allocates
        // something (its StepGradients message at least), so a counter that did not travel would show 0 bytes.
        var gen0 = json.GetProperty("worker_gen0").EnumerateArray().ToArray();
        var bytes = json.GetProperty("worker_allocated_bytes_per_step").EnumerateArray().ToArray();
        if (kinds is [JsonValueKind.Number])
        {
            Assert.Equal(2, gen0.Length);
            Assert.All(gen0, g => Assert.True(g.GetInt32() >= 0));
            Assert.Equal(2, bytes.Length);
            Assert.All(bytes, b => Assert.InRange(b.GetDouble(), 1, 10_000_000));
        }
        else Assert.Empty(gen0);
        // The launcher killed its children: no `bncluster.dll worker` child of this process remains.
        Assert.DoesNotContain(ChildCommandLines(), c => c.Contains("bncluster.dll") && c.Contains("worker"));
    }

    private static IEnumerable<string> ChildCommandLines()
    {
        string self = Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            string stat, cmdline;
            try
            {
                stat = File.ReadAllText(Path.Combine(dir, "stat"));
                cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
            // stat: "pid (comm) state ppid …"; comm may contain spaces, so split after the last ')'.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            if (fields.Length > 1 && fields[1] == self) yield return cmdline;
        }
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TimingCollection { public const string Name = "timing"; }
