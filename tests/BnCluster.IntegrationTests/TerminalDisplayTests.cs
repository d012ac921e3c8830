using System.Diagnostics;
using System.Text.RegularExpressions;
using BnCluster.IntegrationTests.Processes;
using BnCluster.Node.Backends;
using Xunit;

namespace BnCluster.IntegrationTests;

/// <summary>
/// What a person sees: `bncluster train` (this build's executable) on a terminal — a tmux pane of 100×50 — and piped.
/// The tmux screen is read as the person would read it (capture-pane, wrapped lines joined).
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class TerminalDisplayTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(120);
    private const int Epochs = 4;

    private static string[] TrainArgs(string folder, params string[] more) =>
        ["train", "--dataset", "digits", "--hidden", "32", "--batch", "64", "--epochs", Epochs.ToString(), "--seed", "3", "--out", folder, .. more];

    [Fact]
    public async Task On_a_terminal_each_epoch_has_one_bar_with_the_log_lines_whole_above_and_below_it()
    {
        using var temp = new TempFolder();
        using var pane = TmuxPane.Start(100, 50, TrainArgs(temp["run"]));
        await pane.WaitForExitAsync(Limit);
        string[] screen = pane.Capture();
        string all = string.Join('\n', screen);
        Assert.True(screen.Contains("[exit 0]"), "the run did not exit 0:\n" + all);

        // One bar row per epoch, in order, each finished: x/N with x = N, its time, loss, accuracy, samples/s. No other
        // row starts like a bar (no stale copy of a bar redrawn elsewhere) and no live row is left (no ETA).
        var bars = screen.Where(l => l.StartsWith("epoch ", StringComparison.Ordinal)).ToArray();
        Assert.True(bars.Length == Epochs, $"{bars.Length} bar rows for {Epochs} epochs:\n" + all);
        for (int e = 1; e <= Epochs; e++)
            Assert.Matches($@"^epoch {e}/{Epochs} [━-]{{10,40}} (\d+)/\1 took \d+\.\ds loss \d+\.\d{{4}} acc \d+\.\d\d% \d+ samples/s$", bars[e - 1]);
        Assert.DoesNotContain("ETA", all);
        Assert.True(bars.All(b => b.Length < 100), "a bar row is as wide as the terminal:\n" + all);

        // Each epoch's log line once and whole (a line of its own, wrapped only by the terminal), below its bar and above the next.
        for (int e = 1; e <= Epochs; e++)
        {
            var epochLine = new Regex($@"^\d\d:\d\d:\d\d INF Epoch {e} done at step {e * 23}: loss \d+\.\d{{4}} accuracy [\d.]+ ?%, test loss \d+\.\d{{4}} accuracy [\d.]+ ?%, \d+ samples/s, \d+ ms$");
            int line = Array.FindIndex(screen, l => epochLine.IsMatch(l));
            Assert.True(line >= 0 && Array.FindLastIndex(screen, l => epochLine.IsMatch(l)) == line, $"epoch {e}'s log line is not there once, whole:\n" + all);
            Assert.InRange(line, Array.IndexOf(screen, bars[e - 1]) + 1, e < Epochs ? Array.IndexOf(screen, bars[e]) - 1 : screen.Length);
        }
        Assert.Single(screen, l => l.StartsWith("test accuracy ", StringComparison.Ordinal) && l.EndsWith("run folder " + temp["run"], StringComparison.Ordinal));
        Assert.True(Regex.IsMatch(screen[0], @"^\d\d:\d\d:\d\d INF Training digits \(1437 train rows"), "the first line is not the run's first:\n" + all);
    }

    [Fact]
    public async Task Piped_output_has_exactly_one_line_per_epoch()
    {
        using var temp = new TempFolder();
        var (exit, lines) = await RunPipedAsync(TrainArgs(temp["run"]));
        string all = string.Join('\n', lines);
        Assert.True(exit == 0, $"exit {exit}:\n{all}");
        Assert.DoesNotContain('\u001b', all); // no terminal control codes in a pipe
        for (int e = 1; e <= Epochs; e++)
        {
            // Lines about epoch e, apart from the occasional batch line "epoch e/N step s (b/B): …" of a slow machine.
            var about = lines.Where(l => Regex.IsMatch(l, $@"(?i)\bepoch {e}\b") && !Regex.IsMatch(l, @"step \d+ \(\d+/\d+\)")).ToArray();
            Assert.True(about.Length == 1, $"{about.Length} lines about epoch {e}:\n{all}");
            Assert.Contains($"INF Epoch {e} done at step {e * 23}: loss ", about[0]);
        }
        Assert.StartsWith("test accuracy ", lines[^1]);
    }

    [Fact]
    public async Task Quiet_prints_the_summary_line_only()
    {
        using var temp = new TempFolder();
        var (exit, lines) = await RunPipedAsync(TrainArgs(temp["run"], "--quiet"));
        Assert.True(exit == 0, $"exit {exit}:\n{string.Join('\n', lines)}");
        Assert.Matches(@"^test accuracy \d\.\d{4}, test loss \d+\.\d{4}, \d+ samples/s, \d+ steps in [\d.]+ s, run folder ", Assert.Single(lines));
        Assert.Contains(File.ReadLines(Path.Combine(temp["run"], "log.jsonl")), EpochEvent(Epochs)); // the log file keeps everything
    }

    [Fact]
    public async Task Log_level_sets_what_the_console_shows_and_not_what_the_log_file_keeps()
    {
        using var temp = new TempFolder();
        var (exit, lines) = await RunPipedAsync(TrainArgs(temp["warn"], "--log-level", "warning", "--workers", "1"));
        Assert.True(exit == 0, $"exit {exit}:\n{string.Join('\n', lines)}");
        Assert.DoesNotContain(lines, l => l.Contains(" INF ", StringComparison.Ordinal));
        Assert.StartsWith("test accuracy ", lines[^1]);
        Assert.Contains(File.ReadLines(Path.Combine(temp["warn"], "log.jsonl")), EpochEvent(Epochs));

        (exit, lines) = await RunPipedAsync(TrainArgs(temp["debug"], "--log-level", "debug", "--workers", "1"));
        Assert.True(exit == 0, $"exit {exit}:\n{string.Join('\n', lines)}");
        Assert.Contains(lines, l => Regex.IsMatch(l, @"^\d\d:\d\d:\d\d DBG Step 1 epoch 1 committed"));
    }

    private static Predicate<string> EpochEvent(int epoch) =>
        line => line.Contains("\"@mt\":\"Epoch {Epoch} done", StringComparison.Ordinal) && line.Contains($"\"Epoch\":{epoch},", StringComparison.Ordinal);

    /// <summary>Runs this build's bncluster with stdout and stderr into one pipe; its lines in the order they came.</summary>
    private static async Task<(int Exit, string[] Lines)> RunPipedAsync(string[] args)
    {
        var psi = WorkerProcesses.Executable();
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        var lines = new List<string>();
        using var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => { if (e.Data is { } l) lock (lines) lines.Add(l); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is { } l) lock (lines) lines.Add(l); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        try { await p.WaitForExitAsync().WaitAsync(Limit); }
        finally { if (!p.HasExited) p.Kill(entireProcessTree: true); }
        p.WaitForExit(); // the output events have all run
        lock (lines) return (p.ExitCode, lines.ToArray());
    }
}

/// <summary>
/// A command in a tmux pane of a fixed size, on a tmux server of its own (a socket name of its own), killed on Dispose
/// whatever happened. The pane stays after the command exits (remain-on-exit), which then prints "[exit CODE]" and
/// signals a tmux channel: <see cref="WaitForExitAsync"/> waits on that channel, not on time.
/// </summary>
internal sealed class TmuxPane : IDisposable
{
    // Spectre.Console treats a terminal as non-interactive when it sees one of these CI variables; the pane is a terminal.
    private static readonly string[] CiVariables = ["CI_SERVER", "GITHUB_ACTIONS", "APPVEYOR", "BITBUCKET_COMMIT", "BITBUCKET_REPO_OWNER",
        "BITBUCKET_REPO_SLUG", "BITRISE_BUILD_URL", "GO_SERVER_URL", "JENKINS_URL", "TEAMCITY_VERSION", "TF_BUILD", "TRAVIS", "bamboo_buildNumber"];

    private readonly string _socket = "bnc-test-" + Guid.NewGuid().ToString("N")[..12];
    private readonly string _config = Path.Combine(Path.GetTempPath(), "bnc-tmux-" + Guid.NewGuid().ToString("N") + ".conf");
    private const string Done = "bncluster-done";
    private string? _socketPath; // the server leaves its socket file behind

    private TmuxPane() { }

    /// <summary>Starts this build's bncluster with <paramref name="args"/> in a pane of width × height.</summary>
    public static TmuxPane Start(int width, int height, string[] args)
    {
        var program = WorkerProcesses.Executable();
        var argv = new[] { program.FileName }.Concat(program.ArgumentList).Concat(args);
        var pane = new TmuxPane();
        try
        {
            File.WriteAllText(pane._config, "set -g remain-on-exit on\nset -g history-limit 10000\n");
            string command = string.Join(' ', argv.Select(Quote)) + $"; echo \"[exit $?]\"; tmux -L {pane._socket} wait-for -S {Done}";
            pane.Tmux("-f", pane._config, "new-session", "-d", "-x", width.ToString(), "-y", height.ToString(), "sh", "-c", command);
            pane._socketPath = pane.Tmux("display-message", "-p", "#{socket_path}").Trim();
            return pane;
        }
        catch
        {
            pane.Dispose();
            throw;
        }
    }

    public async Task WaitForExitAsync(TimeSpan limit)
    {
        using var wait = Process.Start(Info("wait-for", Done))!;
        try { await wait.WaitForExitAsync().WaitAsync(limit); }
        catch (TimeoutException)
        {
            wait.Kill();
            throw new TimeoutException($"the command in the tmux pane did not finish in {limit.TotalSeconds} s; its screen:\n" + string.Join('\n', Capture()));
        }
    }

    /// <summary>The pane's whole text (scrollback included), lines the terminal wrapped joined, trailing blanks trimmed.</summary>
    public string[] Capture() =>
        Tmux("capture-pane", "-p", "-J", "-S", "-").Split('\n').Select(l => l.TrimEnd())
            .Where(l => !l.StartsWith("Pane is dead", StringComparison.Ordinal)).Reverse().SkipWhile(l => l.Length == 0).Reverse().ToArray();

    private ProcessStartInfo Info(params string[] args)
    {
        var psi = new ProcessStartInfo("tmux") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("-L");
        psi.ArgumentList.Add(_socket);
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var v in CiVariables) psi.Environment.Remove(v);
        return psi;
    }

    private string Tmux(params string[] args)
    {
        using var p = Process.Start(Info(args))!;
        var error = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"tmux {string.Join(' ', args)}: exit {p.ExitCode}: {error.Result} (tmux is needed: apt-get install tmux)");
        return output;
    }

    private static string Quote(string s) => "'" + s.Replace("'", "'\\''") + "'";

    public void Dispose()
    {
        try { Tmux("kill-server"); } catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception) { }
        File.Delete(_config);
        if (_socketPath is { Length: > 0 }) File.Delete(_socketPath);
    }
}
