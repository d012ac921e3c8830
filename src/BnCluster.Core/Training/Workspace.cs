using BnCluster.Core.Kernels;
using BnCluster.Core.Model;

namespace BnCluster.Core.Training;

/// <summary>
/// Every activation, cache and gradient buffer of one worker's step for up to <see cref="MaxRows"/> rows,
/// allocated once. All matrices are [rows × width] row-major; only the first <see cref="Rows"/> rows are valid.
/// After <see cref="TrainingStep.ForwardBackwardAsync"/> it holds this worker's gradients and each BN
/// layer's global moments of the step (for the running-average update).
/// </summary>
public sealed class Workspace
{
    public Workspace(Parameters shape, int maxRows, MatMul matMul)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(matMul);
        if (maxRows <= 0) throw new ArgumentOutOfRangeException(nameof(maxRows), "workspace needs at least one row");
        var spec = shape.Spec;
        MaxRows = maxRows;
        MatMul = matMul;
        AfterPlacement = spec.BatchNorm == BatchNormPlacement.After;
        int layers = shape.HiddenLayers;
        X = new float[maxRows * spec.Inputs];
        Labels = new int[maxRows];
        GatherOrder = new int[maxRows];
        GatherRanks = new int[maxRows];
        Predicted = new int[maxRows];
        Z = new float[layers][];
        Act = new float[layers][];
        BnOut = new float[]?[layers];
        BnMean = new float[]?[layers];
        BnInvStd = new float[]?[layers];
        BnMeanD = new double[]?[layers];
        BnInvStdD = new double[]?[layers];
        LocalStats = new BatchNormStats?[layers];
        GlobalStats = new BatchNormStats?[layers];
        LocalGradSums = new BatchNormGradSums?[layers];
        GlobalGradSums = new BatchNormGradSums?[layers];
        DOutput = new float[layers][];
        DTemp = new float[layers][];
        DZ = new float[layers][];
        int widest = spec.Classes;
        for (int l = 0; l < layers; l++)
        {
            int c = spec.Hidden[l];
            widest = Math.Max(widest, c);
            Z[l] = new float[maxRows * c];
            Act[l] = new float[maxRows * c];
            DOutput[l] = new float[maxRows * c];
            DTemp[l] = new float[maxRows * c];
            DZ[l] = new float[maxRows * c];
            if (spec.BatchNorm != BatchNormPlacement.None)
            {
                BnOut[l] = new float[maxRows * c];
                BnMean[l] = new float[c];
                BnInvStd[l] = new float[c];
                BnMeanD[l] = new double[c];
                BnInvStdD[l] = new double[c];
                LocalStats[l] = new BatchNormStats(c);
                GlobalStats[l] = new BatchNormStats(c);
                LocalGradSums[l] = new BatchNormGradSums(c);
                GlobalGradSums[l] = new BatchNormGradSums(c);
            }
        }
        Logits = new float[maxRows * spec.Classes];
        Probs = new float[maxRows * spec.Classes];
        DLogits = new float[maxRows * spec.Classes];
        OffsetTerms = new float[layers > 0 ? spec.Hidden[0] : 0];
        Scratch = new float[3 * widest];
        ScratchD = new double[3 * widest];
        Gradients = new Gradients(shape);
        ComputePendingWeightGradients = () => TrainingStep.PendingWeightGradients(this); // once: the step passes it on
    }

    /// <summary>Copies <paramref name="rows"/> input rows (already normalized) into <see cref="X"/> for <see cref="TrainingStep.EvalForward"/>.</summary>
    public void LoadRows(ReadOnlySpan<float> features, int rows)
    {
        if ((uint)rows > (uint)MaxRows) throw new ArgumentOutOfRangeException(nameof(rows), $"{rows} rows exceed the workspace's {MaxRows}");
        int f = X.Length / MaxRows;
        if (features.Length != rows * f) throw new ArgumentException($"{features.Length} values are not {rows} rows of {f} features");
        features.CopyTo(X);
        InputOffset = null;
        Rows = rows;
    }

    public int MaxRows { get; }
    public MatMul MatMul { get; }
    internal RowGatherContext RowGather { get; } = new();
    internal bool AfterPlacement { get; }

    /// <summary>Rows of the last step or evaluation chunk.</summary>
    public int Rows { get; internal set; }

    /// <summary>
    /// dγ and dβ come from the GLOBAL sums, so they are identical on every worker. Only a worker with this
    /// set (the default, and rank 0 on a cluster) writes them into <see cref="Gradients"/>; the others
    /// write zeros, so that summing the workers' gradients in rank order counts them exactly once.
    /// </summary>
    public bool ContributesBatchNormGradients { get; set; } = true;

    public float[] X { get; }            // [rows × inputs] gathered input rows (minus InputOffset when it is set)

    /// <summary>
    /// [inputs] the values of a stored 0 that a training step's gather subtracts from every row of <see cref="X"/>
    /// (<see cref="Data.Dataset.ZeroOffsets"/>), so the data's zeros stay zeros the first layer's GEMMs skip; that
    /// layer adds the offset's terms back. Null when X holds the rows as they are (evaluation, dense data).
    /// </summary>
    public float[]? InputOffset { get; internal set; }

    public float[] OffsetTerms { get; }  // [out_0] b + W·c (forward) and Σ_rows dZ (backward) of the input offset
    public int[] Labels { get; }         // [rows]

    /// <summary>
    /// Whether a training step gathers its rows ordered by <see cref="Data.Dataset.ZeroPatternRanks"/> when the dataset
    /// has them (the default): more zero depth steps for the first layer's GEMMs, other rounding of the batch's sums.
    /// Off: in the order given (the step benchmark measures both).
    /// </summary>
    public bool OrderRowsByZeroPattern { get; set; } = true;

    internal int[] GatherOrder { get; }  // [rows] the step's dataset rows in the order gathered
    internal int[] GatherRanks { get; }  // [rows] their zero-pattern ranks, the sort keys
    public int[] Predicted { get; }      // [rows] argmax of the logits (evaluation)
    public float[][] Z { get; }          // [rows × out_l] dense output
    public float[][] Act { get; }        // [rows × out_l] activation output
    public float[]?[] BnOut { get; }     // [rows × out_l] γ z_norm + β (BN after; BN before writes it only in eval, training fuses it into Act)
    public float[]?[] BnMean { get; }    // [out_l] global μ as float
    public float[]?[] BnInvStd { get; }  // [out_l] 1/sqrt(σ²+ε)
    public double[]?[] BnMeanD { get; }  // [out_l] global μ
    public double[]?[] BnInvStdD { get; } // [out_l] 1/sqrt(σ²+ε) in float64 for the backward
    public BatchNormStats?[] LocalStats { get; }
    /// <summary>Global (n, mean, M2) of each BN layer in the last step: feed to the running-average update.</summary>
    public BatchNormStats?[] GlobalStats { get; }
    public BatchNormGradSums?[] LocalGradSums { get; }
    public BatchNormGradSums?[] GlobalGradSums { get; }
    public float[][] DOutput { get; }    // [rows × out_l] ∂L/∂(layer output)
    public float[][] DTemp { get; }      // [rows × out_l] ∂L/∂(BN output) when BN precedes the activation
    public float[][] DZ { get; }         // [rows × out_l] ∂L/∂z (dense output)
    public float[] Logits { get; }       // [rows × classes]
    public float[] Probs { get; }        // [rows × classes]
    public float[] DLogits { get; }      // [rows × classes]
    public float[] Scratch { get; }
    public double[] ScratchD { get; }

    /// <summary>The dense layer whose weight gradients the backward has yet to compute (the hidden layer count for the
    /// output layer; −1 for none), and the parameters it belongs to.</summary>
    internal int PendingWeightLayer { get; set; } = -1;
    internal Parameters? PendingParameters { get; set; }

    /// <summary><see cref="TrainingStep.PendingWeightGradients"/> of this workspace, made once (the step hands it to the
    /// collective to run while a reduction is in flight).</summary>
    internal Action ComputePendingWeightGradients { get; }

    /// <summary>This worker's gradients of the last step.</summary>
    public Gradients Gradients { get; }

    /// <summary>
    /// Stopwatch ticks spent in the dense layers (GEMM plus bias add / bias gradient) of training steps, summed
    /// since the caller last reset it: lets the step benchmark split a step into GEMM and the rest in place.
    /// </summary>
    public long DenseTicks { get; set; }
}
