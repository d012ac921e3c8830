using System.Globalization;
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
    /// metadata (digits and CSV splits are seeded), so the rows are the ones the run was tested on.
    /// </summary>
    public static Task<int> Eval(EvalOptions options, CliContext context, CancellationToken cancel)
    {
        var document = ModelFile.Read(options.ModelPath);
        int seed = document.Training.TryGetValue("seed", out var s) && s is long or int or ulong
            ? unchecked((int)Convert.ToInt64(s, CultureInfo.InvariantCulture)) : 1;
        var data = DatasetCatalog.Load(options.Dataset, seed, options.LabelColumn);
        cancel.ThrowIfCancellationRequested();
        CheckShape(options.ModelPath, document, options.Dataset, data.Test);
        using var model = new InferenceModel(document);
        var result = model.Evaluate(data.Test);
        if (options.Json)
        {
            using var buffer = new MemoryStream();
            using (var json = new Utf8JsonWriter(buffer))
            {
                json.WriteStartObject();
                json.WriteNumber("accuracy", result.Accuracy);
                json.WriteNumber("loss", result.Loss);
                json.WriteNumber("count", result.Count);
                json.WriteEndObject();
            }
            context.Out.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
        }
        else
            context.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"test loss {result.Loss:F4}, accuracy {result.Accuracy:F4} on {result.Count} rows"));
        return Task.FromResult(Cli.ExitOk);
    }

    /// <summary>
    /// One class name per CSV row. The CSV holds raw feature values on the scale the dataset reader produces
    /// (pixels already divided to [0, 1], as in the training data); the model applies its own input normalization.
    /// </summary>
    public static Task<int> Predict(PredictOptions options, CliContext context, CancellationToken cancel)
    {
        var document = ModelFile.Read(options.ModelPath);
        int features = document.Input.Features;
        var rows = CsvDatasetReader.ReadFeatures(options.InputPath, features);
        cancel.ThrowIfCancellationRequested();
        int count = rows.Length / features;
        var input = new Dataset(Path.GetFileName(options.InputPath), rows, new int[count], features, document.Classes);
        using var model = new InferenceModel(document);
        var predicted = model.Predict(input);
        if (options.Json)
        {
            using var buffer = new MemoryStream();
            using (var json = new Utf8JsonWriter(buffer))
            {
                json.WriteStartArray();
                foreach (int c in predicted) json.WriteStringValue(document.Classes[c]);
                json.WriteEndArray();
            }
            context.Out.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
        }
        else
            foreach (int c in predicted) context.Out.WriteLine(document.Classes[c]);
        return Task.FromResult(Cli.ExitOk);
    }

    private static void CheckShape(string modelPath, ModelDocument model, string datasetName, Dataset data)
    {
        if (model.Input.Features != data.FeatureCount)
            throw new CliInputException($"{modelPath}: the model takes {model.Input.Features} features but dataset {datasetName} has {data.FeatureCount}");
        if (model.Classes.Count != data.ClassCount)
            throw new CliInputException($"{modelPath}: the model has {model.Classes.Count} classes but dataset {datasetName} has {data.ClassCount}");
    }
}
