using System.Globalization;
using System.Text;
using System.Text.Json;
using BnCluster.Core.Data;
using BnCluster.Core.Model;
using BnCluster.Node.Commands;

namespace BnCluster.Node.Backends;

/// <summary>`bncluster eval` and `bncluster predict`: a model file applied to a dataset's test split or to a CSV of features.</summary>
public static class ModelBackends
{
    /// <summary>
    /// Loss and accuracy on the dataset's test split. The split uses the seed stored in the model's training
    /// metadata (digits and CSV splits are seeded), so the rows are the ones the run was tested on. Another dataset
    /// file than the model's (by SHA-256) is a warning: its "test split" may hold rows the model was trained on.
    /// </summary>
    public static Task<int> Eval(EvalOptions options, CliContext context, CancellationToken cancel)
    {
        var document = ModelFile.Read(options.ModelPath);
        int seed = document.Training.TryGetValue("seed", out var s) && s is long or int or ulong
            ? unchecked((int)Convert.ToInt64(s, CultureInfo.InvariantCulture)) : 1;
        var data = DatasetCatalog.Load(options.Dataset, seed, options.LabelColumn);
        cancel.ThrowIfCancellationRequested();
        CheckShape(options.ModelPath, document, options.Dataset, data.Test);
        CheckSampleShape(options.ModelPath, document, options.Dataset, data);
        if (document.Training.TryGetValue("dataset_sha256", out var trained) && trained is string trainedSha
            && !string.Equals(trainedSha, data.Sha256, StringComparison.OrdinalIgnoreCase))
        {
            string trainedName = document.Training.TryGetValue("dataset", out var n) && n is string name ? $"{name}, " : "";
            context.Error.WriteLine($"bncluster: warning: dataset {options.Dataset} (sha256 {data.Sha256}) is not the one {options.ModelPath} " +
                                    $"was trained on ({trainedName}sha256 {trainedSha}); its test split may hold training rows");
        }
        using var model = new InferenceModel(document);
        var result = model.Evaluate(data.Test);
        if (options.Json)
            context.Out.WriteLine(JsonText.Write(json =>
            {
                json.WriteStartObject();
                json.WriteNumber("accuracy", result.Accuracy);
                json.WriteNumber("loss", result.Loss);
                json.WriteNumber("count", result.Count);
                json.WriteEndObject();
            }));
        else
            context.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"test loss {result.Loss:F4}, accuracy {result.Accuracy:F4} on {result.Count} rows"));
        return Task.FromResult(Cli.ExitOk);
    }

    /// <summary>
    /// One line per CSV row (see `predict --help` for the formats). The rows are raw values in the training file's own
    /// format: the model's preprocessing (the loader's scaling, e.g. ÷16 for the digits) is applied here, its input
    /// normalization by the model.
    /// </summary>
    public static Task<int> Predict(PredictOptions options, CliContext context, CancellationToken cancel)
    {
        var document = ModelFile.Read(options.ModelPath);
        int features = document.Input.Features;
        float[] rows = CsvDatasetReader.ReadFeatures(options.InputPath, features); // another column count: one line, exit 2
        cancel.ThrowIfCancellationRequested();
        document.Preprocessing?.Apply(rows);
        int count = rows.Length / features;
        var input = new Dataset(Path.GetFileName(options.InputPath), rows, new int[count], features, document.Classes);
        using var model = new InferenceModel(document);
        var classes = document.Classes;
        int k = classes.Count;
        var (predicted, probabilities) = options.Probabilities ? model.PredictProbabilities(input) : (model.Predict(input), Array.Empty<float>());
        var output = context.Out;
        if (options.Probabilities && !options.Json)
            output.WriteLine("class\t" + string.Join('\t', classes));
        for (int r = 0; r < count; r++)
        {
            int row = r;
            if (options.Json)
                output.WriteLine(JsonText.Write(json => WriteRow(json, classes, predicted[row], options.Probabilities ? probabilities.AsSpan(row * k, k) : default)));
            else if (options.Probabilities)
            {
                var line = new StringBuilder(classes[predicted[r]]);
                foreach (float v in probabilities.AsSpan(r * k, k)) line.Append('\t').Append(v.ToString("F6", CultureInfo.InvariantCulture));
                output.WriteLine(line.ToString());
            }
            else output.WriteLine(classes[predicted[r]]);
        }
        return Task.FromResult(Cli.ExitOk);
    }

    /// <summary>{"class": name} and, when <paramref name="probabilities"/> is not empty, "probabilities": {name: p, …}.</summary>
    private static void WriteRow(Utf8JsonWriter json, IReadOnlyList<string> classes, int predicted, ReadOnlySpan<float> probabilities)
    {
        json.WriteStartObject();
        json.WriteString("class", classes[predicted]);
        if (!probabilities.IsEmpty)
        {
            json.WriteStartObject("probabilities");
            for (int c = 0; c < probabilities.Length; c++) json.WriteNumber(classes[c], probabilities[c]);
            json.WriteEndObject();
        }
        json.WriteEndObject();
    }

    /// <summary>The sample shape the model was trained on (its training map's input_shape), or null when it has none.</summary>
    private static long[]? TrainedSampleShape(ModelDocument model) =>
        model.Training.TryGetValue("input_shape", out var value) && value is List<object?> dims && dims.All(d => d is long)
            ? dims.Select(d => (long)d!).ToArray() : null;

    private static void CheckSampleShape(string modelPath, ModelDocument model, string datasetName, DatasetSplit data)
    {
        if (TrainedSampleShape(model) is not { } trained || data.SampleShape is not { } given) return;
        if (!trained.SequenceEqual(given.Select(d => (long)d)))
            throw new CliInputException($"{modelPath}: the model was trained on samples of {string.Join('×', trained)} but dataset {datasetName} has {string.Join('×', given)}");
    }

    private static void CheckShape(string modelPath, ModelDocument model, string datasetName, Dataset data)
    {
        if (model.Input.Features != data.FeatureCount)
            throw new CliInputException($"{modelPath}: the model takes {model.Input.Features} features but dataset {datasetName} has {data.FeatureCount}");
        if (model.Classes.Count != data.ClassCount)
            throw new CliInputException($"{modelPath}: the model has {model.Classes.Count} classes but dataset {datasetName} has {data.ClassCount}");
    }
}
