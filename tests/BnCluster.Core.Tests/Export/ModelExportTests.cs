using System.Collections.Concurrent;
using System.Text.Json;
using BnCluster.Core.Data;
using BnCluster.Core.Export;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Tests.Data;
using BnCluster.Core.Tests.Model;
using BnCluster.Core.Training;
using Microsoft.ML.OnnxRuntime;
using Xunit;

namespace BnCluster.Core.Tests.Export;

/// <summary>
/// `bncluster export`: models trained on digits, exported, run elsewhere (ONNX Runtime; numpy and torch on the
/// safetensors file) on the RAW rows of the training file (pixels 0..16), and compared with <see cref="InferenceModel"/>
/// on the rows the loader made of them: probabilities within 1e-5, identical predicted classes.
/// </summary>
public sealed class ModelExportTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const double Tolerance = 1e-5;
    private const float DigitsDivisor = 16f;

    /// <summary>A model configuration: hidden layout, and whether the model records preprocessing and has zero-variance inputs.</summary>
    public sealed record Case(BatchNormPlacement Bn, Activation Activation, bool Preprocessing, bool ZeroVariance)
    {
        public override string ToString() => $"bn {Bn}, {Activation}, {(Preprocessing ? "÷16" : "no preprocessing")}{(ZeroVariance ? ", zero variances" : "")}";
    }

    private static readonly Case[] AllCases =
    [
        new(BatchNormPlacement.Before, Activation.Relu, Preprocessing: true, ZeroVariance: false),
        new(BatchNormPlacement.After, Activation.Tanh, Preprocessing: true, ZeroVariance: true),
        new(BatchNormPlacement.None, Activation.Sigmoid, Preprocessing: false, ZeroVariance: true),
        new(BatchNormPlacement.After, Activation.Relu, Preprocessing: false, ZeroVariance: false),
    ];

    public static TheoryData<Case> Cases => new(AllCases);

    /// <summary>A trained model and what it makes of the digits test rows.</summary>
    private sealed record Trained(ModelDocument Document, int Features, int Rows, float[] RawRows, float[] Probabilities, int[] Predicted);

    private static readonly ConcurrentDictionary<Case, Lazy<Trained>> Models = new();

    private static Trained Model(Case c) => Models.GetOrAdd(c, key => new Lazy<Trained>(() => Train(key))).Value;

    private static Trained Train(Case c)
    {
        var split = DatasetCatalog.Load("digits", seed: 1);
        var spec = new NetworkSpec(split.Train.FeatureCount, [24, 16], split.Train.ClassCount, c.Activation, c.Bn);
        var options = new TrainerOptions(spec, new OptimizerSettings(OptimizerKind.Adam, 0.01f), BatchSize: 64, Epochs: 4, Seed: 7);
        var trainer = new Trainer(options);
        var result = trainer.RunAsync(split.Train, split.Test).GetAwaiter().GetResult();
        var document = result.ToDocument(split.Train.ClassNames, trainer.Metadata(result, "digits"));
        if (c.ZeroVariance)
        {
            // A model file may hold variance 0 (the model then only centres the feature): feature 0 is constant in
            // digits (stored as variance 1), 10 and 20 are not.
            foreach (int j in new[] { 0, 10, 20 }) document.Input.Var[j] = 0;
        }

        var test = split.Test;
        int f = test.FeatureCount;
        var loaded = new float[test.Count * f];
        test.CopyRows(0, test.Count, loaded);
        // The reference runs on the loader's values, by a model without preprocessing (so it does not matter whether
        // InferenceModel applies a recorded divisor itself); the exports get the file's raw values.
        using var reference = new InferenceModel(document);
        var (predicted, probabilities) = reference.PredictProbabilities(test);
        float divisor = c.Preprocessing ? DigitsDivisor : 1f;
        var raw = loaded.Select(v => v * divisor).ToArray(); // pixel/16 × 16: exact
        var exported = c.Preprocessing ? document with { Preprocessing = new InputPreprocessing(DigitsDivisor) } : document;
        Assert.True(result.Epochs[^1].TestAccuracy > 0.8, $"the model learned little: test accuracy {result.Epochs[^1].TestAccuracy}");
        return new Trained(exported, f, test.Count, raw, probabilities, predicted);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void OnnxModelInOnnxRuntimeGivesTheModelsProbabilitiesAndClasses(Case c)
    {
        var model = Model(c);
        byte[] onnx = OnnxExport.Serialize(model.Document);

        using var session = new InferenceSession(onnx);
        Assert.Equal([OnnxExport.InputName], session.InputMetadata.Keys);
        Assert.Equal([-1, model.Features], session.InputMetadata[OnnxExport.InputName].Dimensions);
        Assert.Equal(model.Document.Classes, JsonSerializer.Deserialize<string[]>(session.ModelMetadata.CustomMetadataMap["classes"]));

        using var input = OrtValue.CreateTensorValueFromMemory(model.RawRows, [model.Rows, model.Features]);
        using var runOptions = new RunOptions();
        using var outputs = session.Run(runOptions, [OnnxExport.InputName], [input], [OnnxExport.ProbabilitiesName, OnnxExport.LabelName]);
        var probabilities = outputs[0].GetTensorDataAsSpan<float>().ToArray();
        var labels = outputs[1].GetTensorDataAsSpan<long>().ToArray();

        Assert.Equal(model.Probabilities.Length, probabilities.Length);
        double maxDiff = MaxAbsDiff(model.Probabilities, probabilities);
        output.WriteLine($"ONNX Runtime, {c}: largest probability difference {maxDiff:G3} over {model.Rows} rows");
        Assert.True(maxDiff <= Tolerance, $"largest probability difference {maxDiff:G3}");
        Assert.Equal(model.Predicted, labels.Select(l => (int)l));
    }

    [Fact]
    public void OnnxBatchDimensionIsDynamic()
    {
        var model = Model(AllCases[0]);
        using var session = new InferenceSession(OnnxExport.Serialize(model.Document));
        using var runOptions = new RunOptions();
        foreach (int rows in new[] { 1, 7 })
        {
            using var input = OrtValue.CreateTensorValueFromMemory(model.RawRows.AsSpan(0, rows * model.Features).ToArray(), [rows, model.Features]);
            using var outputs = session.Run(runOptions, [OnnxExport.InputName], [input], [OnnxExport.LabelName]);
            Assert.Equal(model.Predicted.Take(rows), outputs[0].GetTensorDataAsSpan<long>().ToArray().Select(l => (int)l));
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void SafetensorsForwardInNumpyGivesTheModelsProbabilitiesAndClasses(Case c)
    {
        SystemPython.RequireModule("numpy", "python3-numpy");
        var model = Model(c);
        using var dir = new TempDirectory();
        var (path, raw, expected) = WriteFiles(dir, model);

        var report = JsonDocument.Parse(SystemPython.RunChecked(NumpyForward, path, raw, expected).StdoutText).RootElement;
        double maxDiff = report.GetProperty("max_abs_diff").GetDouble();
        output.WriteLine($"numpy, {c}: largest probability difference {maxDiff:G3} over {model.Rows} rows");
        Assert.True(maxDiff <= Tolerance, $"largest probability difference {maxDiff:G3}");
        Assert.Equal(model.Predicted, report.GetProperty("labels").EnumerateArray().Select(l => l.GetInt32()));
        Assert.Equal(model.Document.Classes, report.GetProperty("classes").EnumerateArray().Select(l => l.GetString()));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void SafetensorsLoadsIntoTorchSequentialWithTheReadmeSnippet(int caseIndex)
    {
        SystemPython.RequireModule("torch", "python3-torch");
        var c = AllCases[caseIndex];
        var model = Model(c);
        using var dir = new TempDirectory();
        var (path, raw, expected) = WriteFiles(dir, model);

        var report = JsonDocument.Parse(SystemPython.RunChecked(ReadmeSnippet + TorchCheck, path, raw, expected).StdoutText).RootElement;
        double maxDiff = report.GetProperty("max_abs_diff").GetDouble();
        output.WriteLine($"torch, {c}: largest probability difference {maxDiff:G3} over {model.Rows} rows");
        Assert.True(maxDiff <= Tolerance, $"largest probability difference {maxDiff:G3}");
        Assert.Equal(model.Predicted, report.GetProperty("labels").EnumerateArray().Select(l => l.GetInt32()));
        Assert.Equal(model.Document.Classes, report.GetProperty("classes").EnumerateArray().Select(l => l.GetString()));
    }

    [Fact]
    public void SafetensorsHeaderIsStandard()
    {
        var model = Model(AllCases[0]);
        byte[] file = SafetensorsExport.Serialize(model.Document);
        ulong headerLength = BitConverter.ToUInt64(file, 0);
        Assert.Equal(0UL, headerLength % 8);
        using var header = JsonDocument.Parse(file.AsMemory(8, (int)headerLength));
        var tensors = header.RootElement.EnumerateObject().Where(p => p.Name != "__metadata__").ToList();
        // bn before: 0 input BatchNorm1d, 1 Linear (no bias), 2 BatchNorm1d, 3 ReLU, 4 Linear, 5 BatchNorm1d, 6 ReLU, 7 Linear
        string[] bn(int k) => [$"{k}.weight", $"{k}.bias", $"{k}.running_mean", $"{k}.running_var", $"{k}.num_batches_tracked"];
        Assert.Equal([.. bn(0), "1.weight", .. bn(2), "4.weight", .. bn(5), "7.weight", "7.bias"], tensors.Select(t => t.Name));
        Assert.Equal("I64", tensors.Single(t => t.Name == "2.num_batches_tracked").Value.GetProperty("dtype").GetString());
        Assert.Equal(0, tensors.Single(t => t.Name == "2.num_batches_tracked").Value.GetProperty("shape").GetArrayLength());
        Assert.Equal([16, 24], tensors.Single(t => t.Name == "4.weight").Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()));
        long end = 0;
        foreach (var t in tensors)
        {
            var offsets = t.Value.GetProperty("data_offsets").EnumerateArray().Select(o => o.GetInt64()).ToArray();
            Assert.Equal(end, offsets[0]);
            end = offsets[1];
        }
        Assert.Equal(file.Length - 8 - (long)headerLength, end);
        Assert.Equal("pt", header.RootElement.GetProperty("__metadata__").GetProperty("format").GetString());
    }

    [Fact]
    public void ExportRefusesAMalformedDocumentAndWritesNothing()
    {
        var model = Model(AllCases[0]);
        var layers = model.Document.Layers.ToList();
        layers.RemoveAt(1); // a dense layer straight into another
        var broken = model.Document with { Layers = layers };
        using var dir = new TempDirectory();
        string path = Path.Combine(dir.Path, "model.onnx");
        Assert.Throws<FormatException>(() => ModelExport.Write(broken, ExportFormat.Onnx, path));
        Assert.Throws<FormatException>(() => ModelExport.Write(model.Document with { Preprocessing = new InputPreprocessing(0) }, ExportFormat.Safetensors, path));
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));
    }

    [Fact]
    public void DefaultOutputIsNextToTheModel()
    {
        Assert.Equal(Path.Combine("runs", "a", "model.onnx"), ModelExport.DefaultPath(Path.Combine("runs", "a", "model.bnc"), ExportFormat.Onnx));
        Assert.Equal(Path.Combine("runs", "a", "model.safetensors"), ModelExport.DefaultPath(Path.Combine("runs", "a", "model.bnc"), ExportFormat.Safetensors));
    }

    private static (string Model, string Raw, string Expected) WriteFiles(TempDirectory dir, Trained model)
    {
        string path = Path.Combine(dir.Path, "model.safetensors");
        ModelExport.Write(model.Document, ExportFormat.Safetensors, path);
        string raw = Path.Combine(dir.Path, "raw.f32");
        string expected = Path.Combine(dir.Path, "expected.f32");
        File.WriteAllBytes(raw, ExportedInput.LittleEndian(model.RawRows));
        File.WriteAllBytes(expected, ExportedInput.LittleEndian(model.Probabilities));
        return (path, raw, expected);
    }

    private static double MaxAbsDiff(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();

    /// <summary>
    /// Reads the file with json + numpy only and runs the forward pass in float64: checks the layout (header padded to
    /// 8, tensors back to back over the whole data, names = the state_dict of the modules) on the way.
    /// argv: model.safetensors, raw rows (f32), expected probabilities (f32). Prints {max_abs_diff, labels, classes}.
    /// </summary>
    private const string NumpyForward = """
        import json, struct, sys
        import numpy as np
        path, raw_path, expected_path = sys.argv[1:4]
        data = open(path, "rb").read()
        (n,) = struct.unpack("<Q", data[:8])
        assert n % 8 == 0, f"header length {n} is not a multiple of 8"
        header = json.loads(data[8:8 + n].decode("utf-8"))
        body = data[8 + n:]
        meta = header.pop("__metadata__")
        assert meta["format"] == "pt", meta
        modules = json.loads(meta["bncluster.modules"])
        dtypes = {"F32": "<f4", "I64": "<i8"}
        tensors, end = {}, 0
        for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            a, b = t["data_offsets"]
            assert a == end, f"{name} starts at {a}, the tensor before it ends at {end}"
            tensors[name] = np.frombuffer(body[a:b], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
            end = b
        assert end == len(body), f"tensors end at {end}, the data at {len(body)}"
        names = []
        for k, (kind, args) in enumerate(modules):
            if kind == "Linear":
                names += [f"{k}.weight"] + ([f"{k}.bias"] if args["bias"] else [])
            elif kind == "BatchNorm1d":
                names += [f"{k}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
        assert sorted(names) == sorted(tensors), (names, sorted(tensors))
        x = np.fromfile(raw_path, dtype="<f4").reshape(-1, modules[0][1]["num_features"]).astype(np.float64)
        for k, (kind, args) in enumerate(modules):
            p = {s.split(".", 1)[1]: v.astype(np.float64) for s, v in tensors.items() if s.split(".", 1)[0] == str(k)}
            if kind == "Linear":
                x = x @ p["weight"].T + (p["bias"] if args["bias"] else 0)
            elif kind == "BatchNorm1d":
                x = (x - p["running_mean"]) / np.sqrt(p["running_var"] + args["eps"]) * p["weight"] + p["bias"]
            elif kind == "ReLU":
                x = np.maximum(x, 0)
            elif kind == "Tanh":
                x = np.tanh(x)
            elif kind == "Sigmoid":
                x = 1 / (1 + np.exp(-x))
            else:
                raise SystemExit(f"unknown module {kind}")
        e = np.exp(x - x.max(axis=1, keepdims=True))
        probabilities = e / e.sum(axis=1, keepdims=True)
        expected = np.fromfile(expected_path, dtype="<f4").reshape(probabilities.shape)
        print(json.dumps({"max_abs_diff": float(np.abs(probabilities - expected).max()),
                          "labels": probabilities.argmax(axis=1).tolist(),
                          "classes": json.loads(meta["bncluster.classes"])}))
        """;

    /// <summary>The README's "Export" section shows exactly these lines: keep the two the same.</summary>
    private const string ReadmeSnippet = """"
        import json, struct, torch

        def load_bncluster(path):
            """A `bncluster export --format safetensors` file as a torch.nn.Sequential in eval mode, and its class names."""
            data = open(path, "rb").read()
            n = struct.unpack("<Q", data[:8])[0]
            header = json.loads(data[8:8 + n])
            meta = header.pop("__metadata__")
            model = torch.nn.Sequential(*[getattr(torch.nn, kind)(**args) for kind, args in json.loads(meta["bncluster.modules"])])
            dtypes = {"F32": torch.float32, "I64": torch.int64}
            model.load_state_dict({name: torch.frombuffer(bytearray(data[8 + n + t["data_offsets"][0]:8 + n + t["data_offsets"][1]]),
                                                          dtype=dtypes[t["dtype"]]).reshape(t["shape"]) for name, t in header.items()})
            return model.eval(), json.loads(meta["bncluster.classes"])

        """";

    /// <summary>After the snippet: the probabilities of the raw rows. argv as <see cref="NumpyForward"/>.</summary>
    private const string TorchCheck = """
        import sys
        import numpy as np
        model, classes = load_bncluster(sys.argv[1])
        assert isinstance(model, torch.nn.Sequential) and not model.training
        raw = torch.from_numpy(np.fromfile(sys.argv[2], dtype="<f4")).reshape(-1, model[0].num_features)
        with torch.no_grad():
            probabilities = torch.softmax(model(raw), dim=1)
        expected = torch.from_numpy(np.fromfile(sys.argv[3], dtype="<f4")).reshape(probabilities.shape)
        print(json.dumps({"max_abs_diff": float((probabilities - expected).abs().max()),
                          "labels": probabilities.argmax(dim=1).tolist(), "classes": classes}))
        """;
}
