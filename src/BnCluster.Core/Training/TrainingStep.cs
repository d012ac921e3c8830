using System.Diagnostics;
using System.Numerics.Tensors;
using BnCluster.Core.Data;
using BnCluster.Core.Layers;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;

namespace BnCluster.Core.Training;

/// <summary>One worker's share of a step: Σ −log ŷ over its rows (not divided by N), rows classified right, rows.</summary>
public readonly record struct LossPartial(double SumLoss, int Correct, int Count)
{
    public LossPartial Add(LossPartial other) => new(SumLoss + other.SumLoss, Correct + other.Correct, Count + other.Count);
}

/// <summary>
/// The training step (docs/design.md, "One training step") as one linear method against an <see cref="ICollective"/>, plus
/// the eval-mode forward. Hidden layer order: BN before: Dense(no bias) → BN → g; BN after:
/// Dense(bias) → g → BN; none: Dense(bias) → g. Output: Dense(bias) → softmax CE (mean over global N).
/// </summary>
public static class TrainingStep
{
    /// <summary>
    /// Gathers <paramref name="rowIndices"/> of <paramref name="data"/>, runs forward (awaiting the collective
    /// at each BN layer and normalizing with the global μ, σ²), the loss, and backward (awaiting the collective
    /// for Σdy, Σdy·z_norm at each BN layer). Leaves this worker's gradients in <see cref="Workspace.Gradients"/>
    /// and each BN layer's global moments in <see cref="Workspace.GlobalStats"/>. Changes no parameter.
    /// </summary>
    public static async ValueTask<LossPartial> ForwardBackwardAsync(Parameters p, Workspace ws, Dataset data,
        ReadOnlyMemory<int> rowIndices, int globalBatchSize, ICollective collective, CancellationToken ct = default)
    {
        int rows = rowIndices.Length;
        if (rows > ws.MaxRows) throw new ArgumentException($"{rows} rows exceed the workspace's {ws.MaxRows}");
        if (globalBatchSize < rows || globalBatchSize <= 0) throw new ArgumentException($"global batch {globalBatchSize} is smaller than the {rows} local rows");
        if (data.FeatureCount != p.Spec.Inputs) throw new ArgumentException($"dataset has {data.FeatureCount} features, network expects {p.Spec.Inputs}");
        ct.ThrowIfCancellationRequested();
        ws.PendingWeightLayer = -1; // (a step cancelled before its end may have left one)
        Gather(ws, p, data, rowIndices);

        // Forward.
        for (int l = 0; l < p.HiddenLayers; l++)
        {
            ForwardToStats(p, ws, l);
            if (p.BatchNorm[l] is { } bn)
            {
                var global = await collective.AllReduceStatsAsync(l, ws.LocalStats[l]!, ct).ConfigureAwait(false);
                ws.GlobalStats[l]!.CopyFrom(global);
                ForwardFromStats(p, ws, l, bn);
            }
        }
        var loss = OutputForwardBackward(p, ws, globalBatchSize);

        // Backward. Each dense layer's input gradient first (the layer below needs it); its weight gradients while the
        // next batch-norm reduction below is in flight, or at once where there is none.
        for (int l = p.HiddenLayers - 1; l >= 0; l--)
        {
            if (p.BatchNorm[l] is { } bn)
            {
                BackwardToSums(p, ws, l, bn);
                var global = await collective.AllReduceGradSumsAsync(l, ws.LocalGradSums[l]!, ws.ComputePendingWeightGradients, ct).ConfigureAwait(false);
                ws.GlobalGradSums[l]!.CopyFrom(global);
            }
            else PendingWeightGradients(ws);
            BackwardFromSums(p, ws, l);
        }
        PendingWeightGradients(ws);
        return loss;
    }

    /// <summary>
    /// One whole single-node step on <paramref name="rowIndices"/> (the global batch): forward and backward with no
    /// one to reduce with, the optimizer on the workspace's threads, the running averages. The trainer, `bench` and
    /// the tests run this, so what is timed is what trains.
    /// </summary>
    public static async ValueTask<LossPartial> TrainLocalAsync(Parameters p, Workspace ws, Optimizer optimizer, Dataset data,
        ReadOnlyMemory<int> rowIndices, CancellationToken ct = default)
    {
        var loss = await ForwardBackwardAsync(p, ws, data, rowIndices, rowIndices.Length, LocalCollective.Instance, ct).ConfigureAwait(false);
        optimizer.Apply(p, ws.Gradients, ws.MatMul);
        UpdateRunningStats(p, ws);
        return loss;
    }

    /// <summary>r_μ, r_σ² of every BN layer from the global moments of the step just computed in <paramref name="ws"/>.</summary>
    public static void UpdateRunningStats(Parameters p, Workspace ws)
    {
        for (int l = 0; l < p.HiddenLayers; l++)
            p.BatchNorm[l]?.UpdateRunning(p.RunningMean[l], p.RunningVar[l], ws.GlobalStats[l]!);
    }

    /// <summary>
    /// The same update from global moments the caller holds (the coordinator's merged stats per hidden layer, null
    /// for layers without BN), once per committed step.
    /// </summary>
    public static void UpdateRunningStats(Parameters p, IReadOnlyList<BatchNormStats?> globalStats)
    {
        if (globalStats.Count != p.HiddenLayers) throw new ArgumentException($"{globalStats.Count} global stats for {p.HiddenLayers} hidden layers");
        for (int l = 0; l < p.HiddenLayers; l++)
            if (p.BatchNorm[l] is { } bn)
                bn.UpdateRunning(p.RunningMean[l], p.RunningVar[l], globalStats[l] ?? throw new ArgumentException($"no global stats for batch norm layer {l}"));
    }

    /// <summary>
    /// X[n×inputs] = the dataset rows <paramref name="rowIndices"/> (decoded and normalized by the dataset), minus the
    /// dataset's <see cref="Dataset.ZeroOffsets"/> when it has them and a hidden layer will add them back, split by
    /// row ranges over the MatMul's threads (every row is independent), then the labels. With the dataset's
    /// <see cref="Dataset.ZeroPatternRanks"/> and the offsets, the rows are taken in rank order (a permutation of the
    /// batch: only the rounding of its sums changes) so that the first layer's GEMMs find more all-zero depth steps.
    /// </summary>
    private static unsafe void Gather(Workspace ws, Parameters p, Dataset data, ReadOnlyMemory<int> rowIndices)
    {
        int classes = p.Spec.Classes;
        ws.InputOffset = p.HiddenLayers > 0 ? data.ZeroOffsets : null;
        if (ws.InputOffset is not null && ws.OrderRowsByZeroPattern && data.ZeroPatternRanks is { } ranks)
        {
            int n = rowIndices.Length;
            var order = ws.GatherOrder.AsSpan(0, n);
            var keys = ws.GatherRanks.AsSpan(0, n);
            rowIndices.Span.CopyTo(order);
            for (int i = 0; i < n; i++)
            {
                data.CheckRow(order[i]);
                keys[i] = ranks[order[i]];
            }
            keys.Sort(order); // (the ranks are distinct: the order does not depend on the one given)
            rowIndices = ws.GatherOrder.AsMemory(0, n);
        }
        var gather = ws.RowGather;
        gather.Data = data;
        gather.Rows = rowIndices;
        gather.X = ws.X;
        gather.Offset = ws.InputOffset;
        try
        {
            ws.MatMul.ParallelFor(rowIndices.Length, (long)rowIndices.Length * data.FeatureCount, gather, &GatherRange, minPerPart: 16);
        }
        finally
        {
            gather.Data = null;
            gather.Rows = default;
        }
        var indices = rowIndices.Span;
        for (int i = 0; i < indices.Length; i++)
        {
            int r = indices[i];
            int label = data.Labels[r];
            if ((uint)label >= (uint)classes) throw new ArgumentException($"row {r} of dataset '{data.Name}' has label {label}, network has {classes} classes");
            ws.Labels[i] = label;
        }
        ws.Rows = rowIndices.Length;
    }

    private static void GatherRange(RowGatherContext g, int start, int end)
    {
        int f = g.Data!.FeatureCount;
        g.Data.GatherRows(g.Rows.Span[start..end], g.X.AsSpan(start * f, (end - start) * f), g.Offset);
    }

    /// <summary>
    /// [rows × width] what hidden layer <paramref name="l"/> of the last step or evaluation chunk hands the next dense
    /// layer (its activation output, or its BN output when BN follows the activation): that layer's inputs.
    /// </summary>
    public static ReadOnlySpan<float> HiddenLayerOutput(Parameters p, Workspace ws, int l)
    {
        if ((uint)l >= (uint)p.HiddenLayers) throw new ArgumentOutOfRangeException(nameof(l), $"hidden layer {l} of {p.HiddenLayers}");
        return LayerOutput(ws, l, ws.Rows * p.Dense[l].Outputs);
    }

    private static ReadOnlySpan<float> LayerInput(Workspace ws, int l, int rows, int width) =>
        l == 0 ? ws.X.AsSpan(0, rows * width) : LayerOutput(ws, l - 1, rows * width);

    /// <summary>
    /// Whether the input of dense layer <paramref name="l"/> (the output layer at l = HiddenLayers) has zeros the forward
    /// product should skip: the data, and ReLU outputs when no BN follows the activation. On the Fashion-MNIST bench, in
    /// the gather's row order, a ReLU output has ~22% of its 4-row half-steps zero (~10% of 8-row steps); measured side by
    /// side, the second layer's forward product took 360 → 321 µs.
    /// </summary>
    private static bool SparseInput(Parameters p, int l) =>
        l == 0 || (p.Spec.Activation == Activation.Relu && p.Spec.BatchNorm != BatchNormPlacement.After);

    // The offset the gather took off the input, for the first layer of a training step.
    private static ReadOnlySpan<float> InputOffset(Workspace ws, int l) => l == 0 ? ws.InputOffset : default;

    // The layer's output is the BN output when BN sits after the activation, else the activation output.
    private static float[] LayerOutputArray(Workspace ws, int l) => ws.AfterPlacement ? ws.BnOut[l]! : ws.Act[l];

    private static Span<float> LayerOutput(Workspace ws, int l, int length) => LayerOutputArray(ws, l).AsSpan(0, length);

    /// <summary>Dense (and the activation when it precedes BN or there is no BN), then this shard's BN moments.</summary>
    private static void ForwardToStats(Parameters p, Workspace ws, int l)
    {
        int rows = ws.Rows;
        var dense = p.Dense[l];
        int c = dense.Outputs;
        var z = ws.Z[l].AsSpan(0, rows * c);
        long t0 = Stopwatch.GetTimestamp();
        dense.Forward(ws.MatMul, LayerInput(ws, l, rows, dense.Inputs), p.W[l], p.B[l], z, rows, InputOffset(ws, l), ws.OffsetTerms, SparseInput(p, l));
        ws.DenseTicks += Stopwatch.GetTimestamp() - t0;
        switch (p.Spec.BatchNorm)
        {
            case BatchNormPlacement.Before:
                p.BatchNorm[l]!.LocalStats(z, rows, ws.LocalStats[l]!, ws.MatMul);
                break;
            case BatchNormPlacement.After:
                ActivationLayer.Forward(p.Spec.Activation, z, ws.Act[l].AsSpan(0, rows * c), ws.MatMul);
                p.BatchNorm[l]!.LocalStats(ws.Act[l], rows, ws.LocalStats[l]!, ws.MatMul);
                break;
            default:
                ActivationLayer.Forward(p.Spec.Activation, z, ws.Act[l].AsSpan(0, rows * c), ws.MatMul);
                break;
        }
    }

    /// <summary>Normalize with the global moments (and the activation when BN precedes it).</summary>
    private static void ForwardFromStats(Parameters p, Workspace ws, int l, BatchNormLayer bn)
    {
        int rows = ws.Rows, c = bn.Features;
        bn.PrepareNormalize(ws.GlobalStats[l]!, ws.BnMeanD[l], ws.BnInvStdD[l], ws.BnMean[l], ws.BnInvStd[l]);
        var bnIn = BnInput(p, ws, l);
        if (p.Spec.BatchNorm == BatchNormPlacement.Before)
            bn.NormalizeActivate(p.Spec.Activation, bnIn.AsSpan(0, rows * c), ws.BnMean[l], ws.BnInvStd[l], p.Gamma[l], p.Beta[l],
                ws.Act[l].AsSpan(0, rows * c), rows, ws.MatMul);
        else
            bn.Normalize(bnIn.AsSpan(0, rows * c), ws.BnMean[l], ws.BnInvStd[l], p.Gamma[l], p.Beta[l],
                ws.BnOut[l].AsSpan(0, rows * c), rows, ws.MatMul);
    }

    // BN normalizes the dense output when it precedes the activation, the activation output when it follows it.
    private static float[] BnInput(Parameters p, Workspace ws, int l) => p.Spec.BatchNorm == BatchNormPlacement.Before ? ws.Z[l] : ws.Act[l];

    /// <summary>Output dense, softmax CE forward (local Σloss) and backward (dz = (ŷ − y)/N), the output dense layer's
    /// input gradient; its weight gradients are left pending (<see cref="PendingWeightGradients"/>).</summary>
    private static LossPartial OutputForwardBackward(Parameters p, Workspace ws, int globalBatchSize)
    {
        int rows = ws.Rows, k = p.Spec.Classes;
        var output = p.OutputLayer;
        int last = p.HiddenLayers - 1;
        var input = LayerInput(ws, p.HiddenLayers, rows, output.Inputs);
        var logits = ws.Logits.AsSpan(0, rows * k);
        long t0 = Stopwatch.GetTimestamp();
        output.Forward(ws.MatMul, input, p.WOut, p.BOut, logits, rows, sparseInput: SparseInput(p, p.HiddenLayers));
        ws.DenseTicks += Stopwatch.GetTimestamp() - t0;
        var labels = ws.Labels.AsSpan(0, rows);
        var (sumLoss, correct) = SoftmaxCrossEntropy.Forward(logits, labels, ws.Probs, rows, k);
        SoftmaxCrossEntropy.Backward(ws.Probs, labels, ws.DLogits, rows, k, globalBatchSize);
        if (last >= 0)
        {
            t0 = Stopwatch.GetTimestamp();
            output.BackwardInput(ws.MatMul, ws.DLogits.AsSpan(0, rows * k), p.WOut, ws.DOutput[last].AsSpan(0, rows * output.Inputs), rows);
            ws.DenseTicks += Stopwatch.GetTimestamp() - t0;
        }
        ws.PendingWeightLayer = p.HiddenLayers;
        ws.PendingParameters = p;
        return new LossPartial(sumLoss, correct, rows);
    }

    /// <summary>
    /// The weight gradients (dW, db) of the dense layer the backward left pending (<see cref="Workspace.PendingWeightLayer"/>;
    /// the hidden layer count for the output layer), if any; the first layer's with its input offset.
    /// </summary>
    internal static void PendingWeightGradients(Workspace ws)
    {
        int l = ws.PendingWeightLayer;
        if (l < 0 || ws.PendingParameters is not { } p) return;
        ws.PendingWeightLayer = -1;
        ws.PendingParameters = null;
        int rows = ws.Rows;
        var grads = ws.Gradients;
        long t0 = Stopwatch.GetTimestamp();
        if (l == p.HiddenLayers)
        {
            var output = p.OutputLayer;
            output.BackwardWeights(ws.MatMul, ws.DLogits.AsSpan(0, rows * p.Spec.Classes), LayerInput(ws, l, rows, output.Inputs),
                grads.DWOut, grads.DBOut, rows, inputIsData: l == 0);
        }
        else
        {
            var dense = p.Dense[l];
            dense.BackwardWeights(ws.MatMul, ws.DZ[l].AsSpan(0, rows * dense.Outputs), LayerInput(ws, l, rows, dense.Inputs),
                grads.DW[l], grads.DB[l], rows, inputIsData: l == 0, InputOffset(ws, l), ws.OffsetTerms);
        }
        ws.DenseTicks += Stopwatch.GetTimestamp() - t0;
    }

    /// <summary>Down to the BN output's gradient (through the activation when BN precedes it), then this shard's Σdy, Σdy·z_norm.</summary>
    private static void BackwardToSums(Parameters p, Workspace ws, int l, BatchNormLayer bn)
    {
        int rows = ws.Rows, n = rows * bn.Features;
        if (p.Spec.BatchNorm == BatchNormPlacement.Before)
            bn.ActivationBackwardGradSums(p.Spec.Activation, ws.Act[l].AsSpan(0, n), ws.DOutput[l].AsSpan(0, n), ws.Z[l].AsSpan(0, n),
                ws.BnMeanD[l], ws.BnInvStdD[l], ws.DTemp[l].AsSpan(0, n), rows, ws.LocalGradSums[l]!, ws.MatMul);
        else
            bn.LocalGradSums(ws.DOutput[l].AsSpan(0, n), ws.Act[l].AsSpan(0, n), ws.BnMeanD[l], ws.BnInvStdD[l], rows, ws.LocalGradSums[l]!, ws.MatMul);
    }

    /// <summary>BN input gradient from the global sums, dγ, dβ, the activation (BN after / none), then the dense layer's
    /// input gradient; its weight gradients are left pending (<see cref="PendingWeightGradients"/>).</summary>
    private static void BackwardFromSums(Parameters p, Workspace ws, int l)
    {
        int rows = ws.Rows;
        var dense = p.Dense[l];
        int c = dense.Outputs, n = rows * c;
        var dz = ws.DZ[l].AsSpan(0, n);
        var grads = ws.Gradients;
        if (p.BatchNorm[l] is { } bn)
        {
            var global = ws.GlobalGradSums[l]!;
            long globalCount = ws.GlobalStats[l]!.Count;
            if (ws.ContributesBatchNormGradients) BatchNormLayer.ParameterGradients(global, grads.DGamma[l], grads.DBeta[l]);
            else
            {
                Array.Clear(grads.DGamma[l]!);
                Array.Clear(grads.DBeta[l]!);
            }
            if (p.Spec.BatchNorm == BatchNormPlacement.Before)
            {
                bn.InputGradient(ws.DTemp[l].AsSpan(0, n), ws.Z[l].AsSpan(0, n), ws.BnMeanD[l], ws.BnInvStdD[l], global, globalCount, p.Gamma[l], dz, rows, ws.ScratchD, ws.MatMul);
            }
            else
            {
                bn.InputGradientThroughActivation(p.Spec.Activation, ws.DOutput[l].AsSpan(0, n), ws.Act[l].AsSpan(0, n), ws.BnMeanD[l], ws.BnInvStdD[l],
                    global, globalCount, p.Gamma[l], dz, rows, ws.ScratchD, ws.MatMul);
            }
        }
        else
        {
            ActivationLayer.Backward(p.Spec.Activation, ws.Act[l].AsSpan(0, n), ws.DOutput[l].AsSpan(0, n), dz, ws.MatMul);
        }
        if (l > 0)
        {
            long t0 = Stopwatch.GetTimestamp();
            dense.BackwardInput(ws.MatMul, dz, p.W[l], ws.DOutput[l - 1].AsSpan(0, rows * dense.Inputs), rows);
            ws.DenseTicks += Stopwatch.GetTimestamp() - t0;
        }
        ws.PendingWeightLayer = l;
        ws.PendingParameters = p;
    }

    /// <summary>
    /// Eval-mode forward (running statistics) of rows [start, start+count) of <paramref name="data"/>, in chunks of
    /// the workspace's rows. Returns Σ −log ŷ and correct; writes argmax classes into <paramref name="predicted"/> when non-empty.
    /// </summary>
    public static LossPartial Evaluate(Parameters p, Workspace ws, Dataset data, int start, int count, Span<int> predicted = default)
    {
        if (start < 0 || count < 0 || start + count > data.Count) throw new ArgumentOutOfRangeException(nameof(count), $"rows [{start}, {start + count}) outside dataset '{data.Name}' of {data.Count} rows");
        if (data.FeatureCount != p.Spec.Inputs) throw new ArgumentException($"dataset '{data.Name}' has {data.FeatureCount} features, network expects {p.Spec.Inputs}");
        if (!predicted.IsEmpty && predicted.Length < count) throw new ArgumentException($"predicted holds {predicted.Length} of {count} rows");
        int k = p.Spec.Classes;
        var total = new LossPartial(0, 0, 0);
        for (int chunk = 0; chunk < count; chunk += ws.MaxRows)
        {
            int rows = Math.Min(ws.MaxRows, count - chunk);
            data.CopyRows(start + chunk, rows, ws.X);
            ws.InputOffset = null;
            for (int i = 0; i < rows; i++)
            {
                int label = data.Labels[start + chunk + i];
                if ((uint)label >= (uint)k) throw new ArgumentException($"row {start + chunk + i} of dataset '{data.Name}' has label {label}, network has {k} classes");
                ws.Labels[i] = label;
            }
            ws.Rows = rows;
            EvalForward(p, ws);
            var (sumLoss, correct) = SoftmaxCrossEntropy.Forward(ws.Logits, ws.Labels.AsSpan(0, rows), ws.Probs, rows, k);
            if (!predicted.IsEmpty) SoftmaxCrossEntropy.Predict(ws.Logits, predicted.Slice(chunk, rows), rows, k);
            total = total.Add(new LossPartial(sumLoss, correct, rows));
        }
        return total;
    }

    /// <summary>Eval-mode forward of the <see cref="Workspace.Rows"/> rows already in <see cref="Workspace.X"/>; logits land in <see cref="Workspace.Logits"/>.</summary>
    public static void EvalForward(Parameters p, Workspace ws)
    {
        int rows = ws.Rows;
        for (int l = 0; l < p.HiddenLayers; l++)
        {
            var dense = p.Dense[l];
            int n = rows * dense.Outputs;
            var z = ws.Z[l].AsSpan(0, n);
            var act = ws.Act[l].AsSpan(0, n);
            dense.Forward(ws.MatMul, LayerInput(ws, l, rows, dense.Inputs), p.W[l], p.B[l], z, rows, sparseInput: SparseInput(p, l));
            var bn = p.BatchNorm[l];
            switch (p.Spec.BatchNorm)
            {
                case BatchNormPlacement.Before:
                    bn!.EvalForward(z, p.Gamma[l], p.Beta[l], p.RunningMean[l], p.RunningVar[l], ws.BnOut[l].AsSpan(0, n), rows, ws.Scratch);
                    ActivationLayer.Forward(p.Spec.Activation, ws.BnOut[l].AsSpan(0, n), act);
                    break;
                case BatchNormPlacement.After:
                    ActivationLayer.Forward(p.Spec.Activation, z, act);
                    bn!.EvalForward(act, p.Gamma[l], p.Beta[l], p.RunningMean[l], p.RunningVar[l], ws.BnOut[l].AsSpan(0, n), rows, ws.Scratch);
                    break;
                default:
                    ActivationLayer.Forward(p.Spec.Activation, z, act);
                    break;
            }
        }
        var output = p.OutputLayer;
        output.Forward(ws.MatMul, LayerInput(ws, p.HiddenLayers, rows, output.Inputs), p.WOut, p.BOut, ws.Logits.AsSpan(0, rows * p.Spec.Classes), rows,
            sparseInput: SparseInput(p, p.HiddenLayers));
    }
}

/// <summary>The arguments of the row gather while it runs on the MatMul's threads; one per workspace, reused.</summary>
internal sealed class RowGatherContext
{
    public Dataset? Data;
    public ReadOnlyMemory<int> Rows;
    public float[] X = [];
    public float[]? Offset;
}
