using System.Text.Json;
using System.Text.RegularExpressions;
using BnCluster.Core.Model;
using BnCluster.Node;
using BnCluster.Node.Commands;
using Xunit;

namespace BnCluster.IntegrationTests.Processes;

/// <summary>`bncluster status` against a real cluster of worker processes, and against an address where nothing listens.</summary>
[Collection(ProcessCollection.Name)]
public sealed class StatusTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(90);

    static StatusTests() => Environment.SetEnvironmentVariable("BNCLUSTER_HEARTBEAT_MS", "500"); // as ProcessClusterTests

    // 45 steps an epoch, 100 epochs: the run trains for several seconds after its first step, which the watch sees
    // within one refresh (0.2 s).
    private static string[] Train(string outDir, bool processes, params string[] extra) =>
    [
        "train", "--dataset", "digits", "--hidden", "16,16", "--batch", "32", "--epochs", "100", "--seed", "7", "--workers", "2", "--threads", "2",
        "--out", outDir, .. processes ? ["--processes"] : Array.Empty<string>(), .. extra,
    ];

    [Fact]
    public async Task Status_watching_a_process_cluster_shows_its_members_and_steps_and_the_run_gives_the_same_model()
    {
        using var temp = new TempFolder();
        var trainLog = new LineTap();
        var listening = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        trainLog.Line += line =>
        {
            var m = Regex.Match(line, @"Coordinator listening on akka\.tcp://bncluster@(127\.0\.0\.1:\d+)");
            if (m.Success) listening.TrySetResult(m.Groups[1].Value);
        };
        var run = Task.Run(() => CliHarness.Run(CancellationToken.None, trainLog, Train(temp["watched"], processes: true)));
        string endpoint = await Task.WhenAny(listening.Task, run).WaitAsync(Limit) == listening.Task
            ? await listening.Task : throw new Xunit.Sdk.XunitException("the run ended before its coordinator listened:\n" + trainLog);

        // Watch (JSON lines) until a status shows training under way with both workers: then Ctrl+C.
        using var stopWatching = new CancellationTokenSource();
        var watchOut = new LineTap();
        var watchErr = new StringWriter();
        JsonElement? seen = null;
        watchOut.Line += line =>
        {
            var status = JsonDocument.Parse(line).RootElement;
            if (status.GetProperty("training") is { ValueKind: JsonValueKind.Object } t && t.GetProperty("step").GetInt64() > 0
                && t.GetProperty("state").GetString() == "training" && status.GetProperty("members").GetArrayLength() == 3)
            {
                seen = status.Clone();
                stopWatching.Cancel();
            }
        };
        int watchExit = await Cli.RunAsync(["status", endpoint, "--watch", "0.2", "--json", "--timeout", "30"], watchOut, watchErr, Program.Backends, stopWatching.Token)
            .WaitAsync(Limit);
        Assert.True(watchExit == Cli.ExitCancelled, $"status exit {watchExit}: {watchErr}"); // stopped as by Ctrl+C
        Assert.True(seen is not null, $"the watch ended before it saw a step with both workers: {watchErr}\n{watchOut}");
        var training = seen.Value.GetProperty("training");
        Assert.Equal("training", training.GetProperty("state").GetString());
        Assert.Equal(100, training.GetProperty("epochs").GetInt32());
        Assert.Equal(2, training.GetProperty("workers").GetArrayLength());
        Assert.True(training.GetProperty("last_loss").GetDouble() > 0);
        var members = seen.Value.GetProperty("members").EnumerateArray()
            .Select(m => (Role: m.GetProperty("roles")[0].GetString(), Status: m.GetProperty("status").GetString(), Reachable: m.GetProperty("reachable").GetBoolean()))
            .OrderBy(m => m.Role).ToList();
        Assert.Equal([("coordinator", "Up", true), ("worker", "Up", true), ("worker", "Up", true)], members);
        Assert.Equal($"akka.tcp://bncluster@{endpoint}", seen.Value.GetProperty("node").GetString());

        var watched = await run.WaitAsync(Limit);
        Assert.True(watched.Exit == 0, watched.Error);
        // The observer was never a member: no step aborted (a worker lost mid-run aborts its step), no node unreachable, no
        // worker joined again, nobody else joined. (Workers leave at the end: "removed from the cluster".)
        Assert.DoesNotContain(watched.ErrorLines, l => l.Contains(" aborted: ", StringComparison.Ordinal) || l.Contains("unreachable", StringComparison.Ordinal)
            || l.Contains("joined again", StringComparison.Ordinal));
        Assert.Equal(2, Regex.Matches(watched.Error, @"Worker \d+ on \S+ joined \(").Count);
        Assert.Matches(@"4500 steps in", watched.Out);

        var plain = await Task.Run(() => CliHarness.Run(Train(temp["plain"], processes: false, "--no-shared-memory"))).WaitAsync(Limit);
        Assert.True(plain.Exit == 0, plain.Error);
        ProcessClusterTests.AssertTensors(ModelFile.Read(Path.Combine(temp["plain"], "model.bnc")), ModelFile.Read(Path.Combine(temp["watched"], "model.bnc")), relative: 0);
    }

    [Fact]
    public async Task Status_of_an_address_where_nothing_listens_is_one_line_and_exit_1_at_once()
    {
        int port;
        using (var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0)) // a free port, closed again
        {
            probe.Start();
            port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
        }
        // At once: the refusal, not the 600 s --timeout (which would outlast the test's limit).
        var result = await Task.Run(() => CliHarness.Run("status", $"127.0.0.1:{port}", "--timeout", "600")).WaitAsync(Limit);
        Assert.Equal(1, result.Exit);
        Assert.Equal($"bncluster: status: nothing listens at 127.0.0.1:{port} (connection refused); is the coordinator running, and is this its --listen address?",
            Assert.Single(result.ErrorLines));
        Assert.Empty(result.Out);

        var bad = CliHarness.Run("status", "127.0.0.1");
        Assert.Equal(2, bad.Exit);
        Assert.Equal("bncluster: HOST:PORT: \"127.0.0.1\" is not HOST:PORT with a port in 1..65535", Assert.Single(bad.ErrorLines));
    }

    [Fact]
    public async Task Status_of_a_listener_that_is_not_a_bncluster_gives_up_after_the_timeout_with_one_line()
    {
        // Something that accepts connections and never speaks Akka's protocol.
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        var accepted = new List<System.Net.Sockets.TcpClient>();
        var accepting = Task.Run(async () =>
        {
            try { while (true) accepted.Add(await listener.AcceptTcpClientAsync()); }
            catch (Exception e) when (e is System.Net.Sockets.SocketException or ObjectDisposedException) { }
        });
        var result = await Task.Run(() => CliHarness.Run("status", $"127.0.0.1:{port}", "--timeout", "1")).WaitAsync(Limit);
        listener.Stop();
        await accepting;
        foreach (var c in accepted) c.Dispose();
        Assert.Equal(1, result.Exit);
        Assert.StartsWith($"bncluster: status: 127.0.0.1:{port} did not answer within 1 s (not a bncluster coordinator", Assert.Single(result.ErrorLines));
    }
}
