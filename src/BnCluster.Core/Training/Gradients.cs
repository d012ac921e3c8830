namespace BnCluster.Core.Training;

/// <summary>
/// Gradients of the trainable tensors of a <see cref="Parameters"/>, same order, names and shapes
/// (<see cref="Parameters.Trainable"/>). Workers ship <see cref="Tensors"/>; the coordinator adds them in rank order.
/// </summary>
public sealed class Gradients
{
    public Gradients(Parameters shape)
    {
        int layers = shape.HiddenLayers;
        DW = new float[layers][];
        DB = new float[]?[layers];
        DGamma = new float[]?[layers];
        DBeta = new float[]?[layers];
        var list = new List<NamedTensor>();
        for (int l = 0; l < layers; l++)
        {
            DW[l] = new float[shape.W[l].Length];
            list.Add(new($"layer{l}.weight", DW[l]));
            if (shape.B[l] is { } b) list.Add(new($"layer{l}.bias", DB[l] = new float[b.Length]));
            if (shape.Gamma[l] is { } g)
            {
                list.Add(new($"layer{l}.gamma", DGamma[l] = new float[g.Length]));
                list.Add(new($"layer{l}.beta", DBeta[l] = new float[g.Length]));
            }
        }
        DWOut = new float[shape.WOut.Length];
        DBOut = new float[shape.BOut.Length];
        list.Add(new("output.weight", DWOut));
        list.Add(new("output.bias", DBOut));
        Tensors = list;
        for (int i = 0; i < list.Count; i++)
            if (list[i].Name != shape.Trainable[i].Name) throw new InvalidOperationException("gradient layout differs from parameter layout");
    }

    public float[][] DW { get; }
    public float[]?[] DB { get; }
    public float[]?[] DGamma { get; }
    public float[]?[] DBeta { get; }
    public float[] DWOut { get; }
    public float[] DBOut { get; }

    public IReadOnlyList<NamedTensor> Tensors { get; }

    /// <summary>The gradient named like the parameter ("layer0.weight", "output.bias", …).</summary>
    public float[] this[string name]
    {
        get
        {
            foreach (var t in Tensors) if (t.Name == name) return t.Values;
            throw new KeyNotFoundException($"no gradient named '{name}'");
        }
    }

    public void Clear()
    {
        foreach (var t in Tensors) Array.Clear(t.Values);
    }

    public void CopyFrom(Gradients other)
    {
        CheckShape(other);
        for (int i = 0; i < Tensors.Count; i++) other.Tensors[i].Values.CopyTo(Tensors[i].Values, 0);
    }

    /// <summary>this += other, tensor by tensor (call in rank order for reproducible sums).</summary>
    public void Add(Gradients other)
    {
        CheckShape(other);
        for (int i = 0; i < Tensors.Count; i++)
            System.Numerics.Tensors.TensorPrimitives.Add(Tensors[i].Values, other.Tensors[i].Values, Tensors[i].Values);
    }

    private void CheckShape(Gradients other)
    {
        if (other.Tensors.Count != Tensors.Count) throw new ArgumentException($"gradients with {other.Tensors.Count} tensors, expected {Tensors.Count}");
        for (int i = 0; i < Tensors.Count; i++)
            if (other.Tensors[i].Values.Length != Tensors[i].Values.Length)
                throw new ArgumentException($"gradient {Tensors[i].Name} has {other.Tensors[i].Values.Length} values, expected {Tensors[i].Values.Length}");
    }
}
