using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using BnCluster.Core.Model;
using BnCluster.Node.Backends;
using Xunit;

namespace BnCluster.IntegrationTests.Processes;

/// <summary>
/// The cluster over TCP with real worker processes (`dotnet bncluster.dll worker`): same model as the in-process
/// cluster, survives a kill -9 of a worker, refuses a worker with another dataset. Every child is killed in finally.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class ProcessClusterTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    static ProcessClusterTests() =>
        // Faster failure detection (a silent node is unreachable after ~2 s) for the coordinator here and
        // (inherited) its child workers; shorter gives false positives while 4 processes JIT on 2 cores.
        Environment.SetEnvironmentVariable("BNCLUSTER_HEARTBEAT_MS", "500");

    /// <summary>
    /// This process's shared-memory files still in the folder. In-process clusters of the tests running alongside make
    /// such files too, each there only until both of its sides have mapped it: a file counts when no deletion of it has
    /// been seen within 2 s (a left file stays, another test's goes within milliseconds). Waits on the folder's
    /// deletion events, not on a clock.
    /// </summary>
    private static string[] LeftSharedFiles()
    {
        string folder = Collectives.SharedTensorRegion.DefaultFolder, pattern = $"bncluster-{Environment.ProcessId}-*";
        using var deleted = new SemaphoreSlim(0);
        using var watcher = new FileSystemWatcher(folder, pattern);
        watcher.Deleted += (_, _) => deleted.Release();
        watcher.EnableRaisingEvents = true; // (before the listing: no deletion after it goes unseen)
        var seen = Directory.GetFiles(folder, pattern);
        var deadline = Stopwatch.StartNew();
        while ((seen = seen.Where(File.Exists).ToArray()).Length > 0)
        {
            var left = TimeSpan.FromSeconds(2) - deadline.Elapsed;
            if (left <= TimeSpan.Zero || !deleted.Wait(left)) break;
        }
        return seen;
    }

    private static string[] Train(string outDir, int workers, bool processes, string extra = "", int epochs = 1, int maxSteps = 6) =>
    [
        "train", "--dataset", "digits", "--hidden", "16,16", "--batch", "96", "--epochs", epochs.ToString(), "--max-steps", maxSteps.ToString(),
        "--seed", "7", "--workers", workers.ToString(), "--threads", workers.ToString(), "--out", outDir,
        .. processes ? ["--processes"] : Array.Empty<string>(),
        .. extra.Split(' ', StringSplitOptions.RemoveEmptyEntries),
    ];

    /// <summary>
    /// The same model, bit for bit, whichever way the tensors go: through shared memory with the update sharded over the
    /// workers (the default, for every optimizer), through shared memory with the coordinator updating, or all over TCP.
    /// </summary>
    [Theory]
    [InlineData("adam", "")]
    [InlineData("adam", "--no-sharded-update")]
    [InlineData("adam", "--no-shared-memory")]
    [InlineData("momentum", "")]
    [InlineData("rmsprop", "")]
    [InlineData("gd", "")]
    [InlineData("adam", "", 2)] // an evaluation between epochs: the state comes back to the coordinator and goes out again
    public async Task Two_worker_processes_give_the_in_process_model_bitwise_with_tensors_through_shared_memory_or_tcp(string optimizer, string flags, int epochs = 1)
    {
        int maxSteps = epochs == 1 ? 6 : 20; // (15 steps per epoch)
        bool sharedMemory = !flags.Contains("--no-shared-memory"), sharded = sharedMemory && !flags.Contains("--no-sharded-update");
        using var temp = new TempFolder();
        // (The in-process run keeps its tensors in the message objects: a path that shares no code with the files.)
        var inProcess = await Task.Run(() => CliHarness.Run(Train(temp["inproc"], 2, processes: false, $"--optimizer {optimizer} --no-shared-memory", epochs, maxSteps))).WaitAsync(Limit);
        Assert.True(inProcess.Exit == 0, inProcess.Error);
        var processes = await Task.Run(() => CliHarness.Run(Train(temp["proc"], 2, processes: true, $"--optimizer {optimizer} {flags}", epochs, maxSteps))).WaitAsync(Limit);
        Assert.True(processes.Exit == 0, processes.Error);
        Assert.Contains("[worker 0]", processes.Error);
        Assert.Contains("[worker 1]", processes.Error);
        // Pinned by default, each worker process on a CPU of its own when there are 2 (see CpuPinningTests).
        if (CpuPinning.Plan(2, 1) is { } cpus)
            for (int worker = 0; worker < 2; worker++)
                Assert.Matches($@"Started worker process {worker} \(pid \d+\) on CPU {cpus[worker][0]}\b", processes.Error);
        // The coordinator says which way each worker's tensors went.
        foreach (int worker in new[] { 0, 1 })
            Assert.Equal(sharedMemory, Regex.IsMatch(processes.Error, $@"Worker {worker} on \S+: tensors through shared memory"));
        Assert.DoesNotContain("tensors through shared memory", inProcess.Error);
        // …and, with shared memory, the workers all-reduced their BN partials through the exchange file, not messages.
        Assert.Equal(sharedMemory, processes.Error.Contains("Workers 0, 1: batch-norm partials exchanged through shared memory"));
        Assert.DoesNotContain("batch-norm partials exchanged", inProcess.Error);
        Assert.Equal(sharded, processes.Error.Contains("Workers 0, 1: the optimizer update sharded over them in shared memory"));
        // …and, sharded, each ran steps ahead of the coordinator's StartStep (confirmed, so the model above is theirs).
        foreach (int worker in new[] { 0, 1 })
            Assert.Equal(sharded, Regex.IsMatch(processes.Error, $@"Worker {worker}: step \d+ run ahead of its StartStep and confirmed"));
        // The files were unlinked once both sides had them mapped: nothing is left behind.
        Assert.Empty(LeftSharedFiles());

        var a = ModelFile.Read(Path.Combine(temp["inproc"], "model.bnc"));
        var b = ModelFile.Read(Path.Combine(temp["proc"], "model.bnc"));
        AssertTensors(a, b, relative: 0);
        Assert.Equal(new InputPreprocessing(16f), b.Preprocessing); // the coordinator of worker processes records the loader's ÷16
    }

    /// <summary>
    /// In one process the workers take the shared-memory files too: their BN partials through the exchange, the update
    /// sharded over them, steps run ahead. The model is the message path's, bit for bit, and no file is left behind.
    /// </summary>
    [Fact]
    public async Task In_process_workers_exchange_through_shared_memory_and_give_the_message_paths_model()
    {
        using var temp = new TempFolder();
        var objects = await Task.Run(() => CliHarness.Run(Train(temp["objects"], 2, processes: false, "--optimizer adam --no-shared-memory", 2, 20))).WaitAsync(Limit);
        Assert.True(objects.Exit == 0, objects.Error);
        var shared = await Task.Run(() => CliHarness.Run(Train(temp["shared"], 2, processes: false, "--optimizer adam", 2, 20))).WaitAsync(Limit);
        Assert.True(shared.Exit == 0, shared.Error);
        Assert.DoesNotContain("tensors through shared memory", objects.Error);
        foreach (int worker in new[] { 0, 1 })
        {
            Assert.Matches($@"Worker {worker} on in-process/\d+: tensors through shared memory", shared.Error); // (nodes join in any order)
            Assert.Matches($@"Worker {worker}: step \d+ run ahead of its StartStep and confirmed", shared.Error);
        }
        Assert.Contains("Workers 0, 1: batch-norm partials exchanged through shared memory", shared.Error);
        Assert.Contains("Workers 0, 1: the optimizer update sharded over them in shared memory", shared.Error);
        Assert.Empty(LeftSharedFiles());
        AssertTensors(ModelFile.Read(Path.Combine(temp["objects"], "model.bnc")), ModelFile.Read(Path.Combine(temp["shared"], "model.bnc")), relative: 0);
    }

    /// <summary>
    /// A run that diverges with every tensor in shared memory (its BN partials through the exchange, its gradients
    /// read by Adam as it updates) stops with the one error that names the worker, as in process: non-finite numbers
    /// are caught before anything changes, retried once, and then stop training.
    /// </summary>
    [Fact]
    public async Task A_diverging_run_of_worker_processes_stops_with_an_error_naming_the_worker()
    {
        using var temp = new TempFolder();
        var run = await Task.Run(() => CliHarness.Run([.. Train(temp["proc"], 2, processes: true), "--optimizer", "adam", "--lr", "1e35"])).WaitAsync(Limit);
        Assert.True(run.Exit != 0, run.Error);
        Assert.Matches(@"worker \d+ on \S+ sent a non-finite BN statistic of layer \d at step \d+ twice; training stopped", run.Error);
        Assert.Contains("Workers 0, 1: batch-norm partials exchanged through shared memory", run.Error);
        Assert.False(File.Exists(Path.Combine(temp["proc"], "model.bnc")), "a failed run left a model file");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task The_run_log_has_each_workers_compute_and_waiting_split_once_per_step_in_processes_and_in_process(bool processes)
    {
        using var temp = new TempFolder();
        var run = await Task.Run(() => CliHarness.Run(Train(temp["proc"], 2, processes))).WaitAsync(Limit);
        Assert.True(run.Exit == 0, run.Error);

        // The workers send their timings with their gradients and the coordinator logs them: one compute event
        // per worker and step (6 steps), 2 BN layers × forward and backward waits, 5 gradient exchanges (the
        // exchange after a step is reported with the next step's gradients).
        var events = File.ReadLines(Path.Combine(temp["proc"], "log.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        foreach (int worker in new[] { 0, 1 })
        {
            // CLEF: the properties are at the top level of each line.
            int Count(string phase) => events.Count(e => e.TryGetProperty("Worker", out var w) && w.GetInt32() == worker
                && e.TryGetProperty("Phase", out var ph) && ph.GetString() == phase);
            Assert.Equal(6, Count("compute"));
            Assert.Equal(6 * 4, Count("bn-wait"));
            Assert.Equal(5, Count("grad-exchange"));
        }

        var logs = CliHarness.Run("logs", temp["proc"], "--json");
        Assert.True(logs.Exit == 0, logs.Error);
        using var summary = JsonDocument.Parse(logs.Out);
        var workers = summary.RootElement.GetProperty("workers").EnumerateArray().ToList();
        Assert.Equal(["0", "1"], workers.Select(w => w.GetProperty("worker").GetString()));
        foreach (var w in workers)
        {
            Assert.True(w.GetProperty("compute_ms").GetDouble() > 0, w.ToString());
            Assert.True(w.GetProperty("phases_ms").GetProperty("bn-wait").GetDouble() > 0, w.ToString());
            Assert.True(w.GetProperty("phases_ms").GetProperty("grad-exchange").GetDouble() > 0, w.ToString());
        }
        var text = CliHarness.Run("logs", temp["proc"]);
        Assert.True(text.Exit == 0, text.Error);
        Assert.Contains(text.OutLines, l => Regex.IsMatch(l, @"^1\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d%"));
    }

    [Fact]
    public async Task A_killed_worker_process_is_replaced_by_the_survivors_and_the_run_completes()
    {
        using var temp = new TempFolder();
        // 1437 rows / batch 96 = 15 steps per epoch; 3 epochs, the kill after epoch 1.

        var reference = await Task.Run(() => CliHarness.Run(Override(Train(temp["ref"], 3, false)))).WaitAsync(Limit);
        Assert.True(reference.Exit == 0, reference.Error);

        var tap = new LineTap();
        var epochOne = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var pids = new List<int>();
        tap.Line += line =>
        {
            var started = Regex.Match(line, @"Started worker process \d+ \(pid (\d+)\)");
            if (started.Success) lock (pids) pids.Add(int.Parse(started.Groups[1].Value));
            if (line.Contains("Epoch 1 done", StringComparison.Ordinal)) epochOne.TrySetResult();
        };
        using var cancel = new CancellationTokenSource();
        var running = Task.Run(() => CliHarness.Run(cancel.Token, tap, Override(Train(temp["proc"], 3, true))));
        var killed = new TaskCompletionSource<int>();
        CliRun run;
        try
        {
            await Task.WhenAny(epochOne.Task, running).WaitAsync(Limit);
            if (epochOne.Task.IsCompleted)
            {
                int pid;
                lock (pids) pid = pids[1];
                using var victim = Process.GetProcessById(pid);
                victim.Kill(entireProcessTree: true); // kill -9
                killed.SetResult(pid);
            }
            run = await running.WaitAsync(Limit);
        }
        catch (TimeoutException)
        {
            cancel.Cancel();
            await running.WaitAsync(Limit);
            throw new Xunit.Sdk.XunitException("the run did not finish in time:\n" + tap);
        }
        Assert.True(run.Exit == 0, run.Error);
        Assert.True(killed.Task.IsCompleted, "the worker was never killed:\n" + run.Error);
        Assert.Matches(@"Worker \d+ on .* (left|unreachable|terminated|removed)", run.Error);

        var a = ModelFile.Read(Path.Combine(temp["ref"], "model.bnc"));
        var b = ModelFile.Read(Path.Combine(temp["proc"], "model.bnc"));
        Assert.Equal(45L, Convert.ToInt64(b.Training["steps"]));
        AssertTensors(a, b, relative: 1e-4);

    }

    /// <summary>
    /// A second worker process joining a coordinator that is training with one: the shared-memory files of the BN
    /// exchange and the sharded update are replaced while attempts run (the state pulled back from the old file and pushed
    /// into the new), and the run goes on with both workers sharing the update until it completes.
    /// </summary>
    [Fact]
    public async Task A_worker_process_joining_mid_run_gets_new_exchange_files_and_the_run_completes()
    {
        using var temp = new TempFolder();
        var tap = new LineTap();
        var listening = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var sharded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        tap.Line += line =>
        {
            var m = Regex.Match(line, @"--join (127\.0\.0\.1:\d+)");
            if (m.Success) listening.TrySetResult(m.Groups[1].Value);
            if (line.Contains("Workers 0: the optimizer update sharded", StringComparison.Ordinal)) sharded.TrySetResult();
        };
        using var cancel = new CancellationTokenSource();
        // Fashion-MNIST (234 steps an epoch, 784-256-10): long enough for the second worker process to start and join mid-run.
        var coordinator = Task.Run(() => CliHarness.Run(cancel.Token, tap,
            "coordinator", "--listen", "127.0.0.1:0", "--workers", "1", "--dataset", "fashion-mnist", "--hidden", "256", "--batch", "256",
            "--epochs", "6", "--seed", "7", "--optimizer", "momentum", "--lr", "0.05", "--out", temp["run"]));
        var workers = new List<Process>();
        try
        {
            string endpoint = await listening.Task.WaitAsync(Limit);
            Process StartWorker()
            {
                var psi = WorkerProcesses.Executable();
                foreach (var a in new[] { "worker", "--join", endpoint, "--dataset", "fashion-mnist", "--threads", "1" }) psi.ArgumentList.Add(a);
                psi.RedirectStandardError = true;
                psi.RedirectStandardOutput = true;
                var p = Process.Start(psi)!;
                _ = p.StandardOutput.ReadToEndAsync();
                _ = p.StandardError.ReadToEndAsync();
                workers.Add(p);
                return p;
            }
            StartWorker();
            await Task.WhenAny(sharded.Task, coordinator).WaitAsync(Limit);
            Assert.True(sharded.Task.IsCompleted, "the first worker never took the shared-memory files:\n" + tap);
            StartWorker();
            var run = await coordinator.WaitAsync(Limit);
            Assert.True(run.Exit == 0, run.Error);
            Assert.Contains("Workers 0: the optimizer update sharded over them in shared memory", run.Error);
            Assert.Contains("Workers 0, 1: the optimizer update sharded over them in shared memory", run.Error);
            var metrics = File.ReadAllLines(Path.Combine(temp["run"], "metrics.jsonl"));
            Assert.Equal(6, metrics.Length);
            Assert.True(JsonDocument.Parse(metrics[^1]).RootElement.GetProperty("test_accuracy").GetDouble() > 0.8, metrics[^1]);
            Assert.Empty(LeftSharedFiles());
        }
        finally
        {
            foreach (var w in workers)
            {
                if (!w.HasExited) w.Kill(entireProcessTree: true);
                w.Dispose();
            }
            cancel.Cancel();
            await coordinator.WaitAsync(Limit);
        }
    }

    [Fact]
    public async Task A_worker_with_another_dataset_is_refused_with_the_reason_on_both_sides()
    {
        using var temp = new TempFolder();
        string csv = temp["other.csv"];
        File.WriteAllText(csv, "a,b,label\n" + string.Join("\n", Enumerable.Range(0, 20).Select(i => $"{i},{i * 2},{i % 2}")) + "\n");

        var tap = new LineTap();
        var listening = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var refusedHere = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        tap.Line += line =>
        {
            var m = Regex.Match(line, @"--join (127\.0\.0\.1:\d+)");
            if (m.Success) listening.TrySetResult(m.Groups[1].Value);
            if (line.Contains("refused", StringComparison.Ordinal) && line.Contains("dataset sha256", StringComparison.Ordinal)) refusedHere.TrySetResult();
        };
        using var cancel = new CancellationTokenSource();
        var coordinator = Task.Run(() => CliHarness.Run(cancel.Token, tap,
            "coordinator", "--listen", "127.0.0.1:0", "--workers", "1", "--dataset", "digits", "--hidden", "8", "--max-steps", "2", "--out", temp["run"]));
        Process? worker = null;
        try
        {
            string endpoint = await listening.Task.WaitAsync(Limit);
            var psi = WorkerProcesses.Executable();
            foreach (var a in new[] { "worker", "--join", endpoint, "--dataset", csv }) psi.ArgumentList.Add(a);
            psi.RedirectStandardError = true;
            psi.RedirectStandardOutput = true;
            worker = Process.Start(psi)!;
            var stdoutTask = worker.StandardOutput.ReadToEndAsync();
            string workerErr = await worker.StandardError.ReadToEndAsync().WaitAsync(Limit);
            await worker.WaitForExitAsync().WaitAsync(Limit);
            await refusedHere.Task.WaitAsync(Limit);
            Assert.Equal(2, worker.ExitCode); // wrong input: a supervisor does not restart it
            Assert.Contains("refused", workerErr, StringComparison.Ordinal);
            Assert.Contains("dataset sha256", workerErr, StringComparison.Ordinal);
            _ = await stdoutTask;
        }
        finally
        {
            if (worker is { HasExited: false }) worker.Kill(entireProcessTree: true);
            worker?.Dispose();
            cancel.Cancel();
            await coordinator.WaitAsync(Limit);
        }
    }

    /// <summary>Three epochs of 15 steps (no --max-steps), so that a kill after epoch 1 lands mid-run; momentum SGD.</summary>
    private static string[] Override(string[] args)
    {
        var list = args.ToList();
        int i = list.IndexOf("--max-steps");
        list.RemoveRange(i, 2);
        list[list.IndexOf("--epochs") + 1] = "3";
        // Momentum rather than Adam: Adam's m/sqrt(v) turns the float32 rounding of a different shard sum (3 → 2
        // workers) into lr-sized steps on near-zero gradients; momentum keeps the difference at rounding scale.
        list.AddRange(["--optimizer", "momentum", "--lr", "0.05"]);
        return [.. list];
    }

    internal static void AssertTensors(ModelDocument a, ModelDocument b, double relative)
    {
        Assert.Equal(a.Layers.Count, b.Layers.Count);
        Compare("input mean", a.Input.Mean, b.Input.Mean, relative);
        Compare("input var", a.Input.Var, b.Input.Var, relative);
        for (int l = 0; l < a.Layers.Count; l++)
        {
            switch (a.Layers[l], b.Layers[l])
            {
                case (DenseLayerRecord x, DenseLayerRecord y):
                    Compare($"layer {l} weight", x.Weight, y.Weight, relative);
                    Compare($"layer {l} bias", x.Bias ?? [], y.Bias ?? [], relative);
                    break;
                case (BatchNormLayerRecord x, BatchNormLayerRecord y):
                    Compare($"layer {l} gamma", x.Gamma, y.Gamma, relative);
                    Compare($"layer {l} beta", x.Beta, y.Beta, relative);
                    Compare($"layer {l} running mean", x.RunningMean, y.RunningMean, relative);
                    Compare($"layer {l} running var", x.RunningVar, y.RunningVar, relative);
                    break;
                case (ActivationLayerRecord x, ActivationLayerRecord y):
                    Assert.Equal(x.Type, y.Type);
                    break;
                default:
                    Assert.Fail($"layer {l}: {a.Layers[l].GetType().Name} vs {b.Layers[l].GetType().Name}");
                    break;
            }
        }
    }

    private static void Compare(string what, float[] x, float[] y, double relative)
    {
        Assert.Equal(x.Length, y.Length);
        for (int i = 0; i < x.Length; i++)
        {
            if (relative == 0)
                Assert.True(BitConverter.SingleToInt32Bits(x[i]) == BitConverter.SingleToInt32Bits(y[i]), $"{what}[{i}]: {x[i]:R} vs {y[i]:R}");
            else
                Assert.True(Math.Abs(x[i] - y[i]) <= relative * Math.Max(1e-3, Math.Max(Math.Abs(x[i]), Math.Abs(y[i]))),
                    $"{what}[{i}]: {x[i]:R} vs {y[i]:R}");
        }
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessCollection { public const string Name = "worker processes"; }

/// <summary>A TextWriter that keeps everything and raises <see cref="Line"/> for every complete line.</summary>
public sealed class LineTap : TextWriter
{
    private readonly StringBuilder _all = new();
    private readonly StringBuilder _line = new();
    public event Action<string>? Line;
    public override Encoding Encoding => Encoding.UTF8;

    public override void Write(char value)
    {
        string? complete = null;
        lock (_all)
        {
            _all.Append(value);
            if (value == '\n') { complete = _line.ToString(); _line.Clear(); }
            else _line.Append(value);
        }
        if (complete is not null) Line?.Invoke(complete);
    }

    public override string ToString() { lock (_all) return _all.ToString(); }
}
