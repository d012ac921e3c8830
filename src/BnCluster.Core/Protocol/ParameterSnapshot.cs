using BnCluster.Core.Training;

namespace BnCluster.Core.Protocol;

/// <summary>
/// Every tensor of a <see cref="Parameters"/> copied into arrays rented from <see cref="TensorPool"/>, for a
/// message: the trainable tensors in their canonical order, then r_μ and r_σ² of each BN layer (the running
/// averages are needed for evaluation). The receiver releases the snapshot after <see cref="Restore"/>.
/// </summary>
public static class ParameterSnapshot
{
    public static float[][] Capture(Parameters p)
    {
        int count = p.Trainable.Count;
        for (int l = 0; l < p.HiddenLayers; l++) count += (p.RunningMean[l] is null ? 0 : 1) + (p.RunningVar[l] is null ? 0 : 1);
        var snapshot = new float[count][];
        int i = 0;
        foreach (var t in p.Trainable) snapshot[i++] = Copy(t.Values);
        for (int l = 0; l < p.HiddenLayers; l++)
        {
            if (p.RunningMean[l] is { } m) snapshot[i++] = Copy(m);
            if (p.RunningVar[l] is { } v) snapshot[i++] = Copy(v);
        }
        return snapshot;
    }

    private static float[] Copy(float[] source)
    {
        var copy = TensorPool.Rent(source.Length);
        source.CopyTo(copy, 0);
        return copy;
    }

    public static void Restore(Parameters p, float[][] snapshot)
    {
        int i = 0;
        foreach (var t in p.Trainable) CopyInto(snapshot, i++, t.Values, t.Name);
        for (int l = 0; l < p.HiddenLayers; l++)
        {
            if (p.RunningMean[l] is { } m) CopyInto(snapshot, i++, m, $"layer{l}.running_mean");
            if (p.RunningVar[l] is { } v) CopyInto(snapshot, i++, v, $"layer{l}.running_var");
        }
        if (i != snapshot.Length) throw new ArgumentException($"parameter snapshot has {snapshot.Length} tensors, the network {i}");
    }

    private static void CopyInto(float[][] snapshot, int index, float[] target, string name)
    {
        if (index >= snapshot.Length) throw new ArgumentException($"parameter snapshot has {snapshot.Length} tensors, missing {name}");
        if (snapshot[index].Length != target.Length) throw new ArgumentException($"parameter snapshot tensor {name} has {snapshot[index].Length} values, expected {target.Length}");
        snapshot[index].CopyTo(target, 0);
    }
}
