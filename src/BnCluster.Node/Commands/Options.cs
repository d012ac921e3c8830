using BnCluster.Core.Model;

namespace BnCluster.Node.Commands;

/// <summary>Optimizer named by --optimizer (docs/design.md, "The math"). Core may define its own kind; the lead maps this one onto it.</summary>
public enum OptimizerChoice { Gd, Momentum, RmsProp, Adam }

/// <summary>A validated HOST:PORT (port 0 = any free port, only meaningful for --listen).</summary>
public sealed record HostPort(string Host, int Port)
{
    public override string ToString() => Host.Contains(':') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";
}

/// <summary>Everything `train` needs, validated: sizes positive, rates finite, enums known.</summary>
public sealed record TrainOptions
{
    /// <summary>"fashion-mnist", "digits" or a path to a CSV file.</summary>
    public required string Dataset { get; init; }
    /// <summary>Name of the label column of a CSV dataset; null = the dataset's default.</summary>
    public string? LabelColumn { get; init; }
    public required IReadOnlyList<int> HiddenSizes { get; init; }
    public Activation Activation { get; init; } = Activation.Relu;
    public BatchNormPlacement BatchNorm { get; init; } = BatchNormPlacement.Before;
    public int Batch { get; init; } = 128;
    /// <summary>--batch was not given (nor set by the environment or --config): a dataset smaller than it trains on full batches.</summary>
    public bool BatchIsDefault { get; init; }
    public int Epochs { get; init; } = 5;
    /// <summary>Stop after this many committed steps; 0 = no limit.</summary>
    public long MaxSteps { get; init; }
    public OptimizerChoice Optimizer { get; init; } = OptimizerChoice.Adam;
    public double LearningRate { get; init; } = 1e-3;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double OptimizerEpsilon { get; init; } = 1e-8;
    public double BnMomentum { get; init; } = 0.1;
    public double BnEpsilon { get; init; } = 1e-5;
    public int Seed { get; init; } = 1;
    public int Workers { get; init; } = 2;
    /// <summary>Run the workers as local child processes instead of in-process actors.</summary>
    public bool Processes { get; init; }
    /// <summary>Keep training while at least this many workers remain.</summary>
    public int MinWorkers { get; init; } = 1;
    /// <summary>Offer worker processes on this machine a shared-memory file for the step's tensors (false: all over TCP).</summary>
    public bool SharedMemory { get; init; } = true;
    /// <summary>With shared memory: worker processes on this machine update their slices of the parameters themselves (false: the coordinator updates).</summary>
    public bool ShardedUpdate { get; init; } = true;
    /// <summary>With <see cref="Processes"/>: each worker process on CPUs of its own when there are enough (see CpuPinning).</summary>
    public bool PinWorkers { get; init; } = true;
    /// <summary>Compute threads per worker process.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;
    /// <summary>steps.jsonl gets every N-th step's loss (0: no steps.jsonl).</summary>
    public int StepsEvery { get; init; } = 1;
    /// <summary>Run folder (model.bnc, metrics.jsonl, log.jsonl, training.svg).</summary>
    public required string OutDirectory { get; init; }
    /// <summary>Lowest level of the log lines on the console (log.jsonl keeps Debug and above).</summary>
    public Serilog.Events.LogEventLevel ConsoleLevel { get; init; } = Serilog.Events.LogEventLevel.Information;
    /// <summary>Only errors and the final summary line on the console: no progress.</summary>
    public bool Quiet { get; init; }
    /// <summary>Clear a non-empty run folder (one that holds a run's files) instead of refusing it.</summary>
    public bool Overwrite { get; init; }

    /// <summary>The network these options describe, once the dataset's shape is known.</summary>
    public NetworkSpec ToNetworkSpec(int inputs, int classes) =>
        new(inputs, HiddenSizes.ToArray(), classes, Activation, BatchNorm, (float)BnEpsilon, (float)BnMomentum);
}

/// <summary>`coordinator`: the training flags plus where to listen; Train.Workers = workers to wait for.</summary>
public sealed record CoordinatorOptions(HostPort Listen, TrainOptions Train)
{
    /// <summary>The host in this node's address (its identity, the one workers --join) when it is not the --listen host; null = that host.</summary>
    public string? Advertise { get; init; }
}

/// <summary>`worker`: joins a coordinator and serves its dataset rows.</summary>
public sealed record WorkerOptions(HostPort Join, string Dataset, string? LabelColumn, int Threads)
{
    /// <summary>This worker's own address (null = the local address that routes to <see cref="Join"/>, port 0).</summary>
    public HostPort? Listen { get; init; }

    /// <summary>The host in this worker's address when it is not the one it listens on (null = the --listen host).</summary>
    public string? Advertise { get; init; }

    /// <summary>How long to keep trying to join the coordinator before giving up (null: for ever, as Akka does).</summary>
    public TimeSpan? JoinTimeout { get; init; }
}

/// <summary>`eval`: accuracy and loss of a model file on a dataset's test split.</summary>
public sealed record EvalOptions(string ModelPath, string Dataset, string? LabelColumn, bool Json);

/// <summary>`predict`: classes of the rows of a CSV file (<paramref name="Probabilities"/>: and every class's probability).</summary>
public sealed record PredictOptions(string ModelPath, string InputPath, bool Json, bool Probabilities = false);

/// <summary>`export`: a model file in another format; <see cref="OutputPath"/> null = next to the model (model.onnx, model.safetensors).</summary>
public sealed record ExportOptions(string ModelPath, BnCluster.Core.Export.ExportFormat Format, string? OutputPath);

/// <summary>`logs`: summary of a run's log.jsonl.</summary>
public sealed record LogsOptions(string LogPath, bool Json);

/// <summary>`bench`: timed training steps on random data of the given shape or on a dataset, on one worker or a cluster.</summary>
public sealed record BenchOptions
{
    public const int DefaultWarmup = 5;

    public int Features { get; init; } = 784;
    public int Classes { get; init; } = 10;
    public required IReadOnlyList<int> HiddenSizes { get; init; }
    public int Batch { get; init; } = 256;
    public int Workers { get; init; } = 1;
    /// <summary>Timed steps.</summary>
    public int Steps { get; init; } = 50;
    /// <summary>Steps run before the timed ones (JIT, first-touch of buffers, connections), excluded from every figure.</summary>
    public int Warmup { get; init; } = DefaultWarmup;
    /// <summary>The optimizer the timed steps apply (Adam by default, as in the comparison with PyTorch).</summary>
    public OptimizerChoice Optimizer { get; init; } = OptimizerChoice.Adam;
    public double LearningRate { get; init; } = 1e-3;
    /// <summary>Time steps on this dataset's training split instead of random data; null = random data (in-process only).</summary>
    public string? Dataset { get; init; }
    /// <summary>Compute threads per worker.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;
    /// <summary>Run the workers as local child processes (the path of `train --processes`); needs <see cref="Dataset"/>.</summary>
    public bool Processes { get; init; }
    /// <summary>With --processes: the step's tensors through shared memory (as `train --processes` does), or all over TCP.</summary>
    public bool SharedMemory { get; init; } = true;
    /// <summary>With --processes and shared memory: the workers update their slices of the parameters (as `train --processes`), or the coordinator all.</summary>
    public bool ShardedUpdate { get; init; } = true;
    /// <summary>With --processes: each worker process on CPUs of its own when there are enough (as `train --processes`).</summary>
    public bool PinWorkers { get; init; } = true;
    public bool Json { get; init; }
}

/// <summary>`status HOST:PORT`: the members and the training state of a running cluster, once or every <see cref="Watch"/>.</summary>
public sealed record StatusOptions(HostPort Coordinator, TimeSpan? Watch, bool Json, TimeSpan Timeout)
{
    public const double DefaultWatchSeconds = 2, MinWatchSeconds = 0.2;
}

/// <summary>The console writers a command reports to (stdout for results, stderr for diagnostics).</summary>
public sealed record CliContext(TextWriter Out, TextWriter Error);

/// <summary>
/// The seam where the lead plugs in what needs the trainer and the cluster. A null delegate makes the
/// command fail with "not available in this build" (exit 1). Each delegate returns the process exit code.
/// </summary>
public sealed class CliBackends
{
    public Func<TrainOptions, CliContext, CancellationToken, Task<int>>? Train { get; init; }
    public Func<CoordinatorOptions, CliContext, CancellationToken, Task<int>>? Coordinator { get; init; }
    public Func<WorkerOptions, CliContext, CancellationToken, Task<int>>? Worker { get; init; }
    public Func<EvalOptions, CliContext, CancellationToken, Task<int>>? Eval { get; init; }
    public Func<PredictOptions, CliContext, CancellationToken, Task<int>>? Predict { get; init; }
    public Func<BenchOptions, CliContext, CancellationToken, Task<int>>? Bench { get; init; }
    public Func<ExportOptions, CliContext, CancellationToken, Task<int>>? Export { get; init; }
    public Func<StatusOptions, CliContext, CancellationToken, Task<int>>? Status { get; init; }
    public Func<Study.StudyOptions, CliContext, CancellationToken, Task<int>>? Study { get; init; }
}
