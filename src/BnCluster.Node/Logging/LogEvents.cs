using Serilog;

namespace BnCluster.Node.Logging;

/// <summary>
/// The event conventions of the run log (DESIGN §5): property names, Phase values and message
/// templates. The trainer logs through the helpers below so that `bncluster logs` can summarize any run.
/// Per-step events are Debug (they go to log.jsonl, not to the console); epoch, membership and abort
/// events are Information/Warning.
/// </summary>
public static class LogEvents
{
    // Property names.
    public const string Step = "Step", Epoch = "Epoch", Layer = "Layer", Worker = "Worker", Node = "Node",
        Phase = "Phase", ElapsedMs = "ElapsedMs", Loss = "Loss", Accuracy = "Accuracy";

    /// <summary>Values of the Phase property.</summary>
    public static class Phases
    {
        /// <summary>A worker computing (forward or backward of its shard).</summary>
        public const string Compute = "compute";
        /// <summary>A worker waiting for the global batch-norm statistics (forward or backward).</summary>
        public const string BnWait = "bn-wait";
        /// <summary>A worker sending its gradients and waiting for the next step's parameters.</summary>
        public const string GradExchange = "grad-exchange";
        /// <summary>The coordinator applying the optimizer.</summary>
        public const string Optimizer = "optimizer";
        /// <summary>A step committed by the coordinator (one event per step).</summary>
        public const string Commit = "commit";
        /// <summary>A step aborted (a worker left mid-step); it is re-run on the survivors.</summary>
        public const string Abort = "abort";
        /// <summary>A worker joined or left the roster.</summary>
        public const string Membership = "membership";
        /// <summary>An epoch finished (metrics).</summary>
        public const string EpochEnd = "epoch";

        /// <summary>Phases in which a worker waits for others rather than computing.</summary>
        public static bool IsWaiting(string phase) => phase is BnWait or GradExchange;
    }

    // Message templates. Keep the property names; the summary reads properties, not text.
    public const string StepPhaseTemplate = "Step {Step} epoch {Epoch} worker {Worker} on {Node:l}: {Phase:l} {ElapsedMs:F3} ms";
    public const string StepLayerPhaseTemplate = "Step {Step} epoch {Epoch} worker {Worker} on {Node:l}: {Phase:l} layer {Layer} {ElapsedMs:F3} ms";
    public const string StepCommittedTemplate = "Step {Step} epoch {Epoch} committed: loss {Loss:F4} accuracy {Accuracy:P2} in {ElapsedMs:F1} ms";
    public const string StepAbortedTemplate = "Step {Step} epoch {Epoch} aborted: {Reason:l}";
    public const string WorkerJoinedTemplate = "Worker {Worker} on {Node:l} joined ({Members} members)";
    public const string WorkerLeftTemplate = "Worker {Worker} on {Node:l} left: {Reason:l} ({Members} members)";
    public const string EpochTemplate = "Epoch {Epoch} done at step {Step}: loss {Loss:F4} accuracy {Accuracy:P2}, test loss {TestLoss:F4} accuracy {TestAccuracy:P2}, {SamplesPerSecond:F0} samples/s, {ElapsedMs:F0} ms";

    /// <summary>Time a worker spent in one phase of one step (layer: for per-layer phases).</summary>
    public static void StepPhase(this ILogger log, long step, int epoch, int worker, string node, string phase, double elapsedMs, int? layer = null)
    {
        if (layer is int l) log.Debug(StepLayerPhaseTemplate, step, epoch, worker, node, phase, l, elapsedMs);
        else log.Debug(StepPhaseTemplate, step, epoch, worker, node, phase, elapsedMs);
    }

    public static void StepCommitted(this ILogger log, long step, int epoch, double loss, double accuracy, double elapsedMs) =>
        log.ForContext(Phase, Phases.Commit).Debug(StepCommittedTemplate, step, epoch, loss, accuracy, elapsedMs);

    public static void StepAborted(this ILogger log, long step, int epoch, string reason) =>
        log.ForContext(Phase, Phases.Abort).Warning(StepAbortedTemplate, step, epoch, reason);

    public static void WorkerJoined(this ILogger log, int worker, string node, int members) =>
        log.ForContext(Phase, Phases.Membership).Information(WorkerJoinedTemplate, worker, node, members);

    public static void WorkerLeft(this ILogger log, int worker, string node, string reason, int members) =>
        log.ForContext(Phase, Phases.Membership).Warning(WorkerLeftTemplate, worker, node, reason, members);

    public static void EpochCompleted(this ILogger log, EpochMetrics m) =>
        log.ForContext(Phase, Phases.EpochEnd).Information(EpochTemplate, m.Epoch, m.Step, m.TrainLoss, m.TrainAccuracy,
            m.TestLoss, m.TestAccuracy, m.SamplesPerSecond, m.Seconds * 1000);
}
