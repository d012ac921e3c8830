using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using BnCluster.Core.Data;
using BnCluster.Node.Commands;

namespace BnCluster.Node;

/// <summary>
/// RUN/run.json: what a run was (written atomically when it starts) and how it ended (rewritten atomically when it ends,
/// whether it completed, failed or was cancelled). Its "settings" use the flag names (without dashes) of the command
/// that made it, so `--config RUN/run.json` trains again with them (all but --out, --overwrite, --config and the console's
/// --log-level and --quiet, which say how to show a run, not what it trains). Layout:
/// <code>
/// { "format": 1, "command": "train", "version": "…", "host": "…", "started": "…Z", "ended": null|"…Z",
///   "outcome": "running"|"completed"|"failed"|"cancelled", "error": null|"one line",
///   "settings": { "dataset": …, "hidden": [256, 128], "lr": 0.001, … },
///   "dataset": { "name", "path", "sha256", "train": { "rows", "features", "classes" }, "test": { … } },
///   "layout": { "workers", "processes", "threads", "min_workers" },
///   "steps": null|N, "final": null|{ the last metrics.jsonl line } }
/// </code>
/// </summary>
public sealed class RunRecord
{
    public const string FileName = "run.json";
    public const int Format = 1;

    // A file for people and programs, not HTML: "1.0.0+commit" and paths stay as they are, not \u002B-escaped.
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly RunFolder _folder;
    private readonly JsonObject _document;
    private long _lastStep;

    private RunRecord(RunFolder folder, JsonObject document)
    {
        _folder = folder;
        _document = document;
    }

    /// <summary>The committed steps seen so far (the step sink reports them; kept for a run that does not complete).</summary>
    public void ObserveStep(long step) => Volatile.Write(ref _lastStep, step);

    /// <summary>Writes run.json with outcome "running".</summary>
    /// <param name="listen">The coordinator's --listen (null for `train`).</param>
    public static RunRecord Start(RunFolder folder, string command, TrainOptions options, DatasetSplit data, HostPort? listen = null)
    {
        var document = new JsonObject
        {
            ["format"] = Format,
            ["command"] = command,
            ["version"] = Version,
            ["host"] = Environment.MachineName,
            ["started"] = Timestamp(),
            ["ended"] = null,
            ["outcome"] = "running",
            ["error"] = null,
            ["settings"] = Settings(command, options, listen),
            ["dataset"] = new JsonObject
            {
                ["name"] = data.Train.Name,
                ["path"] = DatasetPath(options.Dataset),
                ["sha256"] = data.Sha256,
                ["train"] = Shape(data.Train),
                ["test"] = Shape(data.Test),
            },
            ["layout"] = new JsonObject
            {
                ["workers"] = options.Workers,
                ["processes"] = options.Processes,
                ["threads"] = options.Threads,
                ["min_workers"] = options.MinWorkers,
            },
            ["steps"] = null,
            ["final"] = null,
        };
        var record = new RunRecord(folder, document);
        record.Write();
        return record;
    }

    /// <summary>Rewrites run.json with how the run ended; <paramref name="steps"/> null = the last step observed.</summary>
    public void Finish(string outcome, string? error, long? steps = null)
    {
        _document["ended"] = Timestamp();
        _document["outcome"] = outcome;
        _document["error"] = error;
        _document["steps"] = steps ?? Volatile.Read(ref _lastStep);
        _document["final"] = _folder.Epochs.Count > 0 ? JsonNode.Parse(RunFolder.FormatMetricsLine(_folder.Epochs[^1])) : null;
        Write();
    }

    private void Write() => _folder.WriteTextAtomic(FileName, _document.ToJsonString(Indented) + "\n");

    /// <summary>The assembly's informational version (e.g. "1.0.0+commit").</summary>
    public static string Version =>
        typeof(RunRecord).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(RunRecord).Assembly.GetName().Version?.ToString() ?? "unknown";

    private static string Timestamp() => DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);

    private static JsonObject Shape(Dataset d) => new() { ["rows"] = d.Count, ["features"] = d.FeatureCount, ["classes"] = d.ClassCount };

    /// <summary>A file or folder dataset as a full path (so that --config works from another folder); a name as it is.</summary>
    private static string DatasetSetting(string dataset) =>
        File.Exists(dataset) || Directory.Exists(dataset) ? Path.GetFullPath(dataset) : dataset;

    /// <summary>Where the data was read: the full path, the folder a named IDX dataset was found in, or null (embedded digits).</summary>
    private static string? DatasetPath(string dataset)
    {
        if (File.Exists(dataset) || Directory.Exists(dataset)) return Path.GetFullPath(dataset);
        if (dataset == "digits") return null;
        return DatasetCatalog.DefaultSearchDirectories(dataset).FirstOrDefault(Directory.Exists);
    }

    /// <summary>Every flag of the command that describes the run, under its flag name without dashes (not --out, --overwrite, --config).</summary>
    public static JsonObject Settings(string command, TrainOptions o, HostPort? listen = null)
    {
        var settings = new JsonObject
        {
            ["dataset"] = DatasetSetting(o.Dataset),
            ["label-column"] = o.LabelColumn,
            ["hidden"] = new JsonArray(o.HiddenSizes.Select(h => (JsonNode?)h).ToArray()),
            ["activation"] = NameOf(OptionParsers.Activations, o.Activation),
            ["bn"] = NameOf(OptionParsers.BnPlacements, o.BatchNorm),
            ["batch"] = o.Batch,
            ["epochs"] = o.Epochs,
            ["max-steps"] = o.MaxSteps,
            ["optimizer"] = NameOf(OptionParsers.Optimizers, o.Optimizer),
            ["lr"] = o.LearningRate,
            ["beta1"] = o.Beta1,
            ["beta2"] = o.Beta2,
            ["opt-eps"] = o.OptimizerEpsilon,
            ["bn-momentum"] = o.BnMomentum,
            ["bn-eps"] = o.BnEpsilon,
            ["seed"] = o.Seed,
            ["workers"] = o.Workers,
        };
        if (command == "train")
        {
            settings["processes"] = o.Processes;
            settings["no-pin"] = !o.PinWorkers;
        }
        settings["min-workers"] = o.MinWorkers;
        settings["no-shared-memory"] = !o.SharedMemory;
        settings["no-sharded-update"] = !o.ShardedUpdate;
        settings["threads"] = o.Threads;
        settings["steps-every"] = o.StepsEvery;
        if (listen is not null) settings["listen"] = listen.ToString();
        return settings;
    }

    private static string NameOf<T>(IReadOnlyList<(string Name, T Value)> choices, T value) =>
        choices.First(c => EqualityComparer<T>.Default.Equals(c.Value, value)).Name;
}
