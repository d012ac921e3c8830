namespace BnCluster.Coordinator;

/// <summary>
/// The run log's property names, Phase values and message templates (docs/design.md, "Contracts"), defined once here: the
/// coordinator logs with them, and the Node's LogEvents (its helpers and `bncluster logs`) refers to them.
/// </summary>
public static class ClusterLog
{
    public const string Step = "Step", Epoch = "Epoch", Layer = "Layer", Worker = "Worker", Node = "Node",
        Phase = "Phase", ElapsedMs = "ElapsedMs", Loss = "Loss", Accuracy = "Accuracy";

    public const string Compute = "compute", BnWait = "bn-wait", GradExchange = "grad-exchange", Optimizer = "optimizer",
        Commit = "commit", Abort = "abort", Membership = "membership", EpochEnd = "epoch";

    public const string StepPhaseTemplate = "Step {Step} epoch {Epoch} worker {Worker} on {Node:l}: {Phase:l} {ElapsedMs:F3} ms";
    /// <summary>A worker's compute phase, with its process's GC counters as it sent the step (<c>StepTimings</c>).</summary>
    public const string StepComputeTemplate = "Step {Step} epoch {Epoch} worker {Worker} on {Node:l}: {Phase:l} {ElapsedMs:F3} ms (process: {Gen0} gen0 collections, {AllocatedBytes} bytes allocated)";
    public const string Gen0 = "Gen0", AllocatedBytes = "AllocatedBytes";
    public const string StepLayerPhaseTemplate = "Step {Step} epoch {Epoch} worker {Worker} on {Node:l}: {Phase:l} layer {Layer} {ElapsedMs:F3} ms";
    public const string StepCommittedTemplate = "Step {Step} epoch {Epoch} committed: loss {Loss:F4} accuracy {Accuracy:P2} in {ElapsedMs:F1} ms";
    public const string StepAbortedTemplate = "Step {Step} epoch {Epoch} aborted: {Reason:l}";
    public const string WorkerJoinedTemplate = "Worker {Worker} on {Node:l} joined ({Members} members)";
    public const string WorkerRejoinedTemplate = "Worker {Worker} on {Node:l} joined again ({Members} members)";
    public const string WorkerLeftTemplate = "Worker {Worker} on {Node:l} left: {Reason:l} ({Members} members)";
    public const string EpochTemplate = "Epoch {Epoch} done at step {Step}: loss {Loss:F4} accuracy {Accuracy:P2}, test loss {TestLoss:F4} accuracy {TestAccuracy:P2}, {SamplesPerSecond:F0} samples/s, {ElapsedMs:F0} ms";
}
