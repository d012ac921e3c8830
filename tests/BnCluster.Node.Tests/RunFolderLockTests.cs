using System.Text.Json;
using BnCluster.Core.Training;
using BnCluster.Node.Backends;
using BnCluster.Node.Commands;

namespace BnCluster.Node.Tests;

/// <summary>--out: a non-empty folder is refused unless --overwrite, a folder in use is refused, run.json tells what the run was and how it ended.</summary>
public sealed class RunFolderLockTests
{
    private sealed record Outcome(int Exit, string Out, string Err);

    private static async Task<Outcome> Train(ClusterTrainer? cluster, CancellationToken cancel, params string[] args)
    {
        var backends = new CliBackends { Train = (o, c, ct) => TrainBackend.RunAsync(o, c, cluster, ct) };
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = await Cli.RunAsync(["train", .. args], stdout, stderr, backends, cancel, new Dictionary<string, string>());
        return new Outcome(exit, stdout.ToString(), stderr.ToString());
    }

    private static JsonElement RunJson(string folder)
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(folder, RunRecord.FileName)));
        return document.RootElement.Clone();
    }

    /// <summary>A folder with something else in it: refused without --overwrite, and with it too (it is not a run folder); untouched either way.</summary>
    [Theory]
    [InlineData(false, "is not empty (notes.txt); give --overwrite to replace that run, or another --out")]
    [InlineData(true, "does not look like a run folder (no run.json, model.bnc, metrics.jsonl or log.jsonl); --overwrite clears only run folders")]
    public void A_folder_that_is_not_a_run_is_refused_and_left_exactly_as_it_was(bool overwrite, string expected)
    {
        using var dir = new TempDir();
        string folder = dir.File("mine");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "notes.txt"), "keep");
        var error = Assert.Throws<CliInputException>(() => RunFolderLock.Acquire(folder, overwrite));
        Assert.Equal($"--out: \"{folder}\" {expected}", error.Message);
        Assert.Equal(["notes.txt"], Directory.GetFileSystemEntries(folder).Select(Path.GetFileName));
    }

    [Fact]
    public void Overwrite_removes_links_without_following_them()
    {
        using var dir = new TempDir();
        string outside = dir.File("outside");
        Directory.CreateDirectory(outside);
        File.WriteAllText(Path.Combine(outside, "precious.txt"), "keep");
        string run = dir.File("run");
        Directory.CreateDirectory(Path.Combine(run, "sub"));
        File.WriteAllText(Path.Combine(run, RunFolder.ModelFileName), "old model");
        File.WriteAllText(Path.Combine(run, "sub", "x"), "old");
        Directory.CreateSymbolicLink(Path.Combine(run, "linked-folder"), outside);
        File.CreateSymbolicLink(Path.Combine(run, "linked-file"), Path.Combine(outside, "precious.txt"));
        Directory.CreateSymbolicLink(Path.Combine(run, "sub", "deeper-link"), outside);

        using (RunFolderLock.Acquire(run, overwrite: true))
            Assert.Equal([RunFolderLock.LockFileName], Directory.GetFileSystemEntries(run).Select(Path.GetFileName));
        Assert.Equal("keep", File.ReadAllText(Path.Combine(outside, "precious.txt")));
        Assert.Single(Directory.GetFileSystemEntries(outside));
    }

    [Fact]
    public void A_locked_folder_is_refused_until_its_run_releases_it()
    {
        using var dir = new TempDir();
        string run = dir.File("run");
        using (RunFolderLock.Acquire(run, overwrite: false))
        {
            var error = Assert.Throws<CliInputException>(() => RunFolderLock.Acquire(run, overwrite: true));
            Assert.Equal($"--out: \"{run}\" is in use by another run (it holds .lock); wait for it to end or choose another --out", error.Message);
        }
        using (RunFolderLock.Acquire(run, overwrite: false)) { } // released: the stale .lock alone does not make it non-empty
        File.WriteAllText(Path.Combine(run, RunFolder.LogFileName), "{}");
        var notEmpty = Assert.Throws<CliInputException>(() => RunFolderLock.Acquire(run, overwrite: false));
        Assert.Contains("is not empty (log.jsonl)", notEmpty.Message);
    }

    [Fact]
    public async Task A_second_run_on_a_folder_in_use_is_refused_and_cancelled_and_failed_runs_record_their_end()
    {
        using var dir = new TempDir();
        string run = dir.File("run");
        var training = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        // The first run: three committed steps, then it waits until it is cancelled (it holds the folder meanwhile).
        ClusterTrainer blocked = async (request, ct) =>
        {
            request.BatchProgress.Report(new BatchProgress(1, 2, 12, 3, 0.5, 0.75));
            training.SetResult();
            await Task.Delay(Timeout.Infinite, ct);
            throw new InvalidOperationException("not reached");
        };
        using var cancelFirst = new CancellationTokenSource();
        var first = Train(blocked, cancelFirst.Token, "--workers", "2", "--epochs", "1", "--out", run);
        await training.Task.WaitAsync(TimeSpan.FromSeconds(60));

        var running = RunJson(run);
        Assert.Equal("running", running.GetProperty("outcome").GetString());
        Assert.Equal(JsonValueKind.Null, running.GetProperty("ended").ValueKind);

        ClusterTrainer never = (_, _) => throw new InvalidOperationException("the second run must not train");
        foreach (var overwrite in new[] { false, true })
        {
            var second = await Train(never, CancellationToken.None, ["--workers", "2", "--epochs", "1", "--out", run, .. overwrite ? ["--overwrite"] : Array.Empty<string>()]);
            Assert.Equal(2, second.Exit);
            Assert.Equal($"bncluster: --out: \"{run}\" is in use by another run (it holds .lock); wait for it to end or choose another --out" + Environment.NewLine, second.Err);
        }

        cancelFirst.Cancel();
        var firstOutcome = await first.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(Cli.ExitCancelled, firstOutcome.Exit);
        var cancelled = RunJson(run);
        Assert.Equal("cancelled", cancelled.GetProperty("outcome").GetString());
        Assert.Equal(3, cancelled.GetProperty("steps").GetInt64());
        Assert.NotEqual(JsonValueKind.Null, cancelled.GetProperty("ended").ValueKind);

        // Now free: without --overwrite it is refused as not empty, with it the run starts afresh and records its failure.
        var refused = await Train(never, CancellationToken.None, "--workers", "2", "--epochs", "1", "--out", run);
        Assert.Equal(2, refused.Exit);
        Assert.StartsWith($"bncluster: --out: \"{run}\" is not empty (", refused.Err);
        ClusterTrainer failing = (_, _) => throw new InvalidOperationException("boom\nsecond line");
        var failed = await Train(failing, CancellationToken.None, "--workers", "2", "--epochs", "1", "--out", run, "--overwrite");
        Assert.Equal(1, failed.Exit);
        var record = RunJson(run);
        Assert.Equal("failed", record.GetProperty("outcome").GetString());
        Assert.Equal("boom second line", record.GetProperty("error").GetString());
        Assert.Equal(0, record.GetProperty("steps").GetInt64());
        // The log is the failed run's alone (one "Training digits … sha256 …" line): the cancelled run's was cleared with the folder.
        Assert.Single(File.ReadAllLines(Path.Combine(run, RunFolder.LogFileName)), l => l.Contains("sha256", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_completed_run_records_its_settings_dataset_layout_version_and_end()
    {
        using var dir = new TempDir();
        string run = dir.File("run");
        var r = await Train(null, CancellationToken.None, "--workers", "1", "--epochs", "1", "--batch", "512", "--hidden", "16",
            "--lr", "0.01", "--threads", "1", "--out", run);
        Assert.True(r.Exit == 0, r.Err);
        var record = RunJson(run);
        Assert.Equal(1, record.GetProperty("format").GetInt32());
        Assert.Equal("train", record.GetProperty("command").GetString());
        Assert.False(string.IsNullOrEmpty(record.GetProperty("version").GetString()));
        Assert.DoesNotContain("\\u", File.ReadAllText(Path.Combine(run, RunRecord.FileName))); // "1.0.0+commit", not "1.0.0\u002Bcommit"
        var started = record.GetProperty("started").GetDateTime();
        var ended = record.GetProperty("ended").GetDateTime();
        Assert.True(ended >= started);
        Assert.Equal("completed", record.GetProperty("outcome").GetString());
        Assert.Equal(JsonValueKind.Null, record.GetProperty("error").ValueKind);
        Assert.Equal(3, record.GetProperty("steps").GetInt64()); // ceil(1437 / 512)
        Assert.Equal(1, record.GetProperty("final").GetProperty("epoch").GetInt32());
        Assert.InRange(record.GetProperty("final").GetProperty("test_accuracy").GetDouble(), 0, 1);

        var settings = record.GetProperty("settings");
        Assert.Equal(0.01, settings.GetProperty("lr").GetDouble());
        Assert.Equal([16], settings.GetProperty("hidden").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal("adam", settings.GetProperty("optimizer").GetString());
        Assert.Equal(512, settings.GetProperty("batch").GetInt32());

        var dataset = record.GetProperty("dataset");
        Assert.Equal("digits", dataset.GetProperty("name").GetString());
        Assert.Matches("^[0-9a-f]{64}$", dataset.GetProperty("sha256").GetString()!);
        Assert.Equal((1437, 64, 10), (dataset.GetProperty("train").GetProperty("rows").GetInt32(),
            dataset.GetProperty("train").GetProperty("features").GetInt32(), dataset.GetProperty("train").GetProperty("classes").GetInt32()));
        Assert.Equal(360, dataset.GetProperty("test").GetProperty("rows").GetInt32());

        var layout = record.GetProperty("layout");
        Assert.Equal((1, false, 1, 1), (layout.GetProperty("workers").GetInt32(), layout.GetProperty("processes").GetBoolean(),
            layout.GetProperty("threads").GetInt32(), layout.GetProperty("min_workers").GetInt32()));
        Assert.True(File.Exists(Path.Combine(run, RunFolder.ModelFileName)));
        Assert.Empty(Directory.GetFiles(run, "*.tmp"));

        // Again on the same folder: refused without --overwrite (the model is untouched), replaced with it.
        byte[] model = File.ReadAllBytes(Path.Combine(run, RunFolder.ModelFileName));
        var again = await Train(null, CancellationToken.None, "--workers", "1", "--epochs", "1", "--batch", "512", "--hidden", "16", "--out", run);
        Assert.Equal(2, again.Exit);
        Assert.Equal(model, File.ReadAllBytes(Path.Combine(run, RunFolder.ModelFileName)));
    }

    [Fact]
    public async Task Overwrite_clears_nothing_when_the_dataset_does_not_load()
    {
        using var dir = new TempDir();
        string run = dir.File("run");
        Directory.CreateDirectory(run);
        File.WriteAllText(Path.Combine(run, RunFolder.ModelFileName), "old model");
        string csv = dir.File("bad.csv");
        File.WriteAllText(csv, "a,b,label\n1,2\n");
        var r = await Train(null, CancellationToken.None, "--dataset", csv, "--workers", "1", "--out", run, "--overwrite");
        Assert.Equal(2, r.Exit);
        Assert.Equal("old model", File.ReadAllText(Path.Combine(run, RunFolder.ModelFileName)));
        Assert.False(File.Exists(Path.Combine(run, RunFolderLock.LockFileName)));
    }
}
