using System.Diagnostics;
using System.Globalization;
using BnCluster.Core.Data;
using BnCluster.Node.Commands;

namespace BnCluster.Node.Study;

/// <summary>`study`: the dataset, the settings (--quick or full), how many runs at a time, the output folder.</summary>
public sealed record StudyOptions(string Dataset, bool Quick, string OutDirectory, int Parallel);

/// <summary>`bncluster study`: load the dataset, run every experiment of the study, write the report folder.</summary>
public static class StudyBackend
{
    /// <summary>The fewest training rows the study runs on (its largest batch is 1024).</summary>
    public const int MinTrainRows = 100;

    public static async Task<int> RunAsync(StudyOptions options, CliContext context, CancellationToken cancel)
    {
        var settings = options.Quick ? StudySettings.Quick : StudySettings.Full;
        var data = DatasetCatalog.Load(options.Dataset, seed: 1);
        if (data.Train.Count < MinTrainRows)
            throw new CliInputException($"--dataset: {options.Dataset} has {data.Train.Count} training rows; the study needs at least {MinTrainRows}");
        if (data.Test.Count == 0) throw new CliInputException($"--dataset: {options.Dataset} has no test rows");
        // The report folder is made (and shown writable) before the runs, so a wrong --out costs seconds, not the study.
        StudyReport.Prepare(options.OutDirectory);
        var train = StudyRunner.Subset(data.Train, settings.TrainRows, seed: 1);
        var runs = settings.Runs();
        context.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"bncluster study: {runs.Count} runs on {options.Dataset} ({train.Count} training rows, {data.Test.Count} test rows), {options.Parallel} at a time"));

        var wall = Stopwatch.StartNew();
        var gate = new object();
        var runner = new StudyRunner(settings, train, data.Test, options.Parallel)
        {
            RunFinished = (run, result, done, total) =>
            {
                string outcome = result.Diverged ? "diverged" : string.Create(CultureInfo.InvariantCulture, $"test {100 * result.TestAccuracy:F1}%");
                lock (gate)
                    context.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"[{done}/{total}] {run.Experiment} {run.Variant} {run.Optimizer.ToString().ToLowerInvariant()} lr {run.LearningRate:G3} layers {run.HiddenLayers} batch {run.Batch} momentum {run.Momentum:G3} seed {run.Seed}: {outcome} ({result.Seconds:F1} s)"));
            },
        };
        var results = await runner.RunAllAsync(runs, cancel).ConfigureAwait(false);
        wall.Stop();

        var studyContext = new StudyContext(options.Dataset, train.Count, data.Train.Count, data.Test.Count, settings, options.Parallel, wall.Elapsed.TotalSeconds);
        StudyReport.Write(options.OutDirectory, studyContext, results);
        foreach (var (experiment, verdict) in StudyVerdicts.All(results))
            context.Out.WriteLine($"{experiment}: {verdict}");
        context.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{results.Count} runs in {wall.Elapsed.TotalSeconds:F0} s; report {Path.Combine(options.OutDirectory, StudyReport.ReportFileName)}"));
        return Cli.ExitOk;
    }
}
