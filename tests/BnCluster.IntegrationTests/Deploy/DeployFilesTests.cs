using System.CommandLine;
using BnCluster.Node.Commands;
using YamlDotNet.RepresentationModel;
using Xunit;

namespace BnCluster.IntegrationTests.Deploy;

/// <summary>
/// deploy/ cannot rot unnoticed: every `bncluster` command line in its units, compose file and manifests parses with the
/// real command line (a renamed or removed flag, or a value it no longer takes, fails here), the units pass
/// `systemd-analyze verify` and restart by the CLI's exit codes, and the compose file passes `docker-compose config`.
/// </summary>
public sealed class DeployFilesTests
{
    [Fact]
    public void Every_bncluster_command_line_in_the_units_compose_file_and_manifests_parses_with_the_real_cli()
    {
        var invocations = DeployFiles.Invocations();
        // Found where they are (a change that hid one from this test would otherwise pass it).
        Assert.Equal(
        [
            "systemd/bncluster-coordinator.service", "systemd/bncluster-worker@.service",
            "compose.yaml services.coordinator", "compose.yaml services.worker",
            "k8s/coordinator.yaml Job/bncluster-coordinator container coordinator", "k8s/workers.yaml Job/bncluster-worker container worker",
        ], invocations.Select(i => i.Where));
        var root = DeployFiles.Root();
        foreach (var invocation in invocations)
        {
            var parse = root.Parse(invocation.Args);
            Assert.True(parse.Errors.Count == 0, $"{invocation}\n  {string.Join("\n  ", parse.Errors.Select(e => e.Message))}");
            Assert.Equal(invocation.Args[0], parse.CommandResult.Command.Name);
        }
    }

    [Fact]
    public void Every_bncluster_command_line_of_the_deploy_readme_parses()
    {
        var invocations = DeployFiles.ReadmeInvocations();
        Assert.True(invocations.Count >= 4, $"only {invocations.Count} bncluster command lines found in deploy/README.md");
        var root = DeployFiles.Root();
        foreach (var invocation in invocations)
        {
            // (Files it names, such as a model, need not exist here.)
            var problems = Docs.DocumentedCommands.Problems(root, invocation);
            Assert.True(problems.Count == 0, $"{invocation}\n  {string.Join("\n  ", problems)}");
        }
    }

    /// <summary>The check above fails for a flag the CLI does not have (so it would catch a rename).</summary>
    [Fact]
    public void A_flag_the_cli_does_not_have_fails_the_parse_check()
    {
        var parse = DeployFiles.Root().Parse(["worker", "--join", "coordinator:7077", "--advertize", "w0"]);
        Assert.NotEmpty(parse.Errors);
    }

    [Fact]
    public void The_units_pass_systemd_analyze_verify()
    {
        using var temp = new TempFolder();
        // verify insists that ExecStart's program exists and is executable: the copies run this build's bncluster.
        string program = Path.Combine(AppContext.BaseDirectory, "bncluster");
        Assert.True(File.Exists(program), $"{program} is missing (the apphost of BnCluster.Node)");
        foreach (var unit in DeployFiles.Units())
        {
            string text = File.ReadAllText(unit);
            Assert.Contains("ExecStart=/opt/bncluster/bncluster ", text);
            File.WriteAllText(Path.Combine(temp.Path, Path.GetFileName(unit)), text.Replace("/opt/bncluster/bncluster", program));
        }
        var (exit, stdout, stderr) = DeployFiles.RunTool("systemd-analyze",
            ["verify", Path.Combine(temp.Path, "bncluster-coordinator.service"), Path.Combine(temp.Path, "bncluster-worker@1.service")]);
        Assert.True(exit == 0 && stdout.Length == 0 && stderr.Length == 0, $"systemd-analyze verify: exit {exit}\n{stdout}{stderr}");

        // …and would say so: a misspelt key is reported.
        File.AppendAllText(Path.Combine(temp.Path, "bncluster-coordinator.service"), "\n[Service]\nRestrat=no\n");
        var broken = DeployFiles.RunTool("systemd-analyze", ["verify", Path.Combine(temp.Path, "bncluster-coordinator.service")]);
        Assert.Contains("Restrat", broken.Out + broken.Error);
    }

    [Fact]
    public void The_units_restart_by_the_clis_exit_codes()
    {
        static HashSet<int> Codes(List<(string Key, string Value)> s, string key) =>
            s.Where(x => x.Key == key).SelectMany(x => x.Value.Split(' ', StringSplitOptions.RemoveEmptyEntries)).Select(int.Parse).ToHashSet();
        static string Single(List<(string Key, string Value)> s, string key) => s.Single(x => x.Key == key).Value;

        // Ctrl+C and SIGTERM (systemctl stop) end either unit cleanly, not as a failure.
        var coordinator = DeployFiles.UnitSettings(DeployFiles.PathOf("systemd/bncluster-coordinator.service"));
        Assert.Superset(new HashSet<int> { Cli.ExitCancelled, Cli.ExitTerminated }, Codes(coordinator, "SuccessExitStatus"));
        // A run is not started again by itself.
        Assert.Equal("no", Single(coordinator, "Restart"));

        // A worker: done (0) stays stopped, a failure (1) restarts, wrong settings (2) do not.
        var worker = DeployFiles.UnitSettings(DeployFiles.PathOf("systemd/bncluster-worker@.service"));
        Assert.Superset(new HashSet<int> { Cli.ExitCancelled, Cli.ExitTerminated }, Codes(worker, "SuccessExitStatus"));
        Assert.Equal("on-failure", Single(worker, "Restart"));
        Assert.Equal(new HashSet<int> { Cli.ExitUsage }, Codes(worker, "RestartPreventExitStatus"));
        Assert.DoesNotContain(Cli.ExitOk, Codes(worker, "SuccessExitStatus")); // (0 is success anyway: no restart on-failure)
    }

    [Fact]
    public void The_compose_file_passes_docker_compose_config()
    {
        var (exit, stdout, stderr) = DeployFiles.RunTool("docker-compose", ["-f", DeployFiles.PathOf("compose.yaml"), "config", "-q"]);
        Assert.True(exit == 0 && stderr.Trim().Length == 0, $"docker-compose config: exit {exit}\n{stdout}{stderr}");

        // …and would say so: a service with a key compose does not know is refused.
        using var temp = new TempFolder();
        File.WriteAllText(temp["compose.yaml"], File.ReadAllText(DeployFiles.PathOf("compose.yaml")).Replace("    restart: \"no\"", "    restrat: \"no\""));
        var broken = DeployFiles.RunTool("docker-compose", ["-f", temp["compose.yaml"], "config", "-q"]);
        Assert.True(broken.Exit != 0, "docker-compose config accepted a misspelt key");
    }

    /// <summary>The coordinator and every worker advertise their own name; the workers join the one the coordinator advertises.</summary>
    [Fact]
    public void In_kubernetes_every_node_advertises_its_name_under_the_headless_service_and_the_workers_join_the_coordinators()
    {
        var manifests = DeployFiles.Manifests().ToList();
        var service = manifests.Single(m => ((YamlScalarNode)m.Document["kind"]).Value == "Service").Document;
        string serviceName = Scalar(service, "metadata", "name");
        Assert.Equal("None", Scalar(service, "spec", "clusterIP"));
        Assert.Equal("true", Scalar(service, "spec", "publishNotReadyAddresses"));

        var invocations = DeployFiles.Invocations().Where(i => i.Where.StartsWith("k8s/", StringComparison.Ordinal)).ToList();
        var root = DeployFiles.Root();
        string Value(Invocation i, string flag) => Array.IndexOf(i.Args, flag) is var at and >= 0 ? i.Args[at + 1] : throw new InvalidOperationException($"{i}: no {flag}");
        HostPort Endpoint(Invocation i, string flag) => root.Parse(i.Args).GetValue<HostPort>(flag) ?? throw new InvalidOperationException($"{i}: no {flag}");

        var coordinator = invocations.Single(i => i.Args[0] == "coordinator");
        var coordinatorPod = PodSpec(manifests, "coordinator.yaml");
        string coordinatorName = $"{Scalar(coordinatorPod, "hostname")}.{Scalar(coordinatorPod, "subdomain")}";
        Assert.Equal(serviceName, Scalar(coordinatorPod, "subdomain"));
        Assert.Equal(coordinatorName, Value(coordinator, "--advertise"));

        var worker = invocations.Single(i => i.Args[0] == "worker");
        var workerPod = PodSpec(manifests, "workers.yaml");
        Assert.Equal(serviceName, Scalar(workerPod, "subdomain"));
        // An Indexed Job's pod i has the hostname JOB-i; the filled-in index is 0.
        string job = ((YamlScalarNode)((YamlMappingNode)manifests.Single(m => m.File == "workers.yaml").Document["metadata"])["name"]).Value!;
        Assert.Equal($"{job}-0.{serviceName}", Value(worker, "--advertise"));
        Assert.Equal(new HostPort(coordinatorName, Endpoint(coordinator, "--listen").Port), Endpoint(worker, "--join"));
        // A replaced worker pod keeps its address (name and a fixed port), so the coordinator gives it its rank back.
        Assert.NotEqual(0, Endpoint(worker, "--listen").Port);

        // The Service selects both pods (no name without it), and the Job runs as many workers as the coordinator waits for.
        var selector = ((YamlMappingNode)((YamlMappingNode)service["spec"])["selector"]).Children;
        foreach (var file in new[] { "coordinator.yaml", "workers.yaml" })
        {
            var labels = ((YamlMappingNode)((YamlMappingNode)((YamlMappingNode)((YamlMappingNode)manifests.Single(m => m.File == file).Document["spec"])["template"])["metadata"])["labels"]).Children;
            Assert.All(selector, s => Assert.Equal(s.Value, labels[s.Key]));
        }
        var workerJob = manifests.Single(m => m.File == "workers.yaml").Document;
        string workers = Value(coordinator, "--workers");
        Assert.Equal(workers, Scalar(workerJob, "spec", "completions"));
        Assert.Equal(workers, Scalar(workerJob, "spec", "parallelism"));
        Assert.Equal("Indexed", Scalar(workerJob, "spec", "completionMode"));
    }

    private static YamlMappingNode PodSpec(List<(string File, YamlMappingNode Document)> manifests, string file) =>
        (YamlMappingNode)((YamlMappingNode)((YamlMappingNode)manifests.Single(m => m.File == file).Document["spec"])["template"])["spec"];

    private static string Scalar(YamlMappingNode node, params string[] path)
    {
        YamlNode current = node;
        foreach (var key in path) current = ((YamlMappingNode)current)[key];
        return ((YamlScalarNode)current).Value!;
    }
}
