using System.Diagnostics;
using BnCluster.Core.Model;
using BnCluster.Node.Backends;
using Xunit;

namespace BnCluster.IntegrationTests.Processes;

/// <summary>
/// The multi-machine commands across network namespaces (three "machines" on a bridge, 10.66.S.0/24): a coordinator
/// listening on 10.66.S.1 and two `worker --join` on .2 and .3 train the in-process `train --workers 2` model bitwise.
/// Needs root and iproute2; without them it fails, saying so (it does not skip).
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class MultiMachineTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(90);
    private const int Port = 7077;

    private static readonly string[] Training =
        ["--dataset", "digits", "--hidden", "16,16", "--batch", "96", "--epochs", "1", "--max-steps", "6", "--seed", "7", "--workers", "2"];

    [Fact]
    public async Task A_coordinator_and_two_workers_in_separate_network_namespaces_train_the_in_process_model_bitwise()
    {
        using var temp = new TempFolder();
        var inProcess = await Task.Run(() => CliHarness.Run(["train", .. Training, "--out", temp["inproc"]])).WaitAsync(Limit);
        Assert.True(inProcess.Exit == 0, inProcess.Error);

        using var net = new NetworkNamespaces(hosts: 3);
        var output = new LineTap();
        string listen = $"{net.Address(0)}:{Port}";
        // Network namespaces share the file system: without --no-shared-memory the workers would take the
        // coordinator's shared-memory files, and this test is about tensors crossing a network.
        var coordinator = net.Start(0, Command(["coordinator", "--listen", listen, .. Training, "--no-shared-memory", "--out", temp["net"]]), output);
        var workers = new[] { 1, 2 }.Select(h => net.Start(h, Command(["worker", "--join", listen, "--dataset", "digits"]), output)).ToArray();

        try { await coordinator.WaitForExitAsync().WaitAsync(Limit); }
        catch (TimeoutException) { throw new Xunit.Sdk.XunitException("the coordinator did not finish in time:\n" + output); }
        Assert.True(coordinator.ExitCode == 0, $"coordinator exit code {coordinator.ExitCode}:\n{output}");
        foreach (var w in workers)
        {
            try { await w.WaitForExitAsync().WaitAsync(Limit); } // they leave when the coordinator tells them the run is over
            catch (TimeoutException) { throw new Xunit.Sdk.XunitException("a worker did not exit after the run:\n" + output); }
            Assert.True(w.ExitCode == 0, $"worker exit code {w.ExitCode} after a finished run:\n{output}");
        }
        string log = output.ToString();
        Assert.Contains($"on akka.tcp://bncluster@{net.Address(1)}:", log); // each worker joined from its own machine
        Assert.Contains($"on akka.tcp://bncluster@{net.Address(2)}:", log);

        var a = ModelFile.Read(Path.Combine(temp["inproc"], "model.bnc"));
        var b = ModelFile.Read(Path.Combine(temp["net"], "model.bnc"));
        Assert.Equal(6L, Convert.ToInt64(b.Training["steps"]));
        ProcessClusterTests.AssertTensors(a, b, relative: 0);
        Assert.Equal(new InputPreprocessing(16f), b.Preprocessing); // the `coordinator` command records the loader's ÷16
    }

    private static ProcessStartInfo Command(string[] args)
    {
        var psi = WorkerProcesses.Executable(); // this build's bncluster (dotnet bncluster.dll)
        foreach (var a in args) psi.ArgumentList.Add(a);
        return psi;
    }
}
