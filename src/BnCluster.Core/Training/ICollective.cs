namespace BnCluster.Core.Training;

/// <summary>
/// The synchronisation points of one training step (docs/design.md, "One training step"). The step is one linear
/// method that awaits these; a local collective answers at once (one worker), a cluster
/// collective sends the partials to the coordinator and awaits its reply.
/// Implementations must not keep or mutate the partials they are given after returning.
/// </summary>
public interface ICollective
{
    /// <summary>Forward BN: this worker's (n, mean, M2) for <paramref name="layer"/> in, the global batch's merged moments out.</summary>
    ValueTask<BatchNormStats> AllReduceStatsAsync(int layer, BatchNormStats local, CancellationToken cancellationToken = default);

    /// <summary>
    /// Backward BN: this worker's Σdy and Σdy·z_norm in, the sums over the global batch out (these are dβ and dγ).
    /// Runs <paramref name="whileWaiting"/> (when given) once, on the calling thread, after this worker's sums are on
    /// their way and before waiting for the others': work that does not need the result (the step computes the weight
    /// gradients of the layer above meanwhile), so that a worker ahead of the others computes instead of waiting.
    /// </summary>
    ValueTask<BatchNormGradSums> AllReduceGradSumsAsync(int layer, BatchNormGradSums local, Action? whileWaiting, CancellationToken cancellationToken = default);
}
