using BnCluster.Core.Layers;
using BnCluster.Core.Model;

namespace BnCluster.Core.Training;

/// <summary>A named float32 tensor of the model (a parameter or its gradient).</summary>
public readonly record struct NamedTensor(string Name, float[] Values);

/// <summary>
/// Every tensor of an MLP built from a <see cref="NetworkSpec"/> (docs/design.md, "The math"):
/// hidden layer l has W[l] [out×in]; a bias B[l] when BN sits after the activation or is absent;
/// γ, β, r_μ, r_σ² when BN is present; then the output layer W_out [classes×last], b_out.
/// Trainable tensors (<see cref="Trainable"/>) are, per hidden layer, W, b?, γ, β, then W_out, b_out;
/// <see cref="Gradients"/> has the same order and shapes.
/// </summary>
public sealed class Parameters
{
    public Parameters(NetworkSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.Inputs <= 0) throw new ArgumentException($"network inputs must be positive, got {spec.Inputs}");
        if (spec.Classes < 2) throw new ArgumentException($"network needs at least 2 classes, got {spec.Classes}");
        foreach (int h in spec.Hidden)
            if (h <= 0) throw new ArgumentException($"hidden layer sizes must be positive, got {h}");
        Spec = spec;
        int layers = spec.Hidden.Count;
        bool bn = spec.BatchNorm != BatchNormPlacement.None;
        Dense = new DenseLayer[layers];
        BatchNorm = new BatchNormLayer?[layers];
        W = new float[layers][];
        B = new float[]?[layers];
        Gamma = new float[]?[layers];
        Beta = new float[]?[layers];
        RunningMean = new float[]?[layers];
        RunningVar = new float[]?[layers];
        var trainable = new List<NamedTensor>();
        int inputs = spec.Inputs;
        for (int l = 0; l < layers; l++)
        {
            int outputs = spec.Hidden[l];
            bool hasBias = spec.BatchNorm != BatchNormPlacement.Before;
            Dense[l] = new DenseLayer(inputs, outputs, hasBias);
            W[l] = new float[outputs * inputs];
            trainable.Add(new($"layer{l}.weight", W[l]));
            if (hasBias)
            {
                B[l] = new float[outputs];
                trainable.Add(new($"layer{l}.bias", B[l]!));
            }
            if (bn)
            {
                BatchNorm[l] = new BatchNormLayer(outputs, spec.BnEpsilon, spec.BnMomentum);
                Gamma[l] = new float[outputs];
                Beta[l] = new float[outputs];
                RunningMean[l] = new float[outputs];
                RunningVar[l] = new float[outputs];
                Array.Fill(Gamma[l]!, 1f);
                Array.Fill(RunningVar[l]!, 1f);
                trainable.Add(new($"layer{l}.gamma", Gamma[l]!));
                trainable.Add(new($"layer{l}.beta", Beta[l]!));
            }
            inputs = outputs;
        }
        OutputLayer = new DenseLayer(inputs, spec.Classes, hasBias: true);
        WOut = new float[spec.Classes * inputs];
        BOut = new float[spec.Classes];
        trainable.Add(new("output.weight", WOut));
        trainable.Add(new("output.bias", BOut));
        Trainable = trainable;
        var all = new List<NamedTensor>(trainable);
        for (int l = 0; l < layers; l++)
            if (bn)
            {
                all.Add(new($"layer{l}.running_mean", RunningMean[l]!));
                all.Add(new($"layer{l}.running_var", RunningVar[l]!));
            }
        AllTensors = all;
    }

    public NetworkSpec Spec { get; }
    public int HiddenLayers => Dense.Length;
    public DenseLayer[] Dense { get; }
    public BatchNormLayer?[] BatchNorm { get; }
    public DenseLayer OutputLayer { get; }
    public float[][] W { get; }
    public float[]?[] B { get; }
    public float[]?[] Gamma { get; }
    public float[]?[] Beta { get; }
    public float[]?[] RunningMean { get; }
    public float[]?[] RunningVar { get; }
    public float[] WOut { get; }
    public float[] BOut { get; }

    /// <summary>Trainable tensors in the canonical order (the optimizer and the cluster walk this).</summary>
    public IReadOnlyList<NamedTensor> Trainable { get; }

    /// <summary>What a worker needs of the model: <see cref="Trainable"/>, then r_μ and r_σ² of each BN layer (the order of a parameter snapshot).</summary>
    public IReadOnlyList<NamedTensor> AllTensors { get; }

    /// <summary>
    /// Seeded init: hidden W He normal std sqrt(2/in) for ReLU, Xavier (Glorot) normal std sqrt(2/(in+out))
    /// for tanh/sigmoid; output W Xavier; biases 0, γ 1, β 0, r_μ 0, r_σ² 1 (set by the constructor).
    /// </summary>
    public static Parameters Initialize(NetworkSpec spec, ulong seed)
    {
        var p = new Parameters(spec);
        var rng = new Rng(seed);
        for (int l = 0; l < p.HiddenLayers; l++)
        {
            var d = p.Dense[l];
            double std = spec.Activation == Activation.Relu
                ? Math.Sqrt(2.0 / d.Inputs)
                : Math.Sqrt(2.0 / (d.Inputs + d.Outputs));
            Fill(p.W[l], rng, std);
        }
        Fill(p.WOut, rng, Math.Sqrt(2.0 / (p.OutputLayer.Inputs + p.OutputLayer.Outputs)));
        return p;
    }

    private static void Fill(float[] w, Rng rng, double std)
    {
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextGaussian() * std);
    }

    /// <summary>Copies every tensor (trainable and running statistics) from a network of the same spec.</summary>
    public void CopyFrom(Parameters other)
    {
        if (other.Spec != Spec && !SameShape(other)) throw new ArgumentException("parameters of another network shape");
        for (int i = 0; i < Trainable.Count; i++) other.Trainable[i].Values.CopyTo(Trainable[i].Values, 0);
        for (int l = 0; l < HiddenLayers; l++)
        {
            other.RunningMean[l]?.CopyTo(RunningMean[l]!, 0);
            other.RunningVar[l]?.CopyTo(RunningVar[l]!, 0);
        }
    }

    public Parameters Clone()
    {
        var p = new Parameters(Spec);
        p.CopyFrom(this);
        return p;
    }

    private bool SameShape(Parameters other)
    {
        if (other.Trainable.Count != Trainable.Count) return false;
        for (int i = 0; i < Trainable.Count; i++)
            if (other.Trainable[i].Values.Length != Trainable[i].Values.Length) return false;
        return true;
    }
}
