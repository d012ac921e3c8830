using BnCluster.Core.Data;
using BnCluster.Core.Model;

namespace BnCluster.Core.Training;

/// <summary>
/// The test-time alternative to the running averages: each batch-norm layer's mean and variance over a whole (training)
/// set, computed in eval mode. Layer by layer, because layer l's inputs depend on the statistics of the layers below:
/// layer 0's moments over all rows, written into its running statistics, then layer 1's with those in place, and so on.
/// </summary>
public static class WholeSetStatistics
{
    /// <summary>
    /// Replaces <see cref="Parameters.RunningMean"/> and <see cref="Parameters.RunningVar"/> of every BN layer with the
    /// moments of its input over all rows of <paramref name="data"/> (already input-normalized), the variance unbiased
    /// (n/(n−1)) as the running update makes it. One eval-mode pass over the data per BN layer.
    /// </summary>
    public static void Apply(Parameters p, Workspace ws, Dataset data)
    {
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(ws);
        ArgumentNullException.ThrowIfNull(data);
        if (data.Count < 2) throw new ArgumentException($"dataset '{data.Name}' has {data.Count} rows; whole-set statistics need two");
        if (p.Spec.BatchNorm == BatchNormPlacement.None) return;
        for (int l = 0; l < p.HiddenLayers; l++)
        {
            var bn = p.BatchNorm[l]!;
            var total = new BatchNormStats(bn.Features);
            var chunk = new BatchNormStats(bn.Features);
            for (int start = 0; start < data.Count; start += ws.MaxRows)
            {
                int rows = Math.Min(ws.MaxRows, data.Count - start);
                data.CopyRows(start, rows, ws.X);
                ws.InputOffset = null;
                ws.Rows = rows;
                TrainingStep.EvalForward(p, ws);
                // BN normalizes the dense output when it precedes the activation, the activation output when it follows it.
                var input = p.Spec.BatchNorm == BatchNormPlacement.Before ? ws.Z[l] : ws.Act[l];
                chunk.ComputeFrom(input.AsSpan(0, rows * bn.Features), rows);
                total.Merge(chunk);
            }
            double unbias = (double)total.Count / (total.Count - 1);
            for (int j = 0; j < bn.Features; j++)
            {
                p.RunningMean[l]![j] = (float)total.Mean[j];
                p.RunningVar[l]![j] = (float)(total.Variance(j) * unbias);
            }
        }
    }
}
