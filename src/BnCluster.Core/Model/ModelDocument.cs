namespace BnCluster.Core.Model;

/// <summary>
/// The content of <c>model.bnc</c> (docs/design.md, "Contracts") as plain data: what the model file
/// reader returns and the writer takes. Arrays are float32; weight is [out][in] row-major.
/// </summary>
public sealed record ModelDocument(
    InputNormalization Input,
    IReadOnlyList<string> Classes,
    IReadOnlyList<ModelLayer> Layers,
    IReadOnlyDictionary<string, object?> Training);

/// <summary>Per-feature statistics of the training set applied to every input: (x − mean)/sqrt(var + eps).</summary>
public sealed record InputNormalization(int Features, float[] Mean, float[] Var, float Eps);

public abstract record ModelLayer;

public sealed record DenseLayerRecord(int In, int Out, float[] Weight, float[]? Bias) : ModelLayer;

public sealed record BatchNormLayerRecord(
    int Features, float[] Gamma, float[] Beta, float[] RunningMean, float[] RunningVar, float Eps, float Momentum) : ModelLayer;

/// <summary>Type is "relu", "tanh" or "sigmoid".</summary>
public sealed record ActivationLayerRecord(string Type) : ModelLayer;
