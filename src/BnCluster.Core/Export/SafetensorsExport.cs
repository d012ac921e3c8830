using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;
using BnCluster.Core.Model;

namespace BnCluster.Core.Export;

/// <summary>
/// A model as a safetensors file holding the <c>state_dict</c> of the equivalent <c>torch.nn.Sequential</c>.
/// File: u64 little-endian header length, the JSON header (padded with spaces to a multiple of 8 bytes), then the
/// tensors' little-endian bytes back to back; the header maps each name to {dtype, shape, data_offsets [begin, end)
/// into the data}, and "__metadata__" to string values.
/// <para>
/// The Sequential: module 0 is a BatchNorm1d(features, eps = the input eps, momentum = 0) that does the preprocessing and
/// the input normalization, so the network takes the raw values of the training file, as the ONNX export does:
/// x = raw / d, (x − μ)/sqrt(σ² + ε) = (raw − d·μ)/sqrt(σ² + ε) · (1/d), i.e. running_mean = d·μ, running_var = σ²,
/// weight = 1/d, bias = 0 (d = 1 without preprocessing). A feature of zero variance is only centred, as the model does:
/// running_var = 1, weight = sqrt(1 + ε)/d. It must stay in eval mode (momentum 0 keeps its statistics fixed even in
/// train mode, but train mode would normalize with the batch's). Then one module per model layer, in order: Linear
/// (weight [out, in], bias unless batch norm follows it), BatchNorm1d (weight = γ, bias = β, running statistics,
/// num_batches_tracked = the training steps), ReLU / Tanh / Sigmoid. The Sequential gives logits; softmax them for
/// the probabilities.
/// </para>
/// <para>
/// __metadata__: "format": "pt"; "bncluster.modules": a JSON array of [class name in torch.nn, constructor keyword
/// arguments] that builds the Sequential; "bncluster.classes": a JSON array of the class names (index = output).
/// </para>
/// </summary>
public static class SafetensorsExport
{
    public const string ModulesKey = "bncluster.modules", ClassesKey = "bncluster.classes";

    /// <summary>The safetensors bytes of <paramref name="doc"/>; a malformed document throws <see cref="FormatException"/>.</summary>
    public static byte[] Serialize(ModelDocument doc)
    {
        var input = ExportedInput.Of(doc);
        long steps = doc.Training.TryGetValue("steps", out var s) && s is long or int ? Convert.ToInt64(s, CultureInfo.InvariantCulture) : 0;
        var tensors = new List<Tensor>();
        var modules = new List<(string Type, Dictionary<string, object> Args)>();

        // Module 0: preprocessing and input normalization as an eval-mode BatchNorm1d.
        var normalizer = input.Normalizer;
        double d = input.Divisor ?? 1f;
        int f = normalizer.Features;
        var mean = new float[f];
        var variance = new float[f];
        var weight = new float[f];
        for (int j = 0; j < f; j++)
        {
            bool constant = normalizer.Variance[j] == 0;
            mean[j] = (float)(d * normalizer.Mean[j]);
            variance[j] = constant ? 1f : normalizer.Variance[j];
            weight[j] = (float)((constant ? Math.Sqrt(1 + (double)normalizer.Epsilon) : 1.0) / d);
        }
        modules.Add(("BatchNorm1d", new() { ["num_features"] = f, ["eps"] = Shortest(normalizer.Epsilon), ["momentum"] = 0.0 }));
        AddBatchNorm(tensors, 0, weight, new float[f], mean, variance, steps: 0);

        for (int i = 0; i < doc.Layers.Count; i++)
        {
            int k = i + 1;
            switch (doc.Layers[i])
            {
                case DenseLayerRecord dense:
                    modules.Add(("Linear", new() { ["in_features"] = dense.In, ["out_features"] = dense.Out, ["bias"] = dense.Bias is not null }));
                    tensors.Add(Tensor.Float($"{k}.weight", [dense.Out, dense.In], dense.Weight));
                    if (dense.Bias is not null) tensors.Add(Tensor.Float($"{k}.bias", [dense.Out], dense.Bias));
                    break;
                case BatchNormLayerRecord bn:
                    modules.Add(("BatchNorm1d", new() { ["num_features"] = bn.Features, ["eps"] = Shortest(bn.Eps), ["momentum"] = Shortest(bn.Momentum) }));
                    AddBatchNorm(tensors, k, bn.Gamma, bn.Beta, bn.RunningMean, bn.RunningVar, steps);
                    break;
                case ActivationLayerRecord a:
                    modules.Add((TorchActivation(a.Type), new()));
                    break;
                default:
                    throw new FormatException($"model layer {i}: {doc.Layers[i].GetType().Name} has no torch form");
            }
        }

        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            [ModulesKey] = JsonSerializer.Serialize(modules.Select(m => new object[] { m.Type, m.Args })),
            [ClassesKey] = JsonSerializer.Serialize(doc.Classes),
        };
        return Write(metadata, tensors);
    }

    private static void AddBatchNorm(List<Tensor> tensors, int k, float[] weight, float[] bias, float[] runningMean, float[] runningVar, long steps)
    {
        tensors.Add(Tensor.Float($"{k}.weight", [weight.Length], weight));
        tensors.Add(Tensor.Float($"{k}.bias", [bias.Length], bias));
        tensors.Add(Tensor.Float($"{k}.running_mean", [runningMean.Length], runningMean));
        tensors.Add(Tensor.Float($"{k}.running_var", [runningVar.Length], runningVar));
        tensors.Add(Tensor.Int64Scalar($"{k}.num_batches_tracked", steps));
    }

    /// <summary>The float32 as the shortest decimal that reads back as it (1e-05, not 9.999999747378752e-06), as a user would type it in torch.</summary>
    private static double Shortest(float value) =>
        double.Parse(value.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);

    private static string TorchActivation(string type) => type switch
    {
        "relu" => "ReLU",
        "tanh" => "Tanh",
        "sigmoid" => "Sigmoid",
        _ => throw new FormatException($"activation '{type}' has no torch form"),
    };

    /// <summary>The file: header length, header (metadata first, tensors in order), data.</summary>
    private static byte[] Write(Dictionary<string, string> metadata, List<Tensor> tensors)
    {
        using var headerStream = new MemoryStream();
        using (var json = new Utf8JsonWriter(headerStream))
        {
            json.WriteStartObject();
            json.WriteStartObject("__metadata__");
            foreach (var (key, value) in metadata) json.WriteString(key, value);
            json.WriteEndObject();
            long offset = 0;
            foreach (var t in tensors)
            {
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", t.DType);
                json.WriteStartArray("shape");
                foreach (long dim in t.Shape) json.WriteNumberValue(dim);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + t.Data.Length);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += t.Data.Length;
            }
            json.WriteEndObject();
        }
        int headerLength = (int)headerStream.Length;
        int padded = (headerLength + 7) / 8 * 8;
        long dataLength = tensors.Sum(t => (long)t.Data.Length);
        var file = new byte[8 + padded + dataLength];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)padded);
        headerStream.GetBuffer().AsSpan(0, headerLength).CopyTo(file.AsSpan(8));
        file.AsSpan(8 + headerLength, padded - headerLength).Fill((byte)' ');
        long at = 8 + padded;
        foreach (var t in tensors)
        {
            t.Data.CopyTo(file.AsSpan((int)at));
            at += t.Data.Length;
        }
        return file;
    }

    private sealed record Tensor(string Name, string DType, long[] Shape, byte[] Data)
    {
        public static Tensor Float(string name, long[] shape, float[] values)
        {
            return new Tensor(name, "F32", shape, ExportedInput.LittleEndian(values));
        }

        public static Tensor Int64Scalar(string name, long value)
        {
            var data = new byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(data, value);
            return new Tensor(name, "I64", [], data);
        }
    }
}
