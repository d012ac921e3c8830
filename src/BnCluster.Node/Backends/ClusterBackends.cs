using System.Diagnostics;
using System.Text.RegularExpressions;
using BnCluster.Collectives;
using BnCluster.Coordinator;
using BnCluster.Core.Data;
using BnCluster.Core.Training;
using BnCluster.Node.Cluster;
using BnCluster.Node.Commands;
using BnCluster.Node.Logging;
using Serilog;
using Serilog.Events;

namespace BnCluster.Node.Backends;

/// <summary>`bncluster coordinator`, `bncluster worker` and `train --processes`: the cluster over TCP.</summary>
public static class ClusterBackends
{
    /// <summary>`coordinator --listen HOST:PORT --workers K`: the train command with a TCP coordinator as its trainer.</summary>
    public static Task<int> Coordinator(CoordinatorOptions options, CliContext context, CancellationToken cancel)
    {
        if (OptionParsers.IsWildcard(options.Listen.Host) && options.Advertise is null)
        {
            context.Error.WriteLine($"bncluster: --listen {options.Listen.Host}: give this machine's address as the workers reach it (e.g. --listen 10.0.0.1:{options.Listen.Port}), or add --advertise with that name; a node's address is also its identity, so a wildcard cannot be it");
            return Task.FromResult(Cli.ExitUsage);
        }
        return TrainBackend.RunAsync(options.Train with { Processes = false }, context,
            (request, ct) => RunCoordinator(request, new NodeEndpoint(options.Listen.Host, options.Listen.Port, options.Advertise), null, ct),
            cancel, alwaysCluster: true, command: "coordinator", listen: options.Listen, advertise: options.Advertise);
    }

    /// <summary>The local address this machine uses to reach <paramref name="join"/> (no packet is sent), else 127.0.0.1.</summary>
    private static string RouteAddressTo(HostPort join)
    {
        try
        {
            using var probe = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);
            probe.Connect(join.Host, join.Port);
            return probe.LocalEndPoint is System.Net.IPEndPoint ep ? ep.Address.ToString() : "127.0.0.1";
        }
        catch (System.Net.Sockets.SocketException) { return "127.0.0.1"; }
    }

    /// <summary>`train --workers K --processes`: the coordinator here on 127.0.0.1:0 and K child worker processes.</summary>
    public static Task<TrainingResult> LocalProcesses(TrainRequest request, CancellationToken cancel)
    {
        int workers = request.Options.Workers;
        int threads = Math.Max(1, request.Options.Threads / workers);
        var children = new WorkerProcesses(request.Log, workers);
        var cpus = request.Options.PinWorkers ? CpuPinning.Plan(workers, threads) : null;
        return RunWithChildren();

        async Task<TrainingResult> RunWithChildren()
        {
            // With every worker process gone nobody can join any more: fail with their exit codes instead of waiting forever.
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            try
            {
                var training = RunCoordinator(request, new NodeEndpoint("127.0.0.1", 0), port =>
                {
                    for (int i = 0; i < workers; i++)
                        children.Start(i, ["worker", "--join", $"127.0.0.1:{port}", "--dataset", request.Options.Dataset,
                            .. request.Options.LabelColumn is { } label ? (string[])["--label-column", label] : [], "--threads", threads.ToString(System.Globalization.CultureInfo.InvariantCulture),
                            "--join-timeout", "60"],
                            cpus?[i]);
                    return Task.CompletedTask;
                }, stop.Token);
                if (await Task.WhenAny(training, children.AllExited).ConfigureAwait(false) != training)
                {
                    string exits = await children.AllExited.ConfigureAwait(false);
                    stop.Cancel();
                    try { return await training.ConfigureAwait(false); } // it may have finished in the meantime
                    catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
                    {
                        throw new InvalidOperationException($"every worker process exited before the run finished ({exits}); see the [worker i] lines above");
                    }
                }
                return await training.ConfigureAwait(false);
            }
            finally { children.Dispose(); }
        }
    }

    private static Task<TrainingResult> RunCoordinator(TrainRequest request, NodeEndpoint endpoint, Func<int, Task>? onListening, CancellationToken cancel)
    {
        var o = request.Options;
        var options = new ClusterTrainingOptions(request.TrainerOptions, o.Workers, o.MinWorkers, JobId: RemoteCluster.JobId, DatasetSha256: request.Data.Sha256)
        {
            SharedMemory = o.SharedMemory,
            ShardedUpdate = o.ShardedUpdate,
        };
        var job = RemoteCluster.Describe(o.Seed, o.LabelColumn, request.TrainerOptions.Spec, request.Data.Sha256);
        var shape = new ClusterDataShape(request.Data.Train.Count, request.Data.Test.Count, request.Data.Train.FeatureCount);
        return RemoteCluster.RunCoordinatorAsync(endpoint, options, job, shape, request.Log, request.EpochProgress, request.BatchProgress, onListening, cancel);
    }

    /// <summary>
    /// `worker --join HOST:PORT`: loads the dataset (the coordinator refuses another file by its sha256), joins the cluster,
    /// asks the coordinator for the job and trains until the run is over (exit 0), fails (exit 1), or the coordinator is gone
    /// (exit 1); a coordinator that refuses it (another dataset file, another protocol) is exit 2. Ctrl+C / SIGTERM: leave the
    /// cluster gracefully.
    /// </summary>
    public static async Task<int> Worker(WorkerOptions options, CliContext context, CancellationToken cancel)
    {
        var first = DatasetCatalog.Load(options.Dataset, 0, options.LabelColumn);
        if (options.Listen is { } own && OptionParsers.IsWildcard(own.Host) && options.Advertise is null)
        {
            context.Error.WriteLine($"bncluster: --listen {own.Host}: give this machine's address as the coordinator reaches it, or add --advertise with that name; a node's address is also its identity");
            return Cli.ExitUsage;
        }
        using var logger = RunLogging.Create(null, "worker", ReferenceEquals(context.Error, Console.Error) ? null : context.Error);
        using var akkaLog = AkkaLogRoute.To(logger);
        var seed = RemoteCluster.NodeAddress(options.Join.Host, options.Join.Port);
        var node = new WorkerNode(first, options.Dataset, options.LabelColumn, options.Threads, logger);
        var endpoint = new NodeEndpoint(options.Listen?.Host ?? RouteAddressTo(options.Join), options.Listen?.Port ?? 0, options.Advertise);
        return await node.RunAsync(seed, endpoint, options.JoinTimeout, cancel)
            .ConfigureAwait(false);
    }
}

/// <summary>
/// Local worker child processes: started as `dotnet bncluster.dll worker …` (or the apphost), their output forwarded
/// to the log with a worker prefix, every one killed (whole tree) on dispose — no orphans whatever happened.
/// </summary>
public sealed class WorkerProcesses(ILogger log, int expected) : IDisposable
{
    private readonly List<Process> _processes = [];
    private readonly object _gate = new();
    private readonly List<string> _exits = [];
    private readonly TaskCompletionSource<string> _allExited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes when all <c>expected</c> worker processes have exited, with their exit codes ("worker 0: code 1, …").</summary>
    public Task<string> AllExited => _allExited.Task;

    public IReadOnlyList<Process> Processes { get { lock (_gate) return _processes.ToArray(); } }

    /// <summary>Raised for every output line of a child: (worker index, line).</summary>
    public static event Action<int, string>? OutputLine;

    /// <summary>Starts worker process <paramref name="index"/>; pinned to <paramref name="cpus"/> when given (see <see cref="CpuPinning"/>).</summary>
    public void Start(int index, IReadOnlyList<string> args, IReadOnlyList<int>? cpus = null)
    {
        var psi = Executable();
        foreach (var a in args) psi.ArgumentList.Add(a);
        // The parent's BNCLUSTER_* flag variables (BNCLUSTER_LISTEN, BNCLUSTER_THREADS, …) were meant for it, not for its
        // workers, whose flags it gives explicitly; other variables (e.g. BNCLUSTER_HEARTBEAT_MS) are inherited.
        foreach (var name in Cli.FlagVariables("worker")) psi.Environment.Remove(name);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.UseShellExecute = false;
        var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
        p.OutputDataReceived += (_, e) => Forward(index, e.Data);
        p.ErrorDataReceived += (_, e) => Forward(index, e.Data);
        p.Exited += (_, _) => OnExited(index, p);
        lock (_gate) _processes.Add(p);
        if (cpus is null) p.Start();
        else CpuPinning.StartPinned(cpus, () => p.Start());
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (cpus is null) log.Information("Started worker process {Index} (pid {Pid})", index, p.Id);
        else log.Information("Started worker process {Index} (pid {Pid}) on CPU {Cpus:l}", index, p.Id, string.Join(',', cpus));
    }

    private void OnExited(int index, Process p)
    {
        string exit = $"worker {index}: code {p.ExitCode}";
        log.Debug("Worker process {Index} exited with code {ExitCode}", index, p.ExitCode);
        lock (_gate)
        {
            _exits.Add(exit);
            if (_exits.Count == expected) _allExited.TrySetResult(string.Join(", ", _exits.Order(StringComparer.Ordinal)));
        }
    }

    // A child's console line is "HH:mm:ss LVL message" (RunLogging.ConsoleTemplate). It is logged again here at the
    // child's level without the child's timestamp, so that it prints with one timestamp (the parent's).
    private static readonly Regex ChildConsoleLine = new(@"^\d\d:\d\d:\d\d (VRB|DBG|INF|WRN|ERR|FTL) (.*)$", RegexOptions.Compiled);

    private void Forward(int index, string? line)
    {
        if (line is null) return;
        var parsed = ChildConsoleLine.Match(line);
        var level = !parsed.Success ? LogEventLevel.Information : parsed.Groups[1].Value switch
        {
            "VRB" => LogEventLevel.Verbose,
            "DBG" => LogEventLevel.Debug,
            "WRN" => LogEventLevel.Warning,
            "ERR" => LogEventLevel.Error,
            "FTL" => LogEventLevel.Fatal,
            _ => LogEventLevel.Information,
        };
        log.Write(level, "[worker {Index}] {Line:l}", index, parsed.Success ? parsed.Groups[2].Value : line);
        OutputLine?.Invoke(index, line);
    }

    /// <summary>This program: the apphost itself, or `dotnet bncluster.dll` when run through the muxer.</summary>
    public static ProcessStartInfo Executable()
    {
        string? processPath = Environment.ProcessPath;
        string dll = Path.Combine(AppContext.BaseDirectory, "bncluster.dll");
        bool isMuxer = processPath is null || Path.GetFileNameWithoutExtension(processPath).Equals("dotnet", StringComparison.OrdinalIgnoreCase)
                       || !Path.GetFileNameWithoutExtension(processPath).Equals("bncluster", StringComparison.OrdinalIgnoreCase);
        if (!isMuxer) return new ProcessStartInfo(processPath!);
        var psi = new ProcessStartInfo(processPath is not null && Path.GetFileNameWithoutExtension(processPath).Equals("dotnet", StringComparison.OrdinalIgnoreCase) ? processPath : "dotnet");
        psi.ArgumentList.Add(dll);
        return psi;
    }

    public void Dispose()
    {
        foreach (var p in Processes)
        {
            try
            {
                if (!p.HasExited) p.Kill(entireProcessTree: true);
                p.WaitForExit(5000);
            }
            catch (InvalidOperationException) { /* never started or already gone */ }
            finally { p.Dispose(); }
        }
    }
}
