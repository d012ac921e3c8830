using System.Diagnostics;
using System.Text.RegularExpressions;
using Xunit;

namespace BnCluster.IntegrationTests.Processes;

/// <summary>
/// `train --processes` whose worker processes all die before joining (a crash at start-up, an OOM kill): the run fails
/// with one line naming their exit codes, instead of waiting for joins forever, and writes no model.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class LostChildrenTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Every_worker_process_gone_before_joining_fails_the_run_with_their_exit_codes()
    {
        using var temp = new TempFolder();
        var tap = new LineTap();
        tap.Line += line =>
        {
            // Kill each child the moment it is started: it never gets to join.
            var started = Regex.Match(line, @"Started worker process \d+ \(pid (\d+)\)");
            if (!started.Success) return;
            try { Process.GetProcessById(int.Parse(started.Groups[1].Value)).Kill(); }
            catch (ArgumentException) { /* already gone */ }
        };
        using var cancel = new CancellationTokenSource();
        var running = Task.Run(() => CliHarness.Run(cancel.Token, tap, "train", "--dataset", "digits", "--hidden", "16", "--batch", "96",
            "--epochs", "1", "--workers", "2", "--processes", "--out", temp["run"]));
        CliRun run;
        try { run = await running.WaitAsync(Limit); }
        catch (TimeoutException)
        {
            cancel.Cancel();
            await running.WaitAsync(Limit);
            throw new Xunit.Sdk.XunitException("the run kept waiting after its worker processes died:\n" + tap);
        }

        Assert.True(run.Exit == 1, $"exit {run.Exit}:\n{run.Error}");
        Assert.Matches(@"every worker process exited before the run finished \(worker 0: code \d+, worker 1: code \d+\)", run.Error);
        Assert.False(File.Exists(Path.Combine(temp["run"], "model.bnc")), "a model was written");
    }
}
