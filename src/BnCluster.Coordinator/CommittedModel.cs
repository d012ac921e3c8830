using BnCluster.Collectives;
using BnCluster.Core.Kernels;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;

namespace BnCluster.Coordinator;

/// <summary>
/// The model the coordinator owns (docs/design.md, "One training step"): the parameters with the BN running averages,
/// the optimizer state, and their version, the number of steps committed. Workers hold copies; only a commit changes
/// the model, so an aborted attempt leaves nothing to undo. While the workers shard the update, a sharded-update file
/// holds the committed parameters and optimizer state instead (<see cref="SharedMemoryBroker"/> moves them there and back).
/// </summary>
internal sealed class CommittedModel : IDisposable
{
    private readonly List<SharedTensorRegion> _mirrors = []; // the files an update writes the new parameters into

    public CommittedModel(TrainerOptions trainer)
    {
        Parameters = Parameters.Initialize(trainer.Spec, trainer.Seed);
        Optimizer = new Optimizer(trainer.Optimizer, Parameters);
    }

    public Parameters Parameters { get; }
    public Optimizer Optimizer { get; }
    public long Version { get; private set; }

    /// <summary>
    /// All the cores, for what every worker waits for: the commit's update, the last gradients' sum, a parameter file
    /// written before a step. Started with the actor (its PreStart), disposed when it stops.
    /// </summary>
    public MatMul? Threads { get; private set; }

    public void StartThreads() => Threads = new MatMul(Environment.ProcessorCount);

    public void Dispose() => Threads?.Dispose();

    /// <summary>
    /// One pooled copy of the committed parameters for all <paramref name="participants"/> that do not hold them yet (null
    /// when all do; <paramref name="viaRegions"/>: those with a shared-memory file get them through it instead): each of
    /// them releases it once (TensorPool.Share), the last one returns it to the pool.
    /// </summary>
    public float[][]? SnapshotFor(Member[] participants, bool viaRegions)
    {
        int holders = 0;
        foreach (var m in participants) if (m.SentVersion != Version && !(viaRegions && m.Region is not null)) holders++;
        if (holders == 0) return null;
        var snapshot = ParameterSnapshot.Capture(Parameters);
        TensorPool.Share(snapshot, holders);
        return snapshot;
    }

    /// <summary>
    /// Commits a step whose update the workers made in the sharded-update file's next version: counting the step
    /// commits it (the file holds the parameters and optimizer state); the running averages follow here.
    /// </summary>
    public void CommitShardedUpdate(BatchNormStats?[] merged)
    {
        Optimizer.SetStep(Optimizer.Step + 1);
        TrainingStep.UpdateRunningStats(Parameters, merged);
        Version++;
    }

    /// <summary>
    /// Commits a step with the coordinator's own update of the <paramref name="reduced"/> gradients (and of the addends
    /// Adam adds to their sum as it reads them), and the running averages. The update also writes the new parameters
    /// into the shared-memory files of the <paramref name="participants"/> (who all take part in the next attempt unless
    /// lost meanwhile) while they are in cache: no second pass reads them again. Returns what went wrong with the
    /// addends (null: committed); the update has been applied then, so the parameters cannot be trusted.
    /// </summary>
    public string? CommitUpdate(StepReductions reduced, Member[] participants)
    {
        _mirrors.Clear();
        foreach (var m in participants)
            if (m.Region is { } region && _mirrors.Count < Optimizer.MaxMirrors) // (the rest: written at the next start)
            {
                region.BeginWriteParameters(Parameters);
                _mirrors.Add(region);
            }
        Optimizer.Apply(Parameters, reduced.Sum, Threads, _mirrors, reduced.Addends, reduced.AddendsOverwrite, out bool finite);
        if (reduced.AddendsProblem(finite) is { } problem) return problem;
        TrainingStep.UpdateRunningStats(Parameters, reduced.Merged);
        Version++;
        foreach (var region in _mirrors) region.EndWriteParameters(Version, Parameters);
        return null;
    }
}
