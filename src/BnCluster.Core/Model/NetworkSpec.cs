namespace BnCluster.Core.Model;

public enum Activation { Relu, Tanh, Sigmoid }

/// <summary>Where batch norm sits in a hidden layer: before the activation (default), after it, or not at all (plain MLP with biases).</summary>
public enum BatchNormPlacement { Before, After, None }

/// <summary>The shape of an MLP: inputs → hidden… → classes.</summary>
public sealed record NetworkSpec(
    int Inputs,
    IReadOnlyList<int> Hidden,
    int Classes,
    Activation Activation = Activation.Relu,
    BatchNormPlacement BatchNorm = BatchNormPlacement.Before,
    float BnEpsilon = 1e-5f,
    float BnMomentum = 0.1f);
