using System.Buffers;
using System.Buffers.Binary;
using System.Collections;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using MessagePack;

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
/// Reads and writes <c>model.bnc</c> (docs/design.md, "Contracts"): one MessagePack map
/// <c>{format: "bncluster.model", version: 2, input, preprocessing, classes, layers, training, checksum}</c>, float
/// arrays as bin of little-endian float32. Writing emits keys in that order with the smallest encodings;
/// reading accepts any valid encoding, any key order before the checksum, and ignores unknown keys.
/// Both directions check shapes: every array has the length its layer declares and dense layers chain.
/// </summary>
/// <remarks>
/// The checksum (version 2): the map's last entry is the key "checksum" (fixstr) with a bin8 of 32 bytes, the SHA-256
/// of every byte of the file before that key. Its 43 bytes end the file, so any reader finds it without decoding:
/// <c>sha256(data[:-43]) == data[-32:]</c>. A file that ends with such an entry is checked before it is decoded, whatever
/// its version says (a damaged version number cannot turn the check off); a version 2 file without one is refused.
/// Version 1 files (no checksum, no preprocessing) still load.
/// </remarks>
/// <remarks>
/// The encoding is MessagePack-CSharp's low-level <see cref="MessagePackWriter"/> and <see cref="MessagePackReader"/>.
/// The reader checks each value's type and declared length before the library reads it, so malformed input of any
/// kind becomes a <see cref="ModelFileException"/> naming the field.
/// The training map holds plain values. Reading gives: null, bool, long (ulong above long.MaxValue), double
/// (float32 widened exactly), string, byte[] (bin), DateTimeOffset (timestamp ext), <see cref="ExtensionResult"/>
/// (any other ext), List&lt;object?&gt; (array), Dictionary&lt;string, object?&gt; (map). Writing accepts those plus
/// the other integer types, float (written as float32), any IReadOnlyDictionary&lt;string, object?&gt; or
/// IDictionary with string keys, and any other IEnumerable as an array.
/// </remarks>
public static class ModelFile
{
    public const string FormatName = "bncluster.model";
    public const int CurrentVersion = 2;

    /// <summary>The oldest version this build reads: version 1 has neither checksum nor preprocessing.</summary>
    public const int OldestVersion = 1;

    /// <summary>Bytes of the checksum entry that ends a version 2 file: fixstr "checksum", bin8 header, 32 digest bytes.</summary>
    public const int ChecksumEntryBytes = 43;

    // fixstr(8) "checksum", then the bin8 header of 32 bytes.
    private static ReadOnlySpan<byte> ChecksumEntryHeader => [0xa8, (byte)'c', (byte)'h', (byte)'e', (byte)'c', (byte)'k', (byte)'s', (byte)'u', (byte)'m', 0xc4, 0x20];

    /// <summary>How deeply arrays and maps may nest in one value of the training map or of an unknown key.</summary>
    private const int MaxDepth = 64;

    private const string MemorySource = "<memory>";

    // Strict both ways: the library writes a lone surrogate, and reads invalid UTF-8, as U+FFFD without a word.
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Writes atomically: a temp file in the same folder, flushed to disk, then renamed over <paramref name="path"/>.</summary>
    public static void Write(string path, ModelDocument doc)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte[] bytes = Serialize(doc, Path.GetFileName(path)); // validation errors surface before the disk is touched
        AtomicFile.Write(path, bytes);
    }

    public static byte[] Serialize(ModelDocument doc) => Serialize(doc, MemorySource);

    private static byte[] Serialize(ModelDocument doc, string source)
    {
        ArgumentNullException.ThrowIfNull(doc);
        Validate(doc, source);
        var buffer = new ArrayBufferWriter<byte>(EstimateSize(doc));
        var w = new MessagePackWriter(buffer);
        w.WriteMapHeader(8);
        w.Write("format"); w.Write(FormatName);
        w.Write("version"); w.Write(CurrentVersion);

        w.Write("input");
        w.WriteMapHeader(4);
        w.Write("features"); w.Write(doc.Input.Features);
        w.Write("mean"); WriteFloats(ref w, doc.Input.Mean);
        w.Write("var"); WriteFloats(ref w, doc.Input.Var);
        w.Write("eps"); w.Write(doc.Input.Eps);

        w.Write("preprocessing");
        if (doc.Preprocessing is { } pre)
        {
            w.WriteMapHeader(1);
            w.Write("divisor"); w.Write(pre.Divisor);
        }
        else w.WriteNil();

        w.Write("classes");
        w.WriteArrayHeader(doc.Classes.Count);
        for (int i = 0; i < doc.Classes.Count; i++)
        {
            try
            {
                WriteText(ref w, doc.Classes[i]);
            }
            catch (EncoderFallbackException e)
            {
                throw new ModelFileException(source, $"classes[{i}]", $"is not valid Unicode: {e.Message}", e);
            }
        }

        w.Write("layers");
        w.WriteArrayHeader(doc.Layers.Count);
        foreach (ModelLayer layer in doc.Layers)
        {
            switch (layer)
            {
                case DenseLayerRecord d:
                    w.WriteMapHeader(5);
                    w.Write("type"); w.Write("dense");
                    w.Write("in"); w.Write(d.In);
                    w.Write("out"); w.Write(d.Out);
                    w.Write("weight"); WriteFloats(ref w, d.Weight);
                    w.Write("bias");
                    if (d.Bias is null) w.WriteNil(); else WriteFloats(ref w, d.Bias);
                    break;
                case BatchNormLayerRecord b:
                    w.WriteMapHeader(8);
                    w.Write("type"); w.Write("batchnorm");
                    w.Write("features"); w.Write(b.Features);
                    w.Write("gamma"); WriteFloats(ref w, b.Gamma);
                    w.Write("beta"); WriteFloats(ref w, b.Beta);
                    w.Write("running_mean"); WriteFloats(ref w, b.RunningMean);
                    w.Write("running_var"); WriteFloats(ref w, b.RunningVar);
                    w.Write("eps"); w.Write(b.Eps);
                    w.Write("momentum"); w.Write(b.Momentum);
                    break;
                case ActivationLayerRecord a:
                    w.WriteMapHeader(1);
                    w.Write("type"); w.Write(a.Type);
                    break;
            }
        }

        w.Write("training");
        try
        {
            WriteValue(ref w, doc.Training);
        }
        catch (ArgumentException e)
        {
            throw new ModelFileException(source, "training", e.Message, e);
        }
        w.Flush();
        // The checksum entry: its header, then the SHA-256 of everything before it (the header excluded).
        int covered = buffer.WrittenCount;
        ChecksumEntryHeader.CopyTo(buffer.GetSpan(ChecksumEntryBytes));
        buffer.Advance(ChecksumEntryHeader.Length);
        var bytes = new byte[covered + ChecksumEntryBytes];
        buffer.WrittenSpan.CopyTo(bytes);
        SHA256.HashData(bytes.AsSpan(0, covered), bytes.AsSpan(covered + ChecksumEntryHeader.Length));
        return bytes;
    }

    /// <summary>The tensor encoding (docs/design.md, "Wire formats" and "Contracts"): one bin holding the floats as little-endian float32.</summary>
    private static void WriteFloats(ref MessagePackWriter w, float[] values)
    {
        if (BitConverter.IsLittleEndian)
        {
            w.Write(MemoryMarshal.AsBytes(values.AsSpan()));
            return;
        }
        int length = checked(values.Length * sizeof(float));
        w.WriteBinHeader(length);
        Span<byte> span = w.GetSpan(length);
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(span[(i * sizeof(float))..], values[i]);
        w.Advance(length);
    }

    /// <summary>A str of <paramref name="value"/>'s UTF-8; a lone surrogate throws <see cref="EncoderFallbackException"/>.</summary>
    private static void WriteText(ref MessagePackWriter w, string value)
    {
        int length = StrictUtf8.GetByteCount(value);
        w.WriteStringHeader(length);
        Span<byte> span = w.GetSpan(length);
        StrictUtf8.GetBytes(value, span);
        w.Advance(length);
    }

    /// <summary>A training value (see the remarks on <see cref="ModelFile"/>); anything else is an <see cref="ArgumentException"/>.</summary>
    private static void WriteValue(ref MessagePackWriter w, object? value)
    {
        switch (value)
        {
            case null: w.WriteNil(); break;
            case bool b: w.Write(b); break;
            case long l: w.Write(l); break;
            case int i: w.Write((long)i); break;
            case short sh: w.Write((long)sh); break;
            case sbyte sb: w.Write((long)sb); break;
            case byte by: w.Write((ulong)by); break;
            case ushort us: w.Write((ulong)us); break;
            case uint ui: w.Write((ulong)ui); break;
            case ulong ul: w.Write(ul); break;
            case float f: w.Write(f); break;
            case double d: w.Write(d); break;
            case string str: WriteText(ref w, str); break;
            case byte[] bytes: w.Write(bytes.AsSpan()); break;
            case DateTimeOffset t: w.Write(t.UtcDateTime); break;
            case ExtensionResult ext: w.WriteExtensionFormat(ext); break;
            case IReadOnlyDictionary<string, object?> map:
                w.WriteMapHeader(map.Count);
                foreach (KeyValuePair<string, object?> entry in map)
                {
                    WriteText(ref w, entry.Key);
                    WriteValue(ref w, entry.Value);
                }
                break;
            case IDictionary dictionary:
                w.WriteMapHeader(dictionary.Count);
                foreach (DictionaryEntry entry in dictionary)
                {
                    if (entry.Key is not string key)
                        throw new ArgumentException($"map keys must be strings, found {entry.Key?.GetType().Name ?? "null"}");
                    WriteText(ref w, key);
                    WriteValue(ref w, entry.Value);
                }
                break;
            case IEnumerable sequence:
                var items = sequence as IReadOnlyList<object?> ?? sequence.Cast<object?>().ToList();
                w.WriteArrayHeader(items.Count);
                foreach (object? item in items) WriteValue(ref w, item);
                break;
            default:
                throw new ArgumentException($"cannot write a {value.GetType().Name} as MessagePack");
        }
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

    public static ModelDocument Deserialize(ReadOnlyMemory<byte> bytes) => Deserialize(bytes, MemorySource);

    /// <summary>Decodes a model; <paramref name="source"/> names the file in error messages.</summary>
    public static ModelDocument Deserialize(ReadOnlyMemory<byte> bytes, string source)
    {
        bool hasChecksum = VerifyChecksum(bytes.Span, source);
        var parser = new Parser(source);
        var reader = new MessagePackReader(bytes);
        ModelDocument doc;
        try
        {
            doc = parser.ReadDocument(ref reader);
            if (!reader.End)
                throw new ModelFileException(source, "", $"{Remaining(ref reader)} trailing bytes after the model map at offset {reader.Consumed}");
        }
        // The parser checks types and lengths first, so what the library still finds is input ending inside a
        // fixed-size value (EndOfStreamException); the other two are caught so that nothing of it escapes.
        catch (Exception e) when (e is EndOfStreamException or MessagePackSerializationException or OverflowException)
        {
            string problem = e is EndOfStreamException
                ? Expected(reader.Consumed, "complete value", "end of input")
                : $"offset {reader.Consumed}: {e.Message}";
            throw parser.Error(problem, e);
        }
        if (parser.ChecksumOffset is { } at && (!hasChecksum || at != bytes.Length - ChecksumEntryBytes))
            throw new ModelFileException(source, "checksum", $"at offset {at} must be the model map's last entry, a bin8 of 32 bytes ending the file");
        if (parser.Version >= 2 && !hasChecksum)
            throw new ModelFileException(source, "checksum", $"is missing: a version {parser.Version} file ends with its SHA-256 (the file was cut or damaged)");
        Validate(doc, source);
        return doc;
    }

    /// <summary>
    /// When <paramref name="bytes"/> end with a checksum entry, checks it (a mismatch throws) and returns true; false when
    /// they do not (a version 1 file, or a version 2 file whose entry is damaged: the parser then finds no checksum).
    /// </summary>
    private static bool VerifyChecksum(ReadOnlySpan<byte> bytes, string source)
    {
        if (bytes.Length < ChecksumEntryBytes || !bytes[^ChecksumEntryBytes..^32].SequenceEqual(ChecksumEntryHeader)) return false;
        ReadOnlySpan<byte> covered = bytes[..^ChecksumEntryBytes], recorded = bytes[^32..];
        Span<byte> actual = stackalloc byte[32];
        SHA256.HashData(covered, actual);
        if (!actual.SequenceEqual(recorded))
            throw new ModelFileException(source, "checksum",
                $"does not match: the SHA-256 of the first {covered.Length} bytes is {Convert.ToHexStringLower(actual)}, the file records " +
                $"{Convert.ToHexStringLower(recorded)} (the file is damaged or was modified)");
        return true;
    }

    private static long Remaining(ref MessagePackReader r) => r.Sequence.Length - r.Consumed;

    /// <summary>The shape of every decoding error: "offset N: expected X, found Y".</summary>
    private static string Expected(long offset, string expected, string found) => $"offset {offset}: expected {expected}, found {found}";

    /// <summary>Shape checks shared by writing and reading: array lengths, chaining, layer types.</summary>
    private static void Validate(ModelDocument doc, string source)
    {
        if (doc.Input is null) throw new ModelFileException(source, "input", "missing");
        if (doc.Classes is null) throw new ModelFileException(source, "classes", "missing");
        if (doc.Layers is null) throw new ModelFileException(source, "layers", "missing");
        if (doc.Training is null) throw new ModelFileException(source, "training", "missing");

        if (doc.Preprocessing is { Divisor: var divisor } && !(divisor > 0 && float.IsFinite(divisor)))
            throw new ModelFileException(source, "preprocessing.divisor", $"must be positive and finite, found {divisor.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
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

        /// <summary>The version the map declares (after <see cref="ReadDocument"/>).</summary>
        public int Version { get; private set; }

        /// <summary>Offset of the top-level key "checksum", if the map has one.</summary>
        public long? ChecksumOffset { get; private set; }

        /// <summary>An error in the current field: "field is malformed: problem", or just the problem at the top.</summary>
        public ModelFileException Error(string problem, Exception? inner = null) =>
            new(source, Field, Field.Length == 0 ? problem : "is malformed: " + problem, inner);

        public ModelDocument ReadDocument(ref MessagePackReader r)
        {
            string? format = null;
            int? version = null;
            InputNormalization? input = null;
            List<string>? classes = null;
            List<ModelLayer>? layers = null;
            IReadOnlyDictionary<string, object?>? training = null;
            InputPreprocessing? preprocessing = null;

            Field = "";
            int count = ReadMapHeader(ref r);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < count; i++)
            {
                Field = "";
                long keyOffset = r.Consumed;
                string key = ReadKey(ref r, seen, "");
                Field = key;
                switch (key)
                {
                    case "preprocessing": preprocessing = ReadPreprocessing(ref r); break;
                    case "checksum": ChecksumOffset = keyOffset; Skip(ref r, 0); break; // checked on the raw bytes
                    case "format": format = ReadString(ref r); break;
                    case "version": version = ReadInt32(ref r); break;
                    case "input": input = ReadInput(ref r); break;
                    case "classes":
                        int n = ReadArrayHeader(ref r);
                        classes = new List<string>(n);
                        for (int c = 0; c < n; c++) { Field = $"classes[{c}]"; classes.Add(ReadString(ref r)); }
                        break;
                    case "layers":
                        int layerCount = ReadArrayHeader(ref r);
                        layers = new List<ModelLayer>(layerCount);
                        for (int l = 0; l < layerCount; l++) layers.Add(ReadLayer(ref r, $"layers[{l}]"));
                        break;
                    case "training":
                        Expect(ref r, MessagePackType.Map, "map");
                        training = (IReadOnlyDictionary<string, object?>)ReadValue(ref r, 0)!;
                        break;
                    default: Skip(ref r, 0); break; // unknown keys are ignored (forward compatibility)
                }
            }
            Field = "";
            if (format is null) throw Missing("format");
            if (format != FormatName) throw new ModelFileException(source, "format", $"is \"{format}\", expected \"{FormatName}\" (not a BnCluster model file?)");
            if (version is null) throw Missing("version");
            if (version is < OldestVersion or > CurrentVersion)
                throw new ModelFileException(source, "version", $"{version} is not supported (this build reads versions {OldestVersion} to {CurrentVersion})");
            Version = version.Value;
            if (input is null) throw Missing("input");
            if (classes is null) throw Missing("classes");
            if (layers is null) throw Missing("layers");
            if (training is null) throw Missing("training");
            return new ModelDocument(input, classes, layers, training) { Preprocessing = preprocessing };
        }

        /// <summary>nil (none) or {divisor}.</summary>
        private InputPreprocessing? ReadPreprocessing(ref MessagePackReader r)
        {
            if (TryReadNil(ref r)) return null;
            float? divisor = null;
            int count = ReadMapHeader(ref r);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < count; i++)
            {
                string key = ReadKey(ref r, seen, "preprocessing");
                Field = "preprocessing." + key;
                switch (key)
                {
                    case "divisor": divisor = ReadSingle(ref r); break;
                    default: Skip(ref r, 0); break;
                }
            }
            return new InputPreprocessing(divisor ?? throw Missing("preprocessing.divisor"));
        }

        private InputNormalization ReadInput(ref MessagePackReader r)
        {
            int? features = null;
            float[]? mean = null, variance = null;
            float? eps = null;
            int count = ReadMapHeader(ref r);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < count; i++)
            {
                string key = ReadKey(ref r, seen, "input");
                Field = "input." + key;
                switch (key)
                {
                    case "features": features = ReadInt32(ref r); break;
                    case "mean": mean = ReadFloats(ref r); break;
                    case "var": variance = ReadFloats(ref r); break;
                    case "eps": eps = ReadSingle(ref r); break;
                    default: Skip(ref r, 0); break;
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
            int count = ReadMapHeader(ref r);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < count; i++)
            {
                string key = ReadKey(ref r, seen, field);
                Field = $"{field}.{key}";
                switch (key)
                {
                    case "type": type = ReadString(ref r); break;
                    case "in": inputs = ReadInt32(ref r); break;
                    case "out": outputs = ReadInt32(ref r); break;
                    case "weight": weight = ReadFloats(ref r); break;
                    case "bias": hasBias = true; bias = TryReadNil(ref r) ? null : ReadFloats(ref r); break;
                    case "features": features = ReadInt32(ref r); break;
                    case "gamma": gamma = ReadFloats(ref r); break;
                    case "beta": beta = ReadFloats(ref r); break;
                    case "running_mean": runningMean = ReadFloats(ref r); break;
                    case "running_var": runningVar = ReadFloats(ref r); break;
                    case "eps": eps = ReadSingle(ref r); break;
                    case "momentum": momentum = ReadSingle(ref r); break;
                    default: Skip(ref r, 0); break;
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
            long offset = r.Consumed;
            string key = ReadString(ref r, "string map key");
            if (!seen.Add(key))
                throw new ModelFileException(source, mapField.Length == 0 ? key : $"{mapField}.{key}", $"appears twice (second at offset {offset})");
            return key;
        }

        private ModelFileException Missing(string field) => new(source, field, "is missing");

        private ModelFileException Malformed(long offset, string expected, string found) => Error(Expected(offset, expected, found));

        private static string Found(ref MessagePackReader r) => r.End ? "end of input" : MessagePackCode.ToFormatName(r.NextCode);

        /// <summary>The family of the next value; the end of the input is an error naming <paramref name="expected"/>.</summary>
        private MessagePackType Peek(ref MessagePackReader r, string expected)
        {
            if (r.End) throw Malformed(r.Consumed, expected, "end of input");
            return r.NextMessagePackType;
        }

        /// <summary>Throws unless the next value is a <paramref name="type"/>; returns its offset.</summary>
        private long Expect(ref MessagePackReader r, MessagePackType type, string expected)
        {
            long offset = r.Consumed;
            if (Peek(ref r, expected) != type) throw Malformed(offset, expected, Found(ref r));
            return offset;
        }

        private int ReadMapHeader(ref MessagePackReader r) => ReadHeader(ref r, MessagePackType.Map, "map", "entries", 2);

        private int ReadArrayHeader(ref MessagePackReader r) => ReadHeader(ref r, MessagePackType.Array, "array", "elements", 1);

        /// <summary>
        /// An array or map count that the bytes left can hold (each element takes at least a byte), so callers may size
        /// collections by it. The library hands an array32/map32 count above int.MaxValue back as a negative int.
        /// </summary>
        private int ReadHeader(ref MessagePackReader r, MessagePackType type, string name, string unit, int minBytesEach)
        {
            long offset = Expect(ref r, type, name);
            bool complete = type == MessagePackType.Map ? r.TryReadMapHeader(out int count) : r.TryReadArrayHeader(out count);
            if (!complete) throw Malformed(offset, $"complete {name} header", "end of input");
            long declared = (uint)count, left = Remaining(ref r);
            if (declared * minBytesEach > left) throw Malformed(offset, $"{name} of {declared} {unit}", $"only {left} bytes left");
            return count;
        }

        /// <summary>
        /// Checks that the str, bin or ext value at the reader fits in the bytes left, and returns its payload length.
        /// Needed before the library reads one: it slices by the declared length and lets a 32-bit length above 2 GB
        /// through its own check (ArgumentOutOfRangeException); float arrays are allocated by this length.
        /// </summary>
        private long CheckPayload(ref MessagePackReader r)
        {
            long offset = r.Consumed;
            byte code = r.NextCode;
            (int lengthBytes, int fixedLength, int typeBytes) = code switch
            {
                >= MessagePackCode.MinFixStr and <= MessagePackCode.MaxFixStr => (0, code & 0x1f, 0),
                MessagePackCode.Str8 or MessagePackCode.Bin8 => (1, 0, 0),
                MessagePackCode.Str16 or MessagePackCode.Bin16 => (2, 0, 0),
                MessagePackCode.Str32 or MessagePackCode.Bin32 => (4, 0, 0),
                MessagePackCode.FixExt1 => (0, 1, 1),
                MessagePackCode.FixExt2 => (0, 2, 1),
                MessagePackCode.FixExt4 => (0, 4, 1),
                MessagePackCode.FixExt8 => (0, 8, 1),
                MessagePackCode.FixExt16 => (0, 16, 1),
                MessagePackCode.Ext8 => (1, 0, 1),
                MessagePackCode.Ext16 => (2, 0, 1),
                MessagePackCode.Ext32 => (4, 0, 1),
                _ => throw new InvalidOperationException($"0x{code:x2} is not a str, bin or ext code"), // callers checked the type
            };
            string name = MessagePackCode.ToFormatName(code);
            long header = 1 + lengthBytes + typeBytes, left = Remaining(ref r);
            if (left < header) throw Malformed(offset, $"complete {name} header", "end of input");
            long length = fixedLength;
            if (lengthBytes > 0)
            {
                Span<byte> field = stackalloc byte[4];
                r.Sequence.Slice(r.Position).Slice(1, lengthBytes).CopyTo(field);
                length = lengthBytes switch
                {
                    1 => field[0],
                    2 => BinaryPrimitives.ReadUInt16BigEndian(field),
                    _ => BinaryPrimitives.ReadUInt32BigEndian(field),
                };
            }
            if (length > left - header) throw Malformed(offset, $"{name} payload of {length} bytes", $"only {left - header} bytes left");
            return length;
        }

        private string ReadString(ref MessagePackReader r, string expected = "string")
        {
            long offset = Expect(ref r, MessagePackType.String, expected);
            CheckPayload(ref r);
            ReadOnlySequence<byte> utf8 = r.ReadStringSequence()!.Value; // a str code, so not nil
            try
            {
                return StrictUtf8.GetString(utf8);
            }
            catch (DecoderFallbackException)
            {
                throw Malformed(offset, "valid UTF-8 string", "invalid byte sequence");
            }
        }

        /// <summary>A bin of little-endian float32 into a new array, allocated once its length is checked.</summary>
        private float[] ReadFloats(ref MessagePackReader r)
        {
            long offset = Expect(ref r, MessagePackType.Binary, "bin");
            long length = CheckPayload(ref r);
            if (length % sizeof(float) != 0) throw Malformed(offset, "bin of float32 (length a multiple of 4)", $"bin of {length} bytes");
            ReadOnlySequence<byte> bytes = r.ReadBytes()!.Value;
            var values = new float[length / sizeof(float)];
            bytes.CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
            if (!BitConverter.IsLittleEndian)
            {
                Span<int> bits = MemoryMarshal.Cast<float, int>(values.AsSpan());
                BinaryPrimitives.ReverseEndianness(bits, bits);
            }
            return values;
        }

        /// <summary>Any integer encoding whose value fits in an int.</summary>
        private int ReadInt32(ref MessagePackReader r)
        {
            long offset = Expect(ref r, MessagePackType.Integer, "integer");
            if (r.NextCode == MessagePackCode.UInt64) // the one encoding whose values need not fit in a long
            {
                ulong big = r.ReadUInt64();
                if (big > int.MaxValue) throw Malformed(offset, "integer in int32 range", $"{big}");
                return (int)big;
            }
            long value = r.ReadInt64();
            if (value is < int.MinValue or > int.MaxValue) throw Malformed(offset, "integer in int32 range", $"{value}");
            return (int)value;
        }

        /// <summary>float32, float64 (rounded to the nearest float32) or any integer.</summary>
        private float ReadSingle(ref MessagePackReader r)
        {
            long offset = r.Consumed;
            if (Peek(ref r, "float") is not (MessagePackType.Float or MessagePackType.Integer)) throw Malformed(offset, "float", Found(ref r));
            return (float)r.ReadDouble();
        }

        private bool TryReadNil(ref MessagePackReader r)
        {
            if (Peek(ref r, "nil or bin") != MessagePackType.Nil) return false;
            r.ReadNil();
            return true;
        }

        private void CheckDepth(long offset, int depth)
        {
            if (depth > MaxDepth) throw Malformed(offset, $"nesting depth at most {MaxDepth}", $"depth {depth}");
        }

        /// <summary>Skips one value of any kind. Not the library's Skip: that one recurses without a depth limit.</summary>
        private void Skip(ref MessagePackReader r, int depth)
        {
            long offset = r.Consumed;
            switch (Peek(ref r, "any value"))
            {
                case MessagePackType.Array:
                {
                    CheckDepth(offset, depth + 1);
                    int count = ReadArrayHeader(ref r);
                    for (int i = 0; i < count; i++) Skip(ref r, depth + 1);
                    break;
                }
                case MessagePackType.Map:
                {
                    CheckDepth(offset, depth + 1);
                    int count = ReadMapHeader(ref r);
                    for (int i = 0; i < count; i++) { Skip(ref r, depth + 1); Skip(ref r, depth + 1); }
                    break;
                }
                case MessagePackType.String or MessagePackType.Binary or MessagePackType.Extension:
                    CheckPayload(ref r);
                    r.Skip();
                    break;
                case MessagePackType.Unknown:
                    throw Malformed(offset, "any value", Found(ref r));
                default: // nil, bool, integer, float: fixed sizes the library checks
                    r.Skip();
                    break;
            }
        }

        /// <summary>One training value as a plain object (see the remarks on <see cref="ModelFile"/>).</summary>
        private object? ReadValue(ref MessagePackReader r, int depth)
        {
            long offset = r.Consumed;
            switch (Peek(ref r, "any value"))
            {
                case MessagePackType.Nil:
                    r.ReadNil();
                    return null;
                case MessagePackType.Boolean:
                    return r.ReadBoolean();
                case MessagePackType.Integer:
                    if (r.NextCode != MessagePackCode.UInt64) return r.ReadInt64();
                    ulong big = r.ReadUInt64();
                    return big <= long.MaxValue ? (object)(long)big : big;
                case MessagePackType.Float:
                    return r.ReadDouble();
                case MessagePackType.String:
                    return ReadString(ref r);
                case MessagePackType.Binary:
                    CheckPayload(ref r);
                    return r.ReadBytes()!.Value.ToArray();
                case MessagePackType.Extension:
                    return ReadExtension(ref r);
                case MessagePackType.Array:
                {
                    CheckDepth(offset, depth + 1);
                    int count = ReadArrayHeader(ref r);
                    var list = new List<object?>(count);
                    for (int i = 0; i < count; i++) list.Add(ReadValue(ref r, depth + 1));
                    return list;
                }
                case MessagePackType.Map:
                {
                    CheckDepth(offset, depth + 1);
                    int count = ReadMapHeader(ref r);
                    var map = new Dictionary<string, object?>(count, StringComparer.Ordinal);
                    for (int i = 0; i < count; i++)
                    {
                        long keyOffset = r.Consumed;
                        string key = ReadString(ref r, "string map key");
                        if (!map.TryAdd(key, ReadValue(ref r, depth + 1)))
                            throw Malformed(keyOffset, "unique map key", $"duplicate key \"{key}\"");
                    }
                    return map;
                }
                default:
                    throw Malformed(offset, "any value", Found(ref r));
            }
        }

        /// <summary>A timestamp as a DateTimeOffset; any other extension as an ExtensionResult holding a copy of its data.</summary>
        private object ReadExtension(ref MessagePackReader r)
        {
            long offset = r.Consumed;
            CheckPayload(ref r);
            ExtensionHeader header = r.ReadExtensionFormatHeader();
            ReadOnlySequence<byte> data = r.ReadRaw(header.Length);
            return header.TypeCode == ReservedMessagePackExtensionTypeCode.DateTime
                ? ReadTimestamp(offset, data)
                : new ExtensionResult(header.TypeCode, data.ToArray());
        }

        /// <summary>
        /// The 4, 8 and 12-byte timestamp forms of the MessagePack spec. Decoded here because the library's ReadDateTime
        /// takes nanoseconds of 10^9 and more, and throws ArgumentOutOfRangeException beyond year 9999.
        /// </summary>
        private DateTimeOffset ReadTimestamp(long offset, ReadOnlySequence<byte> data)
        {
            if (data.Length is not (4 or 8 or 12)) throw Malformed(offset, "timestamp of 4, 8 or 12 bytes", $"{data.Length} bytes");
            Span<byte> d = stackalloc byte[12];
            d = d[..(int)data.Length];
            data.CopyTo(d);
            long seconds;
            uint nanoseconds;
            switch (d.Length)
            {
                case 4:
                    seconds = BinaryPrimitives.ReadUInt32BigEndian(d);
                    nanoseconds = 0;
                    break;
                case 8:
                    ulong packed = BinaryPrimitives.ReadUInt64BigEndian(d);
                    nanoseconds = (uint)(packed >> 34);
                    seconds = (long)(packed & 0x3_ffff_ffffUL);
                    break;
                default:
                    nanoseconds = BinaryPrimitives.ReadUInt32BigEndian(d);
                    seconds = BinaryPrimitives.ReadInt64BigEndian(d[4..]);
                    break;
            }
            if (nanoseconds >= 1_000_000_000) throw Malformed(offset, "timestamp nanoseconds below 10^9", $"{nanoseconds}");
            const long MinSeconds = -62135596800L;  // 0001-01-01T00:00:00Z
            const long MaxSeconds = 253402300799L;  // 9999-12-31T23:59:59Z
            if (seconds is < MinSeconds or > MaxSeconds) throw Malformed(offset, "timestamp within years 1..9999", $"{seconds} s since 1970");
            return DateTimeOffset.UnixEpoch.AddTicks(seconds * TimeSpan.TicksPerSecond + nanoseconds / 100);
        }
    }
}
