namespace BnCluster.Core.Model;

/// <summary>
/// The content of <c>model.bnc</c> (docs/design.md, "Contracts") as plain data: what the model file
/// reader returns and the writer takes. Arrays are float32; weight is [out][in] row-major.
/// </summary>
public sealed record ModelDocument(
    InputNormalization Input,
    IReadOnlyList<string> Classes,
    IReadOnlyList<ModelLayer> Layers,
    IReadOnlyDictionary<string, object?> Training)
{
    /// <summary>How the dataset loader turned the file's raw values into the model's inputs; null = none (raw values are inputs).</summary>
    public InputPreprocessing? Preprocessing { get; init; }
}

/// <summary>
/// The scaling the dataset loader applied to the raw values of its file before training: input = raw / Divisor
/// (IDX pixels 255, optical digits 16; CSV files have none). `predict` applies it to raw rows; exporters put it in
/// front of the network.
/// </summary>
public sealed record InputPreprocessing(float Divisor)
{
    /// <summary>values[i] = values[i] / Divisor in float32: the loader's own division, so the bits match training's.</summary>
    public void Apply(Span<float> values)
    {
        for (int i = 0; i < values.Length; i++) values[i] /= Divisor;
    }
}

/// <summary>Per-feature statistics of the training set applied to every input: (x − mean)/sqrt(var + eps).</summary>
public sealed record InputNormalization(int Features, float[] Mean, float[] Var, float Eps);

public abstract record ModelLayer;

public sealed record DenseLayerRecord(int In, int Out, float[] Weight, float[]? Bias) : ModelLayer;

public sealed record BatchNormLayerRecord(
    int Features, float[] Gamma, float[] Beta, float[] RunningMean, float[] RunningVar, float Eps, float Momentum) : ModelLayer;

/// <summary>Type is "relu", "tanh" or "sigmoid".</summary>
public sealed record ActivationLayerRecord(string Type) : ModelLayer;
