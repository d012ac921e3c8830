namespace BnCluster.Core.Training;

/// <summary>One worker (K = 1): the local partials are the global result. Completes synchronously, allocates nothing.</summary>
public sealed class LocalCollective : ICollective
{
    public static LocalCollective Instance { get; } = new();

    public ValueTask<BatchNormStats> AllReduceStatsAsync(int layer, BatchNormStats local, CancellationToken cancellationToken = default)
        => new(local);

    public ValueTask<BatchNormGradSums> AllReduceGradSumsAsync(int layer, BatchNormGradSums local, Action? whileWaiting, CancellationToken cancellationToken = default)
    {
        whileWaiting?.Invoke();
        return new(local);
    }
}
