using BnCluster.Coordinator;
using Serilog;

namespace BnCluster.Node.Logging;

/// <summary>
/// The event conventions of the run log (docs/design.md, "Contracts"): property names, Phase values and message
/// templates. The trainer logs through the helpers below so that `bncluster logs` can summarize any run.
/// Per-step events are Debug (they go to log.jsonl, not to the console); epoch, membership and abort
/// events are Information/Warning.
/// </summary>
public static class LogEvents
{
    // Property names (defined once, in the coordinator's ClusterLog, which logs the cluster's steps).
    public const string Step = ClusterLog.Step, Epoch = ClusterLog.Epoch, Layer = ClusterLog.Layer, Worker = ClusterLog.Worker,
        Node = ClusterLog.Node, Phase = ClusterLog.Phase, ElapsedMs = ClusterLog.ElapsedMs, Loss = ClusterLog.Loss, Accuracy = ClusterLog.Accuracy;
    /// <summary>On a worker's compute events: its process's GC counters as it sent the step.</summary>
    public const string Gen0 = ClusterLog.Gen0, AllocatedBytes = ClusterLog.AllocatedBytes;

    /// <summary>Values of the Phase property.</summary>
    public static class Phases
    {
        /// <summary>A worker computing (forward or backward of its shard).</summary>
        public const string Compute = ClusterLog.Compute;
        /// <summary>A worker waiting for the global batch-norm statistics (forward or backward).</summary>
        public const string BnWait = ClusterLog.BnWait;
        /// <summary>A worker sending its gradients and waiting for the next step's parameters.</summary>
        public const string GradExchange = ClusterLog.GradExchange;
        /// <summary>The coordinator applying the optimizer.</summary>
        public const string Optimizer = ClusterLog.Optimizer;
        /// <summary>A step committed by the coordinator (one event per step).</summary>
        public const string Commit = ClusterLog.Commit;
        /// <summary>A step aborted (a worker left mid-step); it is re-run on the survivors.</summary>
        public const string Abort = ClusterLog.Abort;
        /// <summary>A worker joined or left the roster.</summary>
        public const string Membership = ClusterLog.Membership;
        /// <summary>An epoch finished (metrics).</summary>
        public const string EpochEnd = ClusterLog.EpochEnd;

        /// <summary>Phases in which a worker waits for others rather than computing.</summary>
        public static bool IsWaiting(string phase) => phase is BnWait or GradExchange;
    }

    // Message templates. Keep the property names; the summary reads properties, not text.
    public const string StepPhaseTemplate = ClusterLog.StepPhaseTemplate;
    public const string StepLayerPhaseTemplate = ClusterLog.StepLayerPhaseTemplate;
    public const string StepCommittedTemplate = ClusterLog.StepCommittedTemplate;
    public const string StepAbortedTemplate = ClusterLog.StepAbortedTemplate;
    public const string WorkerJoinedTemplate = ClusterLog.WorkerJoinedTemplate;
    public const string WorkerLeftTemplate = ClusterLog.WorkerLeftTemplate;
    public const string EpochTemplate = ClusterLog.EpochTemplate;

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
