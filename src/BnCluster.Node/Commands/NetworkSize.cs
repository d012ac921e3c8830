using System.Globalization;

namespace BnCluster.Node.Commands;

/// <summary>
/// The up-front check that a network (and a batch through it) can be held at all, so that --hidden 2000000000 is wrong
/// input (exit 2, one line) rather than a run that fails once started. Borderline sizes still fail at run time.
/// </summary>
internal static class NetworkSize
{
    /// <summary>
    /// Bytes per parameter while training: the weight, its gradient and up to two optimizer moments, float32 each.
    /// </summary>
    private const long BytesPerParameter = 4 * 4;

    /// <summary>Bytes per activation of a batch row: the forward values, the batch-norm output and the backward gradients, float32 each.</summary>
    private const long BytesPerActivation = 4 * 4;

    /// <param name="dataRows">Rows of data that are generated for the run (bench's random data), 0 = none.</param>
    public static void Check(int inputs, IReadOnlyList<int> hidden, int classes, int batch, long dataRows = 0)
    {
        long parameters = 0, activations = inputs;
        int width = inputs;
        for (int l = 0; l <= hidden.Count; l++)
        {
            int outputs = l < hidden.Count ? hidden[l] : classes;
            long weights = (long)width * outputs;
            if (weights > Array.MaxLength)
                throw new CliInputException(l < hidden.Count
                    ? $"--hidden: layer {l + 1} would hold {width}×{outputs} weights, more than one array can hold ({Array.MaxLength})"
                    : $"--hidden: the output layer would hold {width}×{outputs} weights, more than one array can hold ({Array.MaxLength})");
            if ((long)batch * outputs > Array.MaxLength)
                throw new CliInputException($"--batch: {batch} rows × {outputs} units of layer {l + 1} are more values than one array can hold ({Array.MaxLength})");
            parameters += weights + 4L * outputs; // biases or γ, β and the running mean and variance
            activations += outputs;
            width = outputs;
        }
        if (dataRows > Array.MaxLength / Math.Max(inputs, 1))
            throw new CliInputException($"--batch: the {dataRows} rows × {inputs} features of random data are more values than one array can hold ({Array.MaxLength})");

        long needed = parameters * BytesPerParameter + batch * activations * BytesPerActivation + dataRows * inputs * 4;
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (available > 0 && needed > available)
            throw new CliInputException(string.Create(CultureInfo.InvariantCulture,
                $"--hidden: the network ({parameters} parameters) and a batch of {batch} rows need about {needed / (double)(1L << 30):F1} GiB, more than the {available / (double)(1L << 30):F1} GiB this process may use"));
    }
}
