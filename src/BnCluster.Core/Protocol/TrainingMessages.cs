namespace BnCluster.Core.Protocol;

// The messages between the coordinator and its workers (DESIGN §3). Each message owns its arrays: the
// sender allocates them for this message and never touches them again, so in-process they travel as
// objects without serialization. (BnGlobal and BnGradGlobal of one reduction share one set of arrays
// between all its receivers, which only read them.) TrainingCodec encodes every one of them for remoting.
// The big tensors (StartStep/Evaluate parameters, StepGradients tensors) are rented from TensorPool: the
// receiver returns them once consumed (see TensorPool for the rule).

/// <summary>Version of the training protocol; a worker of another version is refused at join.</summary>
public static class ProtocolInfo
{
    // 2: tensors through shared memory (SharedMemoryOffer, StartStep.SharedParameters, StepGradients.Shared);
    // 3: batch-norm partials exchanged between local workers (BatchNormExchangeOffer, StartStep.SharedBatchNormRanks);
    // 4: the next step announced to run ahead (StartStep.NextRows/NextAttempt), three state versions in the update file
    public const int Version = 5;
}

// ---- Membership ----

/// <summary>Worker → coordinator: join request; refused when version, job id or dataset hash differ.</summary>
public sealed record RegisterWorker(int ProtocolVersion, string JobId, string DatasetSha256, string Node);

/// <summary>Coordinator → worker: accepted with this worker id (ids are never reused); it enters at the next step.</summary>
public sealed record WorkerRegistered(int WorkerId, int Members);

/// <summary>Coordinator → worker: join refused (the reason names the mismatch).</summary>
public sealed record RegistrationRefused(string Reason);

/// <summary>Coordinator → worker: you were dropped from the roster (unreachable, silent past the step timeout)
/// but are alive after all; register again to be admitted at the next step.</summary>
public sealed record WorkerDropped(string Reason);

/// <summary>
/// Coordinator → worker process: the <see cref="SharedTensorRegion"/> file created for it. A worker that opens it
/// and finds <paramref name="Token"/> in it is on the coordinator's machine; from then on its step tensors go
/// through the file instead of the socket.
/// </summary>
public sealed record SharedMemoryOffer(string Path, byte[] Token);

/// <summary>Worker → coordinator: the answer to the offer of <paramref name="Path"/>; <paramref name="Reason"/> says why not.</summary>
public sealed record SharedMemoryAnswer(string Path, bool Accepted, string Reason);

/// <summary>
/// Coordinator → the worker processes that took a <see cref="SharedMemoryOffer"/>: a <see cref="SharedBatchNormExchange"/>
/// file with slots for <paramref name="Ranks"/> workers, through which they all-reduce BN partials among themselves in
/// the steps that say so (<see cref="StartStep.SharedBatchNormRanks"/>), and a <see cref="SharedShardedUpdate"/> file
/// (<paramref name="UpdatePath"/>, empty when none) in which they make the optimizer update themselves, each on its
/// slice (<see cref="StartStep.UpdateStep"/>). A newer offer replaces an older one; a worker takes both files or neither.
/// </summary>
public sealed record BatchNormExchangeOffer(string Path, byte[] Token, int Ranks, string UpdatePath = "", byte[]? UpdateToken = null);

/// <summary>Worker → coordinator: the answer to the exchange offer of <paramref name="Path"/>; <paramref name="Reason"/> says why not.</summary>
public sealed record BatchNormExchangeAnswer(string Path, bool Accepted, string Reason);

// ---- Input normalization ----

/// <summary>Coordinator → worker: the (n, mean, M2) of training rows [Start, Start+Count) of the raw data, for round <paramref name="Round"/>.</summary>
public sealed record InputStatsRequest(long Round, int Start, int Count);

/// <summary>Worker → coordinator: the moments of the requested slice (float64).</summary>
public sealed record InputStatsReply(long Round, long Count, double[] Mean, double[] M2);

/// <summary>Coordinator → worker: the merged input normalization to apply to train and test data.</summary>
public sealed record SetInputNormalization(float[] Mean, float[] Variance, float Epsilon);

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
public sealed record StartStep(long Step, int Epoch, int Attempt, int GlobalBatchSize, int Rank, int[] Rows,
    long ParametersVersion, float[][]? Parameters, bool SharedParameters = false, int SharedBatchNormRanks = 0, long UpdateStep = 0,
    int[]? NextRows = null, int NextAttempt = 0)
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
public sealed record BnStats(long Step, int Attempt, int Layer, long Count, double[] Mean, double[] M2);

/// <summary>Coordinator → worker: the moments of the global batch at <paramref name="Layer"/>, merged in rank order.</summary>
public sealed record BnGlobal(long Step, int Attempt, int Layer, long Count, double[] Mean, double[] M2);

/// <summary>Worker → coordinator: Σdy and Σdy·z_norm of its shard at <paramref name="Layer"/>.</summary>
public sealed record BnGradStats(long Step, int Attempt, int Layer, double[] SumDy, double[] SumDyXhat);

/// <summary>Coordinator → worker: the sums over the global batch (dβ, dγ), added in rank order.</summary>
public sealed record BnGradGlobal(long Step, int Attempt, int Layer, double[] SumDy, double[] SumDyXhat);

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
public sealed record StepGradients(long Step, int Attempt, double SumLoss, int Correct, int Count, float[][] Tensors, StepTimings Timings,
    bool Shared = false);

/// <summary>One BN reduction a worker waited for: hidden layer, direction, and the time it waited (ms).</summary>
public readonly record struct BnWait(int Layer, bool Backward, double Ms);

/// <summary>
/// A worker's timings of one step: its compute time (the step minus its BN waits), each BN wait, and the
/// gradient exchange of its previous step (from sending those gradients to the next work arriving; step 0 when
/// there is none, e.g. its first step). <paramref name="Gen0Collections"/> and <paramref name="AllocatedBytes"/> are
/// the worker process's own counters since it started (GC.CollectionCount(0), GC.GetTotalAllocatedBytes), read as it
/// sends: two steps' difference is what the worker's steps in between cost in garbage, wherever it runs.
/// </summary>
public sealed record StepTimings(double ComputeMs, BnWait[] BnWaits, long ExchangeStep, int ExchangeEpoch, double ExchangeMs,
    int Gen0Collections = 0, long AllocatedBytes = 0)
{
    public static StepTimings None { get; } = new(0, [], 0, 0, 0);
}

/// <summary>Coordinator → worker: stop working on this attempt (a worker was lost or sent a non-finite value).</summary>
public sealed record StepAborted(long Step, int Attempt, string Reason);

// ---- Evaluation ----

/// <summary>
/// Coordinator → worker: eval-mode loss and correct count of test rows [Start, Start+Count) with parameters of
/// <paramref name="ParametersVersion"/> (pooled and shared like <see cref="StartStep.Parameters"/>).
/// </summary>
public sealed record Evaluate(long Round, int Start, int Count, long ParametersVersion, float[][]? Parameters);

/// <summary>Worker → coordinator: Σ loss, correct and rows of its test slice.</summary>
public sealed record EvalResult(long Round, double SumLoss, int Correct, int Count);
