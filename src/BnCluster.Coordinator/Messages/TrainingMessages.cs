using BnCluster.Collectives;
using MessagePack;

namespace BnCluster.Coordinator.Messages;

// The messages between the coordinator and its workers (docs/design.md, "One training step"). Each message owns its
// arrays: the sender allocates them for this message and never touches them again, so in one process they travel as
// objects without serialization. (BnGlobal and BnGradGlobal of one reduction share one set of arrays between all its
// receivers, which only read them.) Between processes TrainingMessageSerializer encodes them with MessagePack; the
// [Key]s are the wire format. The big tensors (StartStep/Evaluate parameters, StepGradients tensors) are rented from
// TensorPool: the receiver returns them once consumed (see TensorPool for the rule).

/// <summary>Every message of the training protocol: bound to <see cref="TrainingMessageSerializer"/> in cluster.hocon.</summary>
public interface ITrainingMessage;

/// <summary>Version of the training protocol; a worker of another version is refused at join.</summary>
public static class ProtocolInfo
{
    // 2: tensors through shared memory (SharedMemoryOffer, StartStep.SharedParameters, StepGradients.Shared);
    // 3: batch-norm partials exchanged between local workers (BatchNormExchangeOffer, StartStep.SharedBatchNormRanks);
    // 4: the next step announced to run ahead (StartStep.NextRows/NextAttempt), three state versions in the update file
    // 6: Akka.NET and MessagePack-CSharp carry the messages; JobQuery, TrainingDone, WorkerFailed
    // 7: StatusQuery, TrainingStatus, ClusterStatus (`bncluster status`)
    public const int Version = 7;
}

// ---- Membership ----

/// <summary>Worker → coordinator: join request; refused when version, job id or dataset hash differ.</summary>
[MessagePackObject]
public sealed record RegisterWorker([property: Key(0)] int ProtocolVersion, [property: Key(1)] string JobId, [property: Key(2)] string DatasetSha256, [property: Key(3)] string Node) : ITrainingMessage;

/// <summary>Coordinator → worker: accepted with this worker id (ids are never reused); it enters at the next step.</summary>
[MessagePackObject]
public sealed record WorkerRegistered([property: Key(0)] int WorkerId, [property: Key(1)] int Members) : ITrainingMessage;

/// <summary>Coordinator → worker: join refused (the reason names the mismatch).</summary>
[MessagePackObject]
public sealed record RegistrationRefused([property: Key(0)] string Reason) : ITrainingMessage;

/// <summary>Coordinator → worker: you were dropped from the roster (unreachable, silent past the step timeout)
/// but are alive after all; register again to be admitted at the next step.</summary>
[MessagePackObject]
public sealed record WorkerDropped([property: Key(0)] string Reason) : ITrainingMessage;

/// <summary>
/// Coordinator → worker process: the <see cref="SharedTensorRegion"/> file created for it. A worker that opens it
/// and finds <paramref name="Token"/> in it is on the coordinator's machine; from then on its step tensors go
/// through the file instead of the socket.
/// </summary>
[MessagePackObject]
public sealed record SharedMemoryOffer([property: Key(0)] string Path, [property: Key(1)] byte[] Token) : ITrainingMessage;

/// <summary>Worker → coordinator: the answer to the offer of <paramref name="Path"/>; <paramref name="Reason"/> says why not.</summary>
[MessagePackObject]
public sealed record SharedMemoryAnswer([property: Key(0)] string Path, [property: Key(1)] bool Accepted, [property: Key(2)] string Reason) : ITrainingMessage;

/// <summary>
/// Coordinator → the worker processes that took a <see cref="SharedMemoryOffer"/>: a <see cref="SharedBatchNormExchange"/>
/// file with slots for <paramref name="Ranks"/> workers, through which they all-reduce BN partials among themselves in
/// the steps that say so (<see cref="StartStep.SharedBatchNormRanks"/>), and a <see cref="SharedShardedUpdate"/> file
/// (<paramref name="UpdatePath"/>, empty when none) in which they make the optimizer update themselves, each on its
/// slice (<see cref="StartStep.UpdateStep"/>). A newer offer replaces an older one; a worker takes both files or neither.
/// </summary>
[MessagePackObject]
public sealed record BatchNormExchangeOffer([property: Key(0)] string Path, [property: Key(1)] byte[] Token, [property: Key(2)] int Ranks, [property: Key(3)] string UpdatePath = "", [property: Key(4)] byte[]? UpdateToken = null) : ITrainingMessage;

/// <summary>Worker → coordinator: the answer to the exchange offer of <paramref name="Path"/>; <paramref name="Reason"/> says why not.</summary>
[MessagePackObject]
public sealed record BatchNormExchangeAnswer([property: Key(0)] string Path, [property: Key(1)] bool Accepted, [property: Key(2)] string Reason) : ITrainingMessage;

/// <summary>
/// A worker process → the coordinator node's job actor: what is trained here? Answered with a <see cref="JobDescription"/>,
/// or <see cref="RegistrationRefused"/> when the worker speaks another protocol or has another dataset file.
/// </summary>
[MessagePackObject]
public sealed record JobQuery([property: Key(0)] int ProtocolVersion, [property: Key(1)] string DatasetSha256, [property: Key(2)] string Node) : ITrainingMessage;

/// <summary>
/// What a worker process needs to build its network and split its copy of the dataset the coordinator's way, and the
/// dataset's SHA-256 so that a worker with another file is refused before it joins the run.
/// </summary>
[MessagePackObject]
public sealed record JobDescription([property: Key(0)] int ProtocolVersion, [property: Key(1)] string JobId, [property: Key(2)] string DatasetSha256,
    [property: Key(3)] int Seed, [property: Key(4)] string? LabelColumn, [property: Key(5)] int[] Hidden, [property: Key(6)] string Activation,
    [property: Key(7)] string BatchNorm, [property: Key(8)] float BnEpsilon, [property: Key(9)] float BnMomentum) : ITrainingMessage;

/// <summary>Coordinator → every worker: the run is over (<paramref name="Succeeded"/>: it finished; else it failed with <paramref name="Reason"/>).</summary>
[MessagePackObject]
public sealed record TrainingDone([property: Key(0)] bool Succeeded, [property: Key(1)] string Reason) : ITrainingMessage;

/// <summary>Worker → coordinator: this worker failed (an exception in its work) and stops; the run fails with the reason.</summary>
[MessagePackObject]
public sealed record WorkerFailed([property: Key(0)] string Reason) : ITrainingMessage;

/// <summary>
/// Coordinator → a worker that shares no memory with it: connect to the data plane at <paramref name="Host"/>:<paramref name="Port"/>
/// and say hello with <paramref name="Token"/>; from then on the step's messages between the two travel there (DataChannel).
/// </summary>
[MessagePackObject]
public sealed record DataChannelOffer([property: Key(0)] string Host, [property: Key(1)] int Port, [property: Key(2)] byte[] Token) : ITrainingMessage;

// ---- Input normalization ----

/// <summary>Coordinator → worker: the (n, mean, M2) of training rows [Start, Start+Count) of the raw data, for round <paramref name="Round"/>.</summary>
[MessagePackObject]
public sealed record InputStatsRequest([property: Key(0)] long Round, [property: Key(1)] int Start, [property: Key(2)] int Count) : ITrainingMessage;

/// <summary>Worker → coordinator: the moments of the requested slice (float64).</summary>
[MessagePackObject]
public sealed record InputStatsReply([property: Key(0)] long Round, [property: Key(1)] long Count, [property: Key(2)] double[] Mean, [property: Key(3)] double[] M2) : ITrainingMessage;

/// <summary>Coordinator → worker: the merged input normalization to apply to train and test data.</summary>
[MessagePackObject]
public sealed record SetInputNormalization([property: Key(0)] float[] Mean, [property: Key(1)] float[] Variance, [property: Key(2)] float Epsilon) : ITrainingMessage;

// ---- One step ----

/// <summary>
/// Coordinator → worker: run attempt <paramref name="Attempt"/> of step <paramref name="Step"/> (1-based) on
/// <paramref name="Rows"/> (dataset rows of this worker's shard) of a global batch of <paramref name="GlobalBatchSize"/>.
/// <paramref name="Parameters"/> is the committed parameter snapshot (<see cref="ParameterSnapshot"/>) of
/// <paramref name="ParametersVersion"/> (= committed steps), or null when the worker already holds that version.
/// Rank 0 is the one worker that contributes dγ, dβ to the gradient sum.
/// <paramref name="Parameters"/> is pooled and may be shared by all workers of the step: the worker calls
/// <see cref="TensorPool.Release(float[][])"/> once after restoring it. <paramref name="SharedParameters"/>: the
/// parameters of that version wait in the worker's <see cref="SharedTensorRegion"/> instead (Parameters is null).
/// <paramref name="SharedBatchNormRanks"/> &gt; 0: this attempt's BN partials are all-reduced by its that many workers
/// through the last <see cref="BatchNormExchangeOffer"/>'s file instead of BnStats/BnGradStats messages.
/// <paramref name="UpdateStep"/> &gt; 0: those workers also make the optimizer update that commits step
/// <paramref name="UpdateStep"/> of the optimizer (its t), each on its slice, in the offer's <see cref="SharedShardedUpdate"/>
/// file, whose state version <paramref name="ParametersVersion"/> holds the parameters to start from (Parameters is null).
/// <paramref name="NextRows"/> (sharded steps only): this worker's rows of the next step, which the coordinator will start
/// as attempt <paramref name="NextAttempt"/> with the same workers if this one commits; a worker may run that step's
/// forward and backward ahead, as soon as every slice of this step's update is in, and goes on to its update only
/// when that StartStep arrives (anything else cancels it). Null: no look-ahead (the epoch's last step, say).
/// </summary>
[MessagePackObject]
public sealed record StartStep([property: Key(0)] long Step, [property: Key(1)] int Epoch, [property: Key(2)] int Attempt, [property: Key(3)] int GlobalBatchSize, [property: Key(4)] int Rank, [property: Key(5)] int[] Rows, 
    [property: Key(6)] long ParametersVersion, [property: Key(7)] float[][]? Parameters, [property: Key(8)] bool SharedParameters = false, [property: Key(9)] int SharedBatchNormRanks = 0, [property: Key(10)] long UpdateStep = 0, 
    [property: Key(11)] int[]? NextRows = null, [property: Key(12)] int NextAttempt = 0) : ITrainingMessage
{
    /// <summary>The StartStep the coordinator sends for the next step when this one commits as announced (null: none announced).</summary>
    public StartStep? Announced() => NextRows is { } rows
        ? new StartStep(Step + 1, Epoch, NextAttempt, GlobalBatchSize, Rank, rows, ParametersVersion + 1, null, false, SharedBatchNormRanks, UpdateStep + 1)
        : null;

    /// <summary>Asks for the same work as <paramref name="other"/> (every field but the look-ahead).</summary>
    public bool SameWork(StartStep other) =>
        Step == other.Step && Epoch == other.Epoch && Attempt == other.Attempt && GlobalBatchSize == other.GlobalBatchSize && Rank == other.Rank
        && Rows.AsSpan().SequenceEqual(other.Rows) && ParametersVersion == other.ParametersVersion && Parameters is null && other.Parameters is null
        && SharedParameters == other.SharedParameters && SharedBatchNormRanks == other.SharedBatchNormRanks && UpdateStep == other.UpdateStep;
}

/// <summary>Worker → coordinator: forward BN moments (n, mean, M2) of its shard at hidden layer <paramref name="Layer"/>.</summary>
[MessagePackObject]
public sealed record BnStats([property: Key(0)] long Step, [property: Key(1)] int Attempt, [property: Key(2)] int Layer, [property: Key(3)] long Count, [property: Key(4)] double[] Mean, [property: Key(5)] double[] M2) : ITrainingMessage;

/// <summary>Coordinator → worker: the moments of the global batch at <paramref name="Layer"/>, merged in rank order.</summary>
[MessagePackObject]
public sealed record BnGlobal([property: Key(0)] long Step, [property: Key(1)] int Attempt, [property: Key(2)] int Layer, [property: Key(3)] long Count, [property: Key(4)] double[] Mean, [property: Key(5)] double[] M2) : ITrainingMessage;

/// <summary>Worker → coordinator: Σdy and Σdy·z_norm of its shard at <paramref name="Layer"/>.</summary>
[MessagePackObject]
public sealed record BnGradStats([property: Key(0)] long Step, [property: Key(1)] int Attempt, [property: Key(2)] int Layer, [property: Key(3)] double[] SumDy, [property: Key(4)] double[] SumDyXhat) : ITrainingMessage;

/// <summary>Coordinator → worker: the sums over the global batch (dβ, dγ), added in rank order.</summary>
[MessagePackObject]
public sealed record BnGradGlobal([property: Key(0)] long Step, [property: Key(1)] int Attempt, [property: Key(2)] int Layer, [property: Key(3)] double[] SumDy, [property: Key(4)] double[] SumDyXhat) : ITrainingMessage;

/// <summary>
/// Worker → coordinator: the end of a step: its loss partial (Σ loss, correct, rows) and its gradients in the
/// order of <c>Parameters.Trainable</c>. (The loss partial rides here rather than in its own message: both are
/// needed at the same moment, and one message per step is one less thing to order.) <paramref name="Tensors"/>
/// are pooled: the coordinator returns them to <see cref="TensorPool"/> once added to the sum.
/// <paramref name="Timings"/> is the worker's own account of the step, which the coordinator logs, so every
/// worker's phases end up in the run log whatever process or machine the worker runs on.
/// <paramref name="Shared"/>: the gradients are in the worker's <see cref="SharedTensorRegion"/>, stamped with this
/// step and attempt, and <paramref name="Tensors"/> is empty.
/// </summary>
[MessagePackObject]
public sealed record StepGradients([property: Key(0)] long Step, [property: Key(1)] int Attempt, [property: Key(2)] double SumLoss, [property: Key(3)] int Correct, [property: Key(4)] int Count, [property: Key(5)] float[][] Tensors, [property: Key(6)] StepTimings Timings, 
    [property: Key(7)] bool Shared = false) : ITrainingMessage;

/// <summary>One BN reduction a worker waited for: hidden layer, direction, and the time it waited (ms).</summary>
[MessagePackObject]
public readonly record struct BnWait([property: Key(0)] int Layer, [property: Key(1)] bool Backward, [property: Key(2)] double Ms);

/// <summary>
/// A worker's timings of one step: its compute time (the step minus its BN waits), each BN wait, and the
/// gradient exchange of its previous step (from sending those gradients to the next work arriving; step 0 when
/// there is none, e.g. its first step). <paramref name="Gen0Collections"/> and <paramref name="AllocatedBytes"/> are
/// the worker process's own counters since it started (GC.CollectionCount(0), GC.GetTotalAllocatedBytes), read as it
/// sends: two steps' difference is what the worker's steps in between cost in garbage, wherever it runs.
/// </summary>
[MessagePackObject]
public sealed record StepTimings([property: Key(0)] double ComputeMs, [property: Key(1)] BnWait[] BnWaits, [property: Key(2)] long ExchangeStep, [property: Key(3)] int ExchangeEpoch, [property: Key(4)] double ExchangeMs, 
    [property: Key(5)] int Gen0Collections = 0, [property: Key(6)] long AllocatedBytes = 0)
{
    public static StepTimings None { get; } = new(0, [], 0, 0, 0);
}

/// <summary>Coordinator → worker: stop working on this attempt (a worker was lost or sent a non-finite value).</summary>
[MessagePackObject]
public sealed record StepAborted([property: Key(0)] long Step, [property: Key(1)] int Attempt, [property: Key(2)] string Reason) : ITrainingMessage;

// ---- Evaluation ----

/// <summary>
/// Coordinator → worker: eval-mode loss and correct count of test rows [Start, Start+Count) with parameters of
/// <paramref name="ParametersVersion"/> (pooled and shared like <see cref="StartStep.Parameters"/>).
/// </summary>
[MessagePackObject]
public sealed record Evaluate([property: Key(0)] long Round, [property: Key(1)] int Start, [property: Key(2)] int Count, [property: Key(3)] long ParametersVersion, [property: Key(4)] float[][]? Parameters) : ITrainingMessage;

/// <summary>Worker → coordinator: Σ loss, correct and rows of its test slice.</summary>
[MessagePackObject]
public sealed record EvalResult([property: Key(0)] long Round, [property: Key(1)] double SumLoss, [property: Key(2)] int Correct, [property: Key(3)] int Count) : ITrainingMessage;

// ---- Status (`bncluster status`) ----

/// <summary>
/// Anyone → the coordinator node's status actor (answered with <see cref="ClusterStatus"/>), or the status actor → the
/// coordinator actor (answered with <see cref="TrainingStatus"/>). Read-only: it changes nothing in the run.
/// </summary>
[MessagePackObject]
public sealed record StatusQuery([property: Key(0)] int ProtocolVersion) : ITrainingMessage;

/// <summary>One worker of the coordinator's roster: its id (= the rank order) and its node.</summary>
[MessagePackObject]
public sealed record RosterEntry([property: Key(0)] int Id, [property: Key(1)] string Node);

/// <summary>
/// Coordinator → the status actor: the run as the coordinator sees it. <paramref name="State"/>: waiting for workers,
/// input statistics, training, evaluating or done. <paramref name="Step"/>: committed steps; <paramref name="Batch"/> of
/// <paramref name="BatchesInEpoch"/>: the epoch's committed batches. <paramref name="SamplesPerSecond"/>: of the epoch's
/// steps so far (the last epoch's at an epoch's start; 0 before any). <paramref name="LastLoss"/>,
/// <paramref name="LastAccuracy"/>: of the last committed step's batch (NaN before any).
/// </summary>
[MessagePackObject]
public sealed record TrainingStatus([property: Key(0)] string State, [property: Key(1)] int Epoch, [property: Key(2)] int Epochs, [property: Key(3)] long Step,
    [property: Key(4)] long MaxSteps, [property: Key(5)] int Batch, [property: Key(6)] int BatchesInEpoch, [property: Key(7)] double SamplesPerSecond,
    [property: Key(8)] double LastLoss, [property: Key(9)] double LastAccuracy, [property: Key(10)] int WorkersNeeded, [property: Key(11)] RosterEntry[] Workers,
    [property: Key(12)] double Seconds) : ITrainingMessage;

/// <summary>A member of the cluster as the coordinator's node sees it (Akka.Cluster's state): address, roles, status, reachability.</summary>
[MessagePackObject]
public sealed record MemberEntry([property: Key(0)] string Address, [property: Key(1)] string[] Roles, [property: Key(2)] string Status, [property: Key(3)] bool Reachable);

/// <summary>
/// The coordinator node's status actor → the asker: the cluster's members and the coordinator's <see cref="TrainingStatus"/>
/// (null when the coordinator actor did not answer in time, or is gone).
/// </summary>
[MessagePackObject]
public sealed record ClusterStatus([property: Key(0)] int ProtocolVersion, [property: Key(1)] string Node, [property: Key(2)] MemberEntry[] Members,
    [property: Key(3)] TrainingStatus? Training) : ITrainingMessage;
