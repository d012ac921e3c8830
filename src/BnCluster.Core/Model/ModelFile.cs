using System.Buffers;
using BnCluster.Core.Serialization;

namespace BnCluster.Core.Model;

/// <summary>A model file that is malformed or inconsistent; the message names the file and the field.</summary>
public sealed class ModelFileException : Exception
{
    public ModelFileException(string source, string field, string problem, Exception? inner = null)
        : base(field.Length == 0 ? $"{source}: {problem}" : $"{source}: {field} {problem}", inner)
    {
        FileName = source;
        Field = field;
    }

    /// <summary>The file (or "&lt;memory&gt;") the document came from.</summary>
    public string FileName { get; }

    /// <summary>Path of the offending field, e.g. "layers[2].weight"; empty for the document as a whole.</summary>
    public string Field { get; }
}

/// <summary>
/// Reads and writes <c>model.bnc</c> (DESIGN §5): one MessagePack map
/// <c>{format: "bncluster.model", version: 1, input, classes, layers, training}</c>, float arrays as
/// bin of little-endian float32. Writing emits keys in that order with the smallest encodings;
/// reading accepts any valid encoding, any key order, and ignores unknown keys.
/// Both directions check shapes: every array has the length its layer declares and dense layers chain.
/// </summary>
public static class ModelFile
{
    public const string FormatName = "bncluster.model";
    public const int CurrentVersion = 1;

    private const string MemorySource = "<memory>";

    /// <summary>Writes atomically: a temp file in the same folder, flushed to disk, then renamed over <paramref name="path"/>.</summary>
    public static void Write(string path, ModelDocument doc)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte[] bytes = Serialize(doc, Path.GetFileName(path)); // validation errors surface before the disk is touched
        string fullPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(fullPath) ?? ".";
        string tempPath = Path.Combine(directory, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                stream.Write(bytes);
                stream.Flush(flushToDisk: true);
            }
            File.Move(tempPath, fullPath, overwrite: true);
        }
        catch
        {
            try { File.Delete(tempPath); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    public static byte[] Serialize(ModelDocument doc) => Serialize(doc, MemorySource);

    private static byte[] Serialize(ModelDocument doc, string source)
    {
        ArgumentNullException.ThrowIfNull(doc);
        Validate(doc, source);
        var buffer = new ArrayBufferWriter<byte>(EstimateSize(doc));
        var w = new MessagePackWriter(buffer);
        w.WriteMapHeader(6);
        w.WriteString("format"); w.WriteString(FormatName);
        w.WriteString("version"); w.WriteInt32(CurrentVersion);

        w.WriteString("input");
        w.WriteMapHeader(4);
        w.WriteString("features"); w.WriteInt32(doc.Input.Features);
        w.WriteString("mean"); w.WriteFloat32Array(doc.Input.Mean);
        w.WriteString("var"); w.WriteFloat32Array(doc.Input.Var);
        w.WriteString("eps"); w.WriteSingle(doc.Input.Eps);

        w.WriteString("classes");
        w.WriteArrayHeader(doc.Classes.Count);
        foreach (string name in doc.Classes) w.WriteString(name);

        w.WriteString("layers");
        w.WriteArrayHeader(doc.Layers.Count);
        foreach (ModelLayer layer in doc.Layers)
        {
            switch (layer)
            {
                case DenseLayerRecord d:
                    w.WriteMapHeader(5);
                    w.WriteString("type"); w.WriteString("dense");
                    w.WriteString("in"); w.WriteInt32(d.In);
                    w.WriteString("out"); w.WriteInt32(d.Out);
                    w.WriteString("weight"); w.WriteFloat32Array(d.Weight);
                    w.WriteString("bias");
                    if (d.Bias is null) w.WriteNil(); else w.WriteFloat32Array(d.Bias);
                    break;
                case BatchNormLayerRecord b:
                    w.WriteMapHeader(8);
                    w.WriteString("type"); w.WriteString("batchnorm");
                    w.WriteString("features"); w.WriteInt32(b.Features);
                    w.WriteString("gamma"); w.WriteFloat32Array(b.Gamma);
                    w.WriteString("beta"); w.WriteFloat32Array(b.Beta);
                    w.WriteString("running_mean"); w.WriteFloat32Array(b.RunningMean);
                    w.WriteString("running_var"); w.WriteFloat32Array(b.RunningVar);
                    w.WriteString("eps"); w.WriteSingle(b.Eps);
                    w.WriteString("momentum"); w.WriteSingle(b.Momentum);
                    break;
                case ActivationLayerRecord a:
                    w.WriteMapHeader(1);
                    w.WriteString("type"); w.WriteString(a.Type);
                    break;
            }
        }

        w.WriteString("training");
        try
        {
            MessagePackDynamic.Write(w, doc.Training);
        }
        catch (ArgumentException e)
        {
            throw new ModelFileException(source, "training", e.Message, e);
        }
        return buffer.WrittenSpan.ToArray();
    }

    public static ModelDocument Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFileException(path, "", $"cannot read the model file: {e.Message}", e);
        }
        return Deserialize(bytes, path);
    }

    public static ModelDocument Deserialize(ReadOnlySpan<byte> bytes) => Deserialize(bytes, MemorySource);

    /// <summary>Decodes a model; <paramref name="source"/> names the file in error messages.</summary>
    public static ModelDocument Deserialize(ReadOnlySpan<byte> bytes, string source)
    {
        var parser = new Parser(source);
        var reader = new MessagePackReader(bytes);
        ModelDocument doc;
        try
        {
            doc = parser.ReadDocument(ref reader);
            if (!reader.End)
                throw new ModelFileException(source, "", $"{reader.Remaining} trailing bytes after the model map at offset {reader.Position}");
        }
        catch (MessagePackException e)
        {
            throw new ModelFileException(source, parser.Field, parser.Field.Length == 0 ? e.Message : "is malformed: " + e.Message, e);
        }
        Validate(doc, source);
        return doc;
    }

    /// <summary>Shape checks shared by writing and reading: array lengths, chaining, layer types.</summary>
    private static void Validate(ModelDocument doc, string source)
    {
        if (doc.Input is null) throw new ModelFileException(source, "input", "missing");
        if (doc.Classes is null) throw new ModelFileException(source, "classes", "missing");
        if (doc.Layers is null) throw new ModelFileException(source, "layers", "missing");
        if (doc.Training is null) throw new ModelFileException(source, "training", "missing");

        InputNormalization input = doc.Input;
        if (input.Features <= 0) throw new ModelFileException(source, "input.features", $"must be positive, found {input.Features}");
        CheckLength(source, "input.mean", input.Mean, input.Features, $"features = {input.Features}");
        CheckLength(source, "input.var", input.Var, input.Features, $"features = {input.Features}");
        for (int i = 0; i < doc.Classes.Count; i++)
            if (doc.Classes[i] is null) throw new ModelFileException(source, $"classes[{i}]", "is null");

        // Width of the activations flowing out of the previous layer; starts at the input width.
        int width = input.Features;
        string widthFrom = "input.features";
        bool sawDense = false;
        for (int i = 0; i < doc.Layers.Count; i++)
        {
            string field = $"layers[{i}]";
            switch (doc.Layers[i])
            {
                case DenseLayerRecord d:
                    if (d.In <= 0) throw new ModelFileException(source, field + ".in", $"must be positive, found {d.In}");
                    if (d.Out <= 0) throw new ModelFileException(source, field + ".out", $"must be positive, found {d.Out}");
                    if (d.In != width)
                        throw new ModelFileException(source, field + ".in", $"is {d.In}, but {widthFrom} is {width}");
                    CheckLength(source, field + ".weight", d.Weight, (long)d.Out * d.In, $"{d.Out}×{d.In} = {(long)d.Out * d.In}");
                    if (d.Bias is not null) CheckLength(source, field + ".bias", d.Bias, d.Out, $"out = {d.Out}");
                    width = d.Out;
                    widthFrom = field + ".out";
                    sawDense = true;
                    break;
                case BatchNormLayerRecord b:
                    if (b.Features != width)
                        throw new ModelFileException(source, field + ".features", $"is {b.Features}, but {widthFrom} is {width}");
                    string expected = $"features = {b.Features}";
                    CheckLength(source, field + ".gamma", b.Gamma, b.Features, expected);
                    CheckLength(source, field + ".beta", b.Beta, b.Features, expected);
                    CheckLength(source, field + ".running_mean", b.RunningMean, b.Features, expected);
                    CheckLength(source, field + ".running_var", b.RunningVar, b.Features, expected);
                    break;
                case ActivationLayerRecord a:
                    if (a.Type is not ("relu" or "tanh" or "sigmoid"))
                        throw new ModelFileException(source, field + ".type", $"is \"{a.Type}\", expected dense, batchnorm, relu, tanh or sigmoid");
                    break;
                case null:
                    throw new ModelFileException(source, field, "is null");
                default:
                    throw new ModelFileException(source, field, $"unknown layer record {doc.Layers[i].GetType().Name}");
            }
        }
        if (sawDense && width != doc.Classes.Count)
            throw new ModelFileException(source, "classes", $"holds {doc.Classes.Count} names, but the last dense layer ({widthFrom}) has {width} outputs");
    }

    private static void CheckLength(string source, string field, float[]? values, long expected, string expectedText)
    {
        if (values is null) throw new ModelFileException(source, field, "is missing (null)");
        if (values.Length != expected)
            throw new ModelFileException(source, field, $"holds {values.Length} floats, expected {expectedText}");
    }

    private static int EstimateSize(ModelDocument doc)
    {
        long floats = 2L * (doc.Input?.Features ?? 0);
        foreach (ModelLayer layer in doc.Layers ?? [])
        {
            floats += layer switch
            {
                DenseLayerRecord d => (long)d.Weight.Length + (d.Bias?.Length ?? 0),
                BatchNormLayerRecord b => 4L * b.Features,
                _ => 0,
            };
        }
        return (int)Math.Min(int.MaxValue / 2, floats * sizeof(float) + 4096);
    }

    /// <summary>Decoder that remembers the field it is in, so MessagePack errors can name it.</summary>
    private sealed class Parser(string source)
    {
        public string Field { get; private set; } = "";

        public ModelDocument ReadDocument(ref MessagePackReader r)
        {
            string? format = null;
            int? version = null;
            InputNormalization? input = null;
            List<string>? classes = null;
            List<ModelLayer>? layers = null;
            IReadOnlyDictionary<string, object?>? training = null;

            Field = "";
            int count = r.ReadMapHeader();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < count; i++)
            {
                Field = "";
                string key = ReadKey(ref r, seen, "");
                Field = key;
                switch (key)
                {
                    case "format": format = r.ReadString(); break;
                    case "version": version = r.ReadInt32(); break;
                    case "input": input = ReadInput(ref r); break;
                    case "classes":
                        int n = r.ReadArrayHeader();
                        classes = new List<string>(n);
                        for (int c = 0; c < n; c++) { Field = $"classes[{c}]"; classes.Add(r.ReadString()); }
                        break;
                    case "layers":
                        int layerCount = r.ReadArrayHeader();
                        layers = new List<ModelLayer>(layerCount);
                        for (int l = 0; l < layerCount; l++) layers.Add(ReadLayer(ref r, $"layers[{l}]"));
                        break;
                    case "training":
                        if (r.PeekType() != MessagePackType.Map)
                            throw r.Error(r.Position, "map", r.PeekType().ToString().ToLowerInvariant());
                        training = (IReadOnlyDictionary<string, object?>)MessagePackDynamic.Read(ref r)!;
                        break;
                    default: r.Skip(); break; // unknown keys are ignored (forward compatibility)
                }
            }
            Field = "";
            if (format is null) throw Missing("format");
            if (format != FormatName) throw new ModelFileException(source, "format", $"is \"{format}\", expected \"{FormatName}\" (not a BnCluster model file?)");
            if (version is null) throw Missing("version");
            if (version != CurrentVersion) throw new ModelFileException(source, "version", $"{version} is not supported (this build reads version {CurrentVersion})");
            if (input is null) throw Missing("input");
            if (classes is null) throw Missing("classes");
            if (layers is null) throw Missing("layers");
            if (training is null) throw Missing("training");
            return new ModelDocument(input, classes, layers, training);
        }

        private InputNormalization ReadInput(ref MessagePackReader r)
        {
            int? features = null;
            float[]? mean = null, variance = null;
            float? eps = null;
            int count = r.ReadMapHeader();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < count; i++)
            {
                string key = ReadKey(ref r, seen, "input");
                Field = "input." + key;
                switch (key)
                {
                    case "features": features = r.ReadInt32(); break;
                    case "mean": mean = r.ReadFloat32Array(); break;
                    case "var": variance = r.ReadFloat32Array(); break;
                    case "eps": eps = r.ReadSingle(); break;
                    default: r.Skip(); break;
                }
            }
            return new InputNormalization(
                features ?? throw Missing("input.features"),
                mean ?? throw Missing("input.mean"),
                variance ?? throw Missing("input.var"),
                eps ?? throw Missing("input.eps"));
        }

        private ModelLayer ReadLayer(ref MessagePackReader r, string field)
        {
            Field = field;
            string? type = null;
            int? inputs = null, outputs = null, features = null;
            float[]? weight = null, bias = null, gamma = null, beta = null, runningMean = null, runningVar = null;
            bool hasBias = false;
            float? eps = null, momentum = null;
            int count = r.ReadMapHeader();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < count; i++)
            {
                string key = ReadKey(ref r, seen, field);
                Field = $"{field}.{key}";
                switch (key)
                {
                    case "type": type = r.ReadString(); break;
                    case "in": inputs = r.ReadInt32(); break;
                    case "out": outputs = r.ReadInt32(); break;
                    case "weight": weight = r.ReadFloat32Array(); break;
                    case "bias": hasBias = true; bias = r.TryReadNil() ? null : r.ReadFloat32Array(); break;
                    case "features": features = r.ReadInt32(); break;
                    case "gamma": gamma = r.ReadFloat32Array(); break;
                    case "beta": beta = r.ReadFloat32Array(); break;
                    case "running_mean": runningMean = r.ReadFloat32Array(); break;
                    case "running_var": runningVar = r.ReadFloat32Array(); break;
                    case "eps": eps = r.ReadSingle(); break;
                    case "momentum": momentum = r.ReadSingle(); break;
                    default: r.Skip(); break;
                }
            }
            Field = field;
            switch (type)
            {
                case null: throw Missing(field + ".type");
                case "dense":
                    if (!hasBias) throw Missing(field + ".bias");
                    return new DenseLayerRecord(
                        inputs ?? throw Missing(field + ".in"),
                        outputs ?? throw Missing(field + ".out"),
                        weight ?? throw Missing(field + ".weight"),
                        bias);
                case "batchnorm":
                    return new BatchNormLayerRecord(
                        features ?? throw Missing(field + ".features"),
                        gamma ?? throw Missing(field + ".gamma"),
                        beta ?? throw Missing(field + ".beta"),
                        runningMean ?? throw Missing(field + ".running_mean"),
                        runningVar ?? throw Missing(field + ".running_var"),
                        eps ?? throw Missing(field + ".eps"),
                        momentum ?? throw Missing(field + ".momentum"));
                case "relu" or "tanh" or "sigmoid":
                    return new ActivationLayerRecord(type);
                default:
                    throw new ModelFileException(source, field + ".type", $"is \"{type}\", expected dense, batchnorm, relu, tanh or sigmoid");
            }
        }

        private string ReadKey(ref MessagePackReader r, HashSet<string> seen, string mapField)
        {
            int offset = r.Position;
            if (r.PeekType() != MessagePackType.String)
                throw r.Error(offset, "string map key", r.PeekType().ToString().ToLowerInvariant());
            string key = r.ReadString();
            if (!seen.Add(key))
                throw new ModelFileException(source, mapField.Length == 0 ? key : $"{mapField}.{key}", $"appears twice (second at offset {offset})");
            return key;
        }

        private ModelFileException Missing(string field) => new(source, field, "is missing");
    }
}
