using System.Buffers.Binary;
using BnCluster.Core.Model;
using BnCluster.Core.Training;

namespace BnCluster.Core.Export;

/// <summary>
/// What both exporters put in front of the network: the preprocessing divisor (null = none) and the input normalizer
/// as <see cref="InferenceModel"/> builds it, after the document has been checked as the model reader checks it.
/// </summary>
internal sealed record ExportedInput(float? Divisor, InputNormalizer Normalizer)
{
    public int Features => Normalizer.Features;

    public static ExportedInput Of(ModelDocument doc)
    {
        ArgumentNullException.ThrowIfNull(doc);
        ModelConversion.ToParameters(doc); // refuses a layer list that is not one of the model's three orders
        if (doc.Preprocessing is { Divisor: var d } && !(d > 0 && float.IsFinite(d)))
            throw new FormatException($"model preprocessing divisor must be positive and finite, got {d}");
        return new ExportedInput(doc.Preprocessing?.Divisor, InputNormalizer.FromRecord(doc.Input));
    }

    /// <summary>The values as little-endian float32 bytes (both formats store tensors so).</summary>
    public static byte[] LittleEndian(float[] values)
    {
        var bytes = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(4 * i), values[i]);
        return bytes;
    }
}
