using BnCluster.Core.Training;

namespace BnCluster.Collectives;

/// <summary>
/// Every tensor of a <see cref="Parameters"/> copied into arrays rented from <see cref="TensorPool"/>, for a
/// message: the trainable tensors in their canonical order, then r_μ and r_σ² of each BN layer (the running
/// averages are needed for evaluation). The receiver releases the snapshot after <see cref="Restore"/>.
/// </summary>
public static class ParameterSnapshot
{
    public static float[][] Capture(Parameters p) => TensorPool.RentCopies(p.AllTensors);

    public static void Restore(Parameters p, float[][] snapshot)
    {
        var tensors = p.AllTensors;
        for (int i = 0; i < tensors.Count; i++) CopyInto(snapshot, i, tensors[i].Values, tensors[i].Name);
        if (tensors.Count != snapshot.Length) throw new ArgumentException($"parameter snapshot has {snapshot.Length} tensors, the network {tensors.Count}");
    }

    private static void CopyInto(float[][] snapshot, int index, float[] target, string name)
    {
        if (index >= snapshot.Length) throw new ArgumentException($"parameter snapshot has {snapshot.Length} tensors, missing {name}");
        if (snapshot[index].Length != target.Length) throw new ArgumentException($"parameter snapshot tensor {name} has {snapshot[index].Length} values, expected {target.Length}");
        snapshot[index].CopyTo(target, 0);
    }
}
