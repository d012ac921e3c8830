using System.Globalization;
using BnCluster.Core.Model;
using BnCluster.Core.Training;

namespace BnCluster.Core.Export;

/// <summary>
/// A model as an ONNX file (IR version 8, opset 17 of the default domain): the whole inference of
/// <see cref="InferenceModel"/>, preprocessing and input normalization included, so the graph takes the raw values
/// of the training file's own format.
/// <list type="bullet">
/// <item>input <c>input</c>: float [N, features], N dynamic;</item>
/// <item>output <c>probabilities</c>: float [N, classes], the softmax of the logits;</item>
/// <item>output <c>label</c>: int64 [N], the index of the largest logit (the first one on a tie, as <c>predict</c>).</item>
/// </list>
/// Nodes, in order (x: the running [N, width] value; constants are initializers named after their node):
/// <code>
///   Div                 x = raw / divisor                          only with ModelDocument.Preprocessing
///   Sub, Mul            x = (x − mean) · scale                     input normalization; scale = 1/sqrt(var + eps), 1 where var = 0
///   per model layer, in the order of ModelDocument.Layers:
///     Gemm              x = x · Wᵀ + b                             dense, W [out, in] (transB = 1); no b for a dense without bias
///     BatchNormalization x = γ (x − running_mean)/sqrt(running_var + ε) + β   eval mode
///     Relu | Tanh | Sigmoid
///   Softmax (axis 1)    probabilities = exp(x − max x) / Σ exp(x − max x)   x = the logits
///   ArgMax (axis 1)     label = argmax x                           on the logits, keepdims 0
/// </code>
/// The class names are in the model's metadata_props under "classes" (a JSON array, index = label).
/// </summary>
public static class OnnxExport
{
    public const long IrVersion = 8;
    public const long OpsetVersion = 17;
    public const string InputName = "input", ProbabilitiesName = "probabilities", LabelName = "label";

    // TensorProto.DataType and AttributeProto.AttributeType values of onnx.proto.
    private const int ElementFloat = 1, ElementInt64 = 7;
    private const int AttributeFloat = 1, AttributeInt = 2;

    /// <summary>The ONNX ModelProto bytes of <paramref name="doc"/>; a malformed document throws <see cref="FormatException"/>.</summary>
    public static byte[] Serialize(ModelDocument doc)
    {
        var input = ExportedInput.Of(doc);
        var graph = new Graph();
        string x = InputName;
        if (input.Divisor is { } divisor)
            x = graph.Node("Div", "preprocess", [x, graph.Constant("preprocess.divisor", [], [divisor])],
                $"x = raw / {Format(divisor)} (the dataset loader's scaling of the file's values)");
        x = graph.Node("Sub", "normalize.centre", [x, graph.Constant("normalize.mean", [input.Features], input.Normalizer.Mean)],
            "x − mean (per feature, the training set's)");
        x = graph.Node("Mul", "normalize", [x, graph.Constant("normalize.scale", [input.Features], input.Normalizer.Scale)],
            "x · scale, scale = 1/sqrt(var + eps) (1 for a feature of zero variance)");
        for (int i = 0; i < doc.Layers.Count; i++)
        {
            string name = $"layers.{i}";
            x = doc.Layers[i] switch
            {
                DenseLayerRecord d => graph.Node("Gemm", name,
                    d.Bias is null
                        ? [x, graph.Constant(name + ".weight", [d.Out, d.In], d.Weight)]
                        : [x, graph.Constant(name + ".weight", [d.Out, d.In], d.Weight), graph.Constant(name + ".bias", [d.Out], d.Bias)],
                    d.Bias is null ? "x · Wᵀ (dense without bias)" : "x · Wᵀ + b (dense)", [Attribute.Int("transB", 1)]),
                BatchNormLayerRecord b => graph.Node("BatchNormalization", name,
                    [x, graph.Constant(name + ".gamma", [b.Features], b.Gamma), graph.Constant(name + ".beta", [b.Features], b.Beta),
                     graph.Constant(name + ".running_mean", [b.Features], b.RunningMean), graph.Constant(name + ".running_var", [b.Features], b.RunningVar)],
                    "γ (x − running_mean)/sqrt(running_var + ε) + β (batch norm, eval mode)", [Attribute.Float("epsilon", b.Eps)]),
                ActivationLayerRecord a => graph.Node(OnnxActivation(a.Type), name, [x], a.Type),
                var other => throw new FormatException($"model layer {i}: {other.GetType().Name} has no ONNX form"),
            };
        }
        graph.Node("Softmax", "softmax", [x], "exp(z − max z) / Σ exp(z − max z) over the classes",
            [Attribute.Int("axis", 1)], ProbabilitiesName);
        graph.Node("ArgMax", "argmax", [x], "index of the largest logit (the first on a tie)",
            [Attribute.Int("axis", 1), Attribute.Int("keepdims", 0)], LabelName);

        int classes = doc.Classes.Count;
        var model = new ProtobufWriter()
            .Int64(1, IrVersion)
            .String(2, "bncluster")
            .String(3, typeof(OnnxExport).Assembly.GetName().Version?.ToString() ?? "0")
            .String(6, "BnCluster MLP: raw rows in, class probabilities and label out; class names in metadata 'classes'.")
            .Message(7, g =>
            {
                foreach (var node in graph.Nodes) g.Message(1, node);
                g.String(2, "bncluster_mlp");
                foreach (var tensor in graph.Initializers) g.Message(5, tensor);
                g.Message(11, v => ValueInfo(v, InputName, ElementFloat, input.Features));
                g.Message(12, v => ValueInfo(v, ProbabilitiesName, ElementFloat, classes));
                g.Message(12, v => ValueInfo(v, LabelName, ElementInt64, null));
            })
            .Message(8, opset => opset.String(1, "").Int64(2, OpsetVersion))
            .Message(14, entry => entry.String(1, "classes").String(2, System.Text.Json.JsonSerializer.Serialize(doc.Classes)));
        return model.ToArray();
    }

    private static string OnnxActivation(string type) => type switch
    {
        "relu" => "Relu",
        "tanh" => "Tanh",
        "sigmoid" => "Sigmoid",
        _ => throw new FormatException($"activation '{type}' has no ONNX form"),
    };

    /// <summary>ValueInfoProto of a [N, width] (or [N] when <paramref name="width"/> is null) tensor, N named "N".</summary>
    private static void ValueInfo(ProtobufWriter v, string name, int elementType, int? width)
    {
        v.String(1, name);
        v.Message(2, type => type.Message(1, tensor =>
        {
            tensor.Int64(1, elementType);
            tensor.Message(2, shape =>
            {
                shape.Message(1, dim => dim.String(2, "N"));
                if (width is { } w) shape.Message(1, dim => dim.Int64(1, w));
            });
        }));
    }

    private static string Format(float value) => value.ToString("R", CultureInfo.InvariantCulture);

    private sealed record Attribute(string Name, int Type, long IntValue, float FloatValue)
    {
        public static Attribute Int(string name, long value) => new(name, AttributeInt, value, 0);
        public static Attribute Float(string name, float value) => new(name, AttributeFloat, 0, value);
    }

    /// <summary>The nodes and initializers of the graph, as encoders of their messages, in the order added.</summary>
    private sealed class Graph
    {
        public List<Action<ProtobufWriter>> Nodes { get; } = [];
        public List<Action<ProtobufWriter>> Initializers { get; } = [];

        /// <summary>A float TensorProto initializer (raw little-endian data); returns its name.</summary>
        public string Constant(string name, long[] dims, float[] values)
        {
            byte[] raw = ExportedInput.LittleEndian(values);
            Initializers.Add(t =>
            {
                foreach (long d in dims) t.Int64(1, d);
                t.Int64(2, ElementFloat);
                t.String(8, name);
                t.Bytes(9, raw);
            });
            return name;
        }

        /// <summary>A NodeProto of one output, named <paramref name="output"/> or after the node; returns the output's name.</summary>
        public string Node(string op, string name, string[] inputs, string formula, Attribute[]? attributes = null, string? output = null)
        {
            string result = output ?? name;
            Nodes.Add(n =>
            {
                foreach (string input in inputs) n.String(1, input);
                n.String(2, result);
                n.String(3, name);
                n.String(4, op);
                foreach (var a in attributes ?? [])
                    n.Message(5, attr =>
                    {
                        attr.String(1, a.Name);
                        if (a.Type == AttributeFloat) attr.Float(2, a.FloatValue); else attr.Int64(3, a.IntValue);
                        attr.Int64(20, a.Type);
                    });
                n.String(6, formula);
            });
            return result;
        }

    }
}
