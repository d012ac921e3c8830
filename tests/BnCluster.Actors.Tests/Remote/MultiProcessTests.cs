using System.Diagnostics;
using System.Net.Sockets;
using BnCluster.Actors.Remote;
using Xunit;

namespace BnCluster.Actors.Tests.Remote;

/// <summary>A BnCluster.Actors.TestNode process; its stdout lines are collected so tests wait on them.</summary>
public sealed class NodeProcess : IDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(20);
    private readonly Process _process;
    private readonly List<string> _lines = [];

    public NodeProcess(string name, Address? seed, int port = 0)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(TestNodeDll);
        foreach (var arg in new[] { "--name", name, "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--job", "job-1",
                     "--heartbeat-ms", "100", "--pause-ms", "500", "--down-ms", "1000" })
            info.ArgumentList.Add(arg);
        if (seed is not null)
        {
            info.ArgumentList.Add("--seed");
            info.ArgumentList.Add(seed.ToString());
        }
        _process = new Process { StartInfo = info };
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (_lines)
            {
                _lines.Add(e.Data);
                Monitor.PulseAll(_lines);
            }
        };
        _process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (_lines)
            {
                _lines.Add("STDERR " + e.Data);
                Monitor.PulseAll(_lines);
            }
        };
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        var listening = WaitForLine(l => l.StartsWith("LISTENING ", StringComparison.Ordinal), StartTimeout);
        Address = Address.Parse(listening["LISTENING ".Length..]);
    }

    public Address Address { get; }

    public int LineCount
    {
        get { lock (_lines) return _lines.Count; }
    }

    /// <summary>Waits for a stdout line (from index <paramref name="from"/> on) matching <paramref name="match"/>.</summary>
    public string WaitForLine(Func<string, bool> match, TimeSpan? timeout = null, int from = 0)
    {
        var deadline = Stopwatch.StartNew();
        var limit = timeout ?? TimeSpan.FromSeconds(10);
        lock (_lines)
        {
            var next = from;
            while (true)
            {
                for (; next < _lines.Count; next++)
                    if (match(_lines[next])) return _lines[next];
                var left = limit - deadline.Elapsed;
                if (left <= TimeSpan.Zero || _process.HasExited && !Monitor.Wait(_lines, 100))
                    throw new TimeoutException($"No matching line from the test node within {limit.TotalMilliseconds:0} ms; output: [{string.Join(" | ", _lines)}]");
                Monitor.Wait(_lines, left);
            }
        }
    }

    public string WaitFor(string prefix, Address address, int from = 0, TimeSpan? timeout = null) =>
        WaitForLine(l => l == $"{prefix} {address}", timeout, from);

    public bool HasLine(Func<string, bool> match)
    {
        lock (_lines) return _lines.Any(match);
    }

    /// <summary>Sends a POSIX signal (e.g. TERM, INT) with the kill command.</summary>
    public void Signal(string name)
    {
        using var kill = Process.Start("kill", ["-" + name, _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        kill.WaitForExit();
    }

    public int WaitForExit(TimeSpan timeout) =>
        _process.WaitForExit(timeout) ? _process.ExitCode : throw new TimeoutException($"The test node did not exit within {timeout.TotalMilliseconds:0} ms.");

    public void Kill()
    {
        try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); }
        catch (InvalidOperationException) { }
        _process.WaitForExit(5000);
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }

    /// <summary>The TestNode build output next to this test project's (same configuration).</summary>
    private static string TestNodeDll
    {
        get
        {
            var baseDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
            var tfm = baseDir.Name;
            var configuration = baseDir.Parent!.Name;
            var testsDir = baseDir.Parent.Parent!.Parent!.Parent!.FullName;
            var dll = Path.Combine(testsDir, "BnCluster.Actors.TestNode", "bin", configuration, tfm, "BnCluster.Actors.TestNode.dll");
            return File.Exists(dll) ? dll : throw new FileNotFoundException($"TestNode not built at {dll}; build tests/BnCluster.Actors.Tests (it references the TestNode project).");
        }
    }
}

public sealed class MultiProcessTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Two_processes_join_and_answer_remote_asks()
    {
        using var seed = new NodeProcess("seed", null);
        using var worker = new NodeProcess("w1", seed.Address);
        seed.WaitFor("UP", worker.Address);
        worker.WaitFor("UP", seed.Address);
        using var client = new RemoteNode("client");
        var echo = client.Sys.ActorSelection(worker.Address + "/user/echo");
        Assert.Equal("hi", await echo.Ask<string>("hi", Timeout));
        Assert.Equal(new byte[] { 9, 8 }, await echo.Ask<byte[]>(new byte[] { 9, 8 }, Timeout));

        // SIGTERM: the worker leaves gracefully (the seed sees it leave, then removes it) and exits 0
        worker.Signal("TERM");
        seed.WaitFor("LEFT", worker.Address);
        seed.WaitFor("REMOVED", worker.Address);
        Assert.Equal(0, worker.WaitForExit(Timeout));
        Assert.False(seed.HasLine(l => l == $"UNREACHABLE {worker.Address}"));
    }

    [Fact]
    public async Task Three_processes_a_killed_one_is_removed_and_rejoins_after_restart_and_bad_peers_are_refused()
    {
        using var seed = new NodeProcess("seed", null);
        using var w1 = new NodeProcess("w1", seed.Address);
        var w2 = new NodeProcess("w2", seed.Address);
        try
        {
            foreach (var node in new[] { w1.Address, w2.Address }) seed.WaitFor("UP", node);
            w1.WaitFor("UP", w2.Address);

            var killedAddress = w2.Address;
            var killedAt = Stopwatch.StartNew();
            w2.Kill(); // kill -9: no leave
            seed.WaitFor("UNREACHABLE", killedAddress);
            w1.WaitFor("UNREACHABLE", killedAddress);
            seed.WaitFor("REMOVED", killedAddress);
            w1.WaitFor("REMOVED", killedAddress);
            Assert.True(killedAt.Elapsed < TimeSpan.FromSeconds(6), $"removal took {killedAt.Elapsed}");

            var mark = seed.LineCount;
            var markW1 = w1.LineCount;
            w2.Dispose();
            w2 = new NodeProcess("w2", seed.Address, killedAddress.Port!.Value); // same host:port, new incarnation
            seed.WaitFor("UP", killedAddress, mark);
            w1.WaitFor("UP", killedAddress, markW1);

            // bad peers on raw sockets: random bytes, an oversized length, a wrong handshake
            var markBad = seed.LineCount;
            await SendRaw(seed.Address, [0, 0, 0, 4, 0xc1, 0xde, 0xad, 0xbe]); // a frame of non-MessagePack bytes
            await SendRaw(seed.Address, [0x7f, 0xff, 0xff, 0xff]);
            using (var wrongJob = new RemoteNode("wrong", new RemoteSettings { JobId = "other-job" }))
            {
                await Assert.ThrowsAsync<AskTimeoutException>(() =>
                    wrongJob.Sys.ActorSelection(seed.Address + "/user/echo").Ask<string>("x", TimeSpan.FromSeconds(1)));
                wrongJob.AwaitLog("refused");
            }
            seed.WaitForLine(l => l.StartsWith("LOG Warning Closing connection", StringComparison.Ordinal) && l.Contains("not a valid handshake"), Timeout, markBad);
            seed.WaitForLine(l => l.StartsWith("LOG Warning Closing connection", StringComparison.Ordinal) && l.Contains("exceeds the maximum frame size"), Timeout, markBad);
            seed.WaitForLine(l => l.StartsWith("LOG Warning Refused connection", StringComparison.Ordinal) && l.Contains("job id 'other-job'"), Timeout, markBad);

            using var client = new RemoteNode("client");
            Assert.Equal("still", await client.Sys.ActorSelection(seed.Address + "/user/echo").Ask<string>("still", Timeout));
            Assert.Equal("alive", await client.Sys.ActorSelection(w2.Address + "/user/echo").Ask<string>("alive", Timeout));
            Assert.False(w1.HasLine(l => l == $"UNREACHABLE {seed.Address}"));
        }
        finally
        {
            w2.Dispose();
        }
    }

    private static async Task SendRaw(Address address, byte[] bytes)
    {
        using var raw = new TcpClient();
        await raw.ConnectAsync(address.Host!, address.Port!.Value);
        var stream = raw.GetStream();
        await stream.WriteAsync(bytes);
        var sink = new byte[256];
        using var cts = new CancellationTokenSource(Timeout);
        try { while (await stream.ReadAsync(sink, cts.Token) > 0) { } }
        catch (IOException) { }
    }
}
