using System.Diagnostics;
using System.Text.RegularExpressions;
using BnCluster.Coordinator;
using BnCluster.IntegrationTests.Processes;
using Xunit;

namespace BnCluster.IntegrationTests.Deploy;

/// <summary>
/// `--advertise`: a node binds every interface (0.0.0.0, as in a container) and its address names the host the others
/// reach it by, as Kubernetes pods and compose services need; the workers join that name and train.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class AdvertiseTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    [Fact]
    public void A_node_config_binds_the_listen_host_and_names_the_advertised_one()
    {
        var config = ClusterConfig.Node(new NodeEndpoint("0.0.0.0", 7077, "coordinator.bncluster"), ClusterConfig.CoordinatorRole);
        Assert.Equal("0.0.0.0", config.GetString("akka.remote.dot-netty.tcp.hostname"));
        Assert.Equal("coordinator.bncluster", config.GetString("akka.remote.dot-netty.tcp.public-hostname"));
        var plain = ClusterConfig.Node("10.0.0.1", 7077, ClusterConfig.CoordinatorRole);
        Assert.Equal("10.0.0.1", plain.GetString("akka.remote.dot-netty.tcp.public-hostname"));
    }

    /// <summary>
    /// Coordinator and worker both bound to 0.0.0.0, advertising "localhost" (a name, not the address they bind); the
    /// worker joins the coordinator by that name and its tensors go over the data plane, offered under that name too.
    /// </summary>
    [Fact]
    public async Task A_coordinator_and_a_worker_bound_to_every_interface_train_under_their_advertised_names()
    {
        using var temp = new TempFolder();
        var output = new LineTap();
        var listening = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        output.Line += line =>
        {
            var m = Regex.Match(line, @"workers join with --join (\S+:\d+)\)");
            if (m.Success) listening.TrySetResult(m.Groups[1].Value);
        };
        using var coordinator = FailureExitTests.Start(output, "coordinator", "--listen", "0.0.0.0:0", "--advertise", "localhost", "--workers", "1",
            "--dataset", "digits", "--hidden", "8", "--max-steps", "3", "--no-shared-memory", "--out", temp["run"]);
        Process? worker = null;
        try
        {
            await Task.WhenAny(listening.Task, coordinator.WaitForExitAsync()).WaitAsync(Limit);
            Assert.True(listening.Task.IsCompleted, "the coordinator exited before listening:\n" + output);
            string endpoint = await listening.Task;
            Assert.StartsWith("localhost:", endpoint);
            worker = FailureExitTests.Start(output, "worker", "--join", endpoint, "--listen", "0.0.0.0:0", "--advertise", "localhost", "--threads", "1");
            await coordinator.WaitForExitAsync().WaitAsync(Limit);
            await worker.WaitForExitAsync().WaitAsync(Limit);
            Assert.True(coordinator.ExitCode == 0, $"coordinator exit code {coordinator.ExitCode}:\n{output}");
            Assert.True(worker.ExitCode == 0, $"worker exit code {worker.ExitCode}:\n{output}");
        }
        finally
        {
            if (!coordinator.HasExited) coordinator.Kill(entireProcessTree: true);
            if (worker is { HasExited: false }) worker.Kill(entireProcessTree: true);
            worker?.Dispose();
        }
        string log = output.ToString();
        Assert.Matches(@"Coordinator listening on akka\.tcp://bncluster@localhost:\d+ ", log);
        Assert.Matches(@"Worker akka\.tcp://bncluster@localhost:\d+ joining akka\.tcp://bncluster@localhost:\d+ ", log);
        Assert.Matches(@"Worker 0 on akka\.tcp://bncluster@localhost:\d+: data channel open", log);
        Assert.True(File.Exists(Path.Combine(temp["run"], "model.bnc")));
    }

    [Theory]
    [InlineData("coordinator", "--listen", "0.0.0.0:0", "--advertise")]  // the wildcard needs a name to advertise
    [InlineData("worker", "--listen", "0.0.0.0:0", "--advertise")]
    public void Listening_on_every_interface_without_advertise_exits_2_naming_advertise(string command, string flag, string value, string hint)
    {
        using var temp = new TempFolder();
        string[] args = command == "coordinator"
            ? [command, flag, value, "--workers", "1", "--epochs", "1", "--out", temp["run"]]
            : [command, "--join", "127.0.0.1:1", flag, value];
        var run = CliHarness.Run(args);
        Assert.True(run.Exit == 2, $"exit {run.Exit}:\n{run.Error}");
        var line = Assert.Single(run.ErrorLines, l => l.StartsWith("bncluster:", StringComparison.Ordinal));
        Assert.Contains(hint, line);
        Assert.False(File.Exists(Path.Combine(temp["run"], "model.bnc")));
    }

    [Theory]
    [InlineData("0.0.0.0", "wildcard")]
    [InlineData("::", "wildcard")]
    [InlineData("host:7077", "not a host name")]
    [InlineData("a b", "not a host name")]
    public void A_bad_advertised_host_exits_2_with_one_line(string value, string what)
    {
        foreach (var command in new[] { "coordinator", "worker" })
        {
            string[] args = command == "coordinator"
                ? [command, "--listen", "0.0.0.0:0", "--advertise", value, "--workers", "1"]
                : [command, "--join", "127.0.0.1:1", "--advertise", value];
            var run = CliHarness.Run(args);
            Assert.True(run.Exit == 2, $"{command}: exit {run.Exit}:\n{run.Error}");
            var line = Assert.Single(run.ErrorLines);
            Assert.StartsWith("bncluster: --advertise: ", line);
            Assert.Contains(what, line);
        }
    }
}
