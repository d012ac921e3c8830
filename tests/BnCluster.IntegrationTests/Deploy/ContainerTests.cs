using System.Diagnostics;
using BnCluster.IntegrationTests.Processes;
using Xunit;

namespace BnCluster.IntegrationTests.Deploy;

/// <summary>
/// The image as deploy/README.md makes it: deploy/publish.sh, then deploy/Containerfile on the base of
/// deploy/base-image.sh (made once: it is kept under its tag). Removed after the tests.
/// </summary>
public sealed class ImageFixture : IDisposable
{
    public const string BaseImage = "localhost/bncluster-base:bookworm";
    public static readonly TimeSpan Limit = TimeSpan.FromMinutes(4);

    // podman here: crun cannot start containers under this machine's hybrid cgroups, and the container's default limits
    // (more open files than the host allows) cannot be set without CAP_SYS_RESOURCE; runc with lower limits can.
    public static readonly string[] RuntimeFlags = ["--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"];

    private readonly TempFolder _context = new();

    public ImageFixture()
    {
        Id = Guid.NewGuid().ToString("N")[..10];
        Image = $"localhost/bncluster-test:{Id}";
        if (Tool("podman", "image", "exists", BaseImage).Exit != 0)
            Succeed(DeployFiles.RunTool(DeployFiles.PathOf("base-image.sh"), [], limit: Limit), "deploy/base-image.sh");
        Succeed(DeployFiles.RunTool(DeployFiles.PathOf("publish.sh"), ["--out", Path.Combine(_context.Path, "out", "bncluster")], limit: Limit), "deploy/publish.sh");
        File.Copy(DeployFiles.PathOf("Containerfile"), _context["Containerfile"]);
        Succeed(Tool("podman", ["build", .. RuntimeFlags, "--build-arg", $"BASE={BaseImage}", "-t", Image, _context.Path]), "podman build");
    }

    /// <summary>A name part no other run of these tests uses.</summary>
    public string Id { get; }
    public string Image { get; }

    public void Dispose()
    {
        Tool("podman", "rmi", "--force", Image);
        _context.Dispose();
    }

    public static (int Exit, string Out, string Error) Tool(string file, params string[] args) => DeployFiles.RunTool(file, args, limit: Limit);

    public static void Succeed((int Exit, string Out, string Error) run, string what) =>
        Assert.True(run.Exit == 0, $"{what}: exit {run.Exit}\n{run.Out}{run.Error}");
}

/// <summary>
/// The image runs a cluster in containers, with podman: a coordinator and two workers on one network train digits and
/// write a model that evaluates here. Needs root, podman with runc, and the first time debootstrap and Debian's mirror.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class ContainerTests(ImageFixture image) : IClassFixture<ImageFixture>
{
    private static (int Exit, string Out, string Error) Tool(string file, params string[] args) => ImageFixture.Tool(file, args);

    /// <summary>As the Kubernetes pods do: every node bound to 0.0.0.0 and advertising its own name on the network.</summary>
    [Fact]
    public void Containers_that_advertise_their_names_train_digits_and_write_a_model()
    {
        string network = $"bncluster-test-{image.Id}";
        string[] containers = ["coordinator", "worker-0", "worker-1"];
        string Name(string container) => $"bncluster-test-{image.Id}-{container}";
        using var temp = new TempFolder();
        try
        {
            ImageFixture.Succeed(Tool("podman", "network", "create", network), "podman network create");
            // The run folder: a host folder the container's user (10001) may write.
            string runs = temp["runs"];
            Directory.CreateDirectory(runs);
            ImageFixture.Succeed(Tool("chmod", "0777", runs), "chmod");
            string[] Run(string container, params string[] args) =>
                ["run", "--detach", "--name", Name(container), "--network", network, "--network-alias", container, .. ImageFixture.RuntimeFlags,
                 "-v", $"{runs}:/runs", image.Image, .. args];
            ImageFixture.Succeed(Tool("podman", Run("coordinator", "coordinator", "--listen", "0.0.0.0:7077", "--advertise", "coordinator", "--workers", "2",
                "--dataset", "digits", "--hidden", "16", "--batch", "96", "--epochs", "2", "--seed", "7", "--out", "/runs/digits")), "podman run coordinator");
            foreach (var worker in containers[1..])
                ImageFixture.Succeed(Tool("podman", Run(worker, "worker", "--join", "coordinator:7077", "--listen", "0.0.0.0:7078", "--advertise", worker,
                    "--dataset", "digits", "--threads", "1")), $"podman run {worker}");

            var wait = Tool("podman", ["wait", .. containers.Select(Name)]);
            string logs = string.Join("\n", containers.Select(c => Tool("podman", "logs", Name(c)) is var l ? $"--- {c}:\n{l.Out}{l.Error}" : ""));
            Assert.True(wait.Exit == 0, $"podman wait: {wait.Error}\n{logs}");
            Assert.True(wait.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).All(code => code.Trim() == "0"), $"exit codes {wait.Out}\n{logs}");
            // Each node is known by the name it advertised, and the workers' tensors went over the data plane.
            Assert.Contains("Coordinator listening on akka.tcp://bncluster@coordinator:7077", logs);
            foreach (var worker in containers[1..])
                Assert.Matches($@"Worker \d on akka\.tcp://bncluster@{worker}:7078: data channel open", logs);
            var eval = CliHarness.Run("eval", "--model", Path.Combine(runs, "digits", "model.bnc"), "--dataset", "digits");
            Assert.True(eval.Exit == 0, eval.Error);
        }
        finally
        {
            Tool("podman", ["rm", "--force", .. containers.Select(Name)]);
            Tool("podman", "network", "rm", "--force", network);
        }
    }

    /// <summary>
    /// deploy/compose.yaml itself, run by docker-compose against podman's Docker-compatible service (this machine has no
    /// Docker engine): `up --scale worker=2` trains and every container exits 0, the model in the runs volume.
    /// </summary>
    [Fact]
    public async Task The_compose_file_runs_a_coordinator_and_two_workers_through_podmans_docker_api()
    {
        using var temp = new TempFolder();
        string project = $"bncluster-test-{image.Id}", socket = temp["podman.sock"];
        File.WriteAllText(temp["containers.conf"], """
            [containers]
            default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
            [engine]
            runtime = "runc"
            """);
        Directory.CreateDirectory(temp["datasets"]); // digits is built in; nothing of the host's is mounted
        var environment = new Dictionary<string, string>
        {
            ["DOCKER_HOST"] = "unix://" + socket, ["IMAGE"] = image.Image, ["DATASETS"] = temp["datasets"], ["EPOCHS"] = "1",
            ["WORKERS"] = "2", ["RUN"] = "digits",
        };
        (int Exit, string Out, string Error) Compose(params string[] args) =>
            DeployFiles.RunTool("docker-compose", ["-f", DeployFiles.PathOf("compose.yaml"), "-p", project, .. args], limit: ImageFixture.Limit, environment: environment);

        using var created = new SemaphoreSlim(0);
        using var watcher = new FileSystemWatcher(temp.Path, "podman.sock");
        watcher.Created += (_, _) => created.Release();
        watcher.EnableRaisingEvents = true;
        var service = new ProcessStartInfo("podman") { ArgumentList = { "system", "service", "--time=0", "unix://" + socket }, RedirectStandardError = true };
        service.Environment["CONTAINERS_CONF"] = temp["containers.conf"];
        using var podman = Process.Start(service)!;
        try
        {
            Assert.True(File.Exists(socket) || await created.WaitAsync(TimeSpan.FromSeconds(30)), "podman system service did not open its socket");
            var up = Compose("up", "--no-build", "--scale", "worker=2");
            var exits = Tool("podman", "ps", "--all", "--filter", $"label=com.docker.compose.project={project}", "--format", "{{.Names}} {{.ExitCode}}");
            Assert.True(up.Exit == 0, $"docker-compose up: exit {up.Exit}\n{up.Out}{up.Error}");
            var codes = exits.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.True(codes.Length == 3 && codes.All(c => c.EndsWith(" 0", StringComparison.Ordinal)), $"containers: {exits.Out}\n{up.Out}{up.Error}");
            Assert.Contains("Coordinator listening on akka.tcp://bncluster@coordinator:7077", up.Out + up.Error);

            var volume = Tool("podman", "volume", "inspect", $"{project}_runs", "--format", "{{.Mountpoint}}");
            ImageFixture.Succeed(volume, "podman volume inspect");
            var eval = CliHarness.Run("eval", "--model", Path.Combine(volume.Out.Trim(), "digits", "model.bnc"), "--dataset", "digits");
            Assert.True(eval.Exit == 0, eval.Error);
        }
        finally
        {
            Compose("down", "--volumes");
            if (!podman.HasExited) podman.Kill(entireProcessTree: true);
            await podman.WaitForExitAsync();
        }
    }
}
