using BnCluster.Core.Training;

namespace BnCluster.Coordinator;

/// <summary>
/// Settings of a cluster run: the single-node <see cref="TrainerOptions"/> (same meaning, same model) plus the
/// cluster's. Training starts when <see cref="Workers"/> workers have joined and continues while at least
/// <see cref="MinWorkers"/> are up. A worker that has not sent what the coordinator waits for within
/// <see cref="StepTimeout"/> of the start of the step (or evaluation round) is treated as lost.
/// </summary>
public sealed record ClusterTrainingOptions(
    TrainerOptions Trainer,
    int Workers,
    int MinWorkers = 1,
    TimeSpan? StepTimeout = null,
    string JobId = "bncluster",
    string DatasetSha256 = "")
{
    public TimeSpan EffectiveStepTimeout => StepTimeout ?? TimeSpan.FromSeconds(60);

    /// <summary>How often the coordinator warns while it waits for enough workers.</summary>
    public TimeSpan WaitWarningInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Offer each worker a shared-memory file for the step's tensors (taken by the workers of this process and the worker
    /// processes of this machine; a worker on another machine keeps the socket), and to those that take it the
    /// batch-norm exchange and the sharded update. Off: every tensor travels in the messages, over TCP or, in this
    /// process, as the message objects.
    /// </summary>
    public bool SharedMemory { get; init; } = true;

    /// <summary>
    /// With shared memory: the worker processes of this machine make the optimizer update themselves, each on its slice
    /// (SharedShardedUpdate), instead of the coordinator while they wait. Off: the coordinator makes it.
    /// </summary>
    public bool ShardedUpdate { get; init; } = true;

    public ClusterTrainingOptions Validate()
    {
        ArgumentNullException.ThrowIfNull(Trainer);
        if (Workers <= 0) throw new ArgumentOutOfRangeException(nameof(Workers), $"workers must be positive, got {Workers}");
        if (MinWorkers <= 0 || MinWorkers > Workers) throw new ArgumentOutOfRangeException(nameof(MinWorkers), $"min-workers must be in 1..{Workers}, got {MinWorkers}");
        if (EffectiveStepTimeout <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(StepTimeout), "step timeout must be positive");
        if (Trainer.BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(Trainer), $"batch size must be positive, got {Trainer.BatchSize}");
        if (Trainer.Epochs <= 0) throw new ArgumentOutOfRangeException(nameof(Trainer), $"epochs must be positive, got {Trainer.Epochs}");
        return this;
    }
}

/// <summary>The shape of the data the coordinator plans over (it never reads rows itself; workers do).</summary>
public sealed record ClusterDataShape(int TrainRows, int TestRows, int Features);
