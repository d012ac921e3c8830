using BnCluster.Core.Layers;
using BnCluster.Core.Training;

namespace BnCluster.Core.Model;

/// <summary>
/// <see cref="Parameters"/> ⇄ <see cref="ModelDocument"/> (docs/design.md, "Contracts"). Layer records in order, per hidden layer:
/// BN before: dense(no bias), batchnorm, activation; BN after: dense(bias), activation, batchnorm;
/// none: dense(bias), activation; then the output dense(bias). Arrays are copied both ways.
/// </summary>
public static class ModelConversion
{
    public static ModelDocument ToDocument(Parameters p, InputNormalizer input, IReadOnlyList<string> classes,
        IReadOnlyDictionary<string, object?>? training = null, InputPreprocessing? preprocessing = null)
    {
        var spec = p.Spec;
        if (input.Features != spec.Inputs) throw new ArgumentException($"input normalization has {input.Features} features, network {spec.Inputs}");
        if (classes.Count != spec.Classes) throw new ArgumentException($"{classes.Count} class names for a network of {spec.Classes} classes");
        var layers = new List<ModelLayer>();
        var activation = new ActivationLayerRecord(ActivationLayer.Name(spec.Activation));
        for (int l = 0; l < p.HiddenLayers; l++)
        {
            var d = p.Dense[l];
            layers.Add(new DenseLayerRecord(d.Inputs, d.Outputs, (float[])p.W[l].Clone(), (float[]?)p.B[l]?.Clone()));
            BatchNormLayerRecord? bn = p.BatchNorm[l] is { } b
                ? new BatchNormLayerRecord(b.Features, (float[])p.Gamma[l]!.Clone(), (float[])p.Beta[l]!.Clone(),
                    (float[])p.RunningMean[l]!.Clone(), (float[])p.RunningVar[l]!.Clone(), b.Epsilon, b.Momentum)
                : null;
            switch (spec.BatchNorm)
            {
                case BatchNormPlacement.Before: layers.Add(bn!); layers.Add(activation); break;
                case BatchNormPlacement.After: layers.Add(activation); layers.Add(bn!); break;
                default: layers.Add(activation); break;
            }
        }
        layers.Add(new DenseLayerRecord(p.OutputLayer.Inputs, p.OutputLayer.Outputs, (float[])p.WOut.Clone(), (float[])p.BOut.Clone()));
        return new ModelDocument(input.ToRecord(), classes.ToArray(), layers, training ?? new Dictionary<string, object?>())
        {
            Preprocessing = preprocessing,
        };
    }

    /// <summary>Rebuilds the network from a document; any layer list that is not one of the three orders above is refused.</summary>
    public static Parameters ToParameters(ModelDocument doc)
    {
        var layers = doc.Layers;
        if (layers.Count == 0 || layers[^1] is not DenseLayerRecord output)
            throw new FormatException("model layers must end with the output dense layer");
        int inputs = doc.Input.Features;
        var hidden = new List<int>();
        Activation? activation = null;
        BatchNormPlacement? placement = null;
        float eps = 1e-5f, momentum = 0.1f;
        var groups = new List<(DenseLayerRecord Dense, BatchNormLayerRecord? Bn)>();
        int i = 0, width = inputs;
        while (i < layers.Count - 1)
        {
            if (layers[i] is not DenseLayerRecord dense) throw new FormatException($"model layer {i}: expected a dense layer, found {Describe(layers[i])}");
            CheckDense(dense, width, i);
            BatchNormLayerRecord? bn = null;
            BatchNormPlacement here;
            Activation act;
            if (i + 2 < layers.Count && layers[i + 1] is BatchNormLayerRecord b1 && layers[i + 2] is ActivationLayerRecord a1)
            {
                (bn, act, here) = (b1, ParseActivation(a1, i + 2), BatchNormPlacement.Before);
                i += 3;
            }
            else if (i + 2 < layers.Count && layers[i + 1] is ActivationLayerRecord a2 && layers[i + 2] is BatchNormLayerRecord b2)
            {
                (bn, act, here) = (b2, ParseActivation(a2, i + 1), BatchNormPlacement.After);
                i += 3;
            }
            else if (i + 1 < layers.Count && layers[i + 1] is ActivationLayerRecord a3)
            {
                (act, here) = (ParseActivation(a3, i + 1), BatchNormPlacement.None);
                i += 2;
            }
            else throw new FormatException($"model layer {i + 1}: expected batchnorm or activation after a hidden dense layer, found {Describe(layers[i + 1])}");
            if (placement is { } pl && pl != here) throw new FormatException($"model layer {i - 1}: batch norm placement {here} differs from earlier layers ({pl})");
            if (activation is { } ac && ac != act) throw new FormatException($"model layer {i - 1}: activation {act} differs from earlier layers ({ac})");
            placement = here;
            activation = act;
            bool wantBias = here != BatchNormPlacement.Before;
            if ((dense.Bias is not null) != wantBias) throw new FormatException($"model dense layer {hidden.Count}: {(wantBias ? "missing" : "unexpected")} bias for batch norm placement {here}");
            if (bn is not null)
            {
                if (bn.Features != dense.Out || bn.Gamma.Length != dense.Out || bn.Beta.Length != dense.Out || bn.RunningMean.Length != dense.Out || bn.RunningVar.Length != dense.Out)
                    throw new FormatException($"model batchnorm of hidden layer {hidden.Count}: arrays do not match its {dense.Out} features");
                eps = bn.Eps;
                momentum = bn.Momentum;
            }
            groups.Add((dense, bn));
            hidden.Add(dense.Out);
            width = dense.Out;
        }
        CheckDense(output, width, layers.Count - 1);
        if (output.Bias is null) throw new FormatException("model output dense layer has no bias");
        if (doc.Classes.Count != output.Out) throw new FormatException($"model has {doc.Classes.Count} class names but {output.Out} outputs");
        var spec = new NetworkSpec(inputs, hidden, output.Out, activation ?? Activation.Relu, placement ?? BatchNormPlacement.Before, eps, momentum);
        var p = new Parameters(spec);
        for (int l = 0; l < groups.Count; l++)
        {
            var (dense, bn) = groups[l];
            dense.Weight.CopyTo(p.W[l], 0);
            dense.Bias?.CopyTo(p.B[l]!, 0);
            if (bn is not null)
            {
                bn.Gamma.CopyTo(p.Gamma[l]!, 0);
                bn.Beta.CopyTo(p.Beta[l]!, 0);
                bn.RunningMean.CopyTo(p.RunningMean[l]!, 0);
                bn.RunningVar.CopyTo(p.RunningVar[l]!, 0);
            }
        }
        output.Weight.CopyTo(p.WOut, 0);
        output.Bias.CopyTo(p.BOut, 0);
        return p;
    }

    private static void CheckDense(DenseLayerRecord dense, int expectedIn, int index)
    {
        if (dense.In != expectedIn) throw new FormatException($"model layer {index}: dense layer takes {dense.In} inputs, previous layer gives {expectedIn}");
        if (dense.Out <= 0 || dense.Weight.Length != (long)dense.In * dense.Out)
            throw new FormatException($"model layer {index}: dense weight holds {dense.Weight.Length} values, expected {dense.Out}×{dense.In}");
        if (dense.Bias is not null && dense.Bias.Length != dense.Out)
            throw new FormatException($"model layer {index}: dense bias holds {dense.Bias.Length} values, expected {dense.Out}");
    }

    private static Activation ParseActivation(ActivationLayerRecord record, int index)
    {
        try { return ActivationLayer.Parse(record.Type); }
        catch (FormatException e) { throw new FormatException($"model layer {index}: {e.Message}"); }
    }

    private static string Describe(ModelLayer layer) => layer switch
    {
        DenseLayerRecord => "dense",
        BatchNormLayerRecord => "batchnorm",
        ActivationLayerRecord a => a.Type,
        _ => layer.GetType().Name,
    };
}
