using System.Globalization;
using BnCluster.Node.Commands;
using FsCheck;
using FsCheck.Fluent;

namespace BnCluster.Node.Tests;

/// <summary>
/// Random values (strings, huge, tiny, negative, NaN, ±∞ numbers) thrown at every numeric option of `train`: each gets
/// exit 2 with exactly one stderr line naming the option, or is accepted with a value training can use; a few accepted
/// ones train a real model on digits.
/// </summary>
public sealed class NumericOptionPropertyTests
{
    /// <summary>A numeric option of `train`, the extra flags that keep other checks out of its way, and what an accepted value must be.</summary>
    private sealed record NumericOption(string Flag, string[] Context, Func<TrainOptions, bool> Usable);

    private static bool Float32Normal(double v) => float.IsNormal((float)v);

    private static readonly NumericOption[] Options =
    [
        new("--batch", [], o => o.Batch >= o.Workers),
        new("--epochs", [], o => o.Epochs >= 1),
        new("--max-steps", [], o => o.MaxSteps >= 0),
        new("--lr", [], o => o.LearningRate > 0 && Float32Normal(o.LearningRate)),
        new("--beta1", [], o => o.Beta1 >= 0 && (float)o.Beta1 < 1 && (o.Beta1 == 0 || Float32Normal(o.Beta1))),
        new("--beta2", [], o => o.Beta2 >= 0 && (float)o.Beta2 < 1 && (o.Beta2 == 0 || Float32Normal(o.Beta2))),
        new("--opt-eps", [], o => o.OptimizerEpsilon is > 0 and <= 1 && Float32Normal(o.OptimizerEpsilon)),
        new("--bn-momentum", [], o => o.BnMomentum is >= 0 and <= 1 && (o.BnMomentum == 0 || Float32Normal(o.BnMomentum))),
        new("--bn-eps", [], o => o.BnEpsilon is > 0 and <= 1 && Float32Normal(o.BnEpsilon)),
        new("--seed", [], _ => true),
        new("--workers", ["--batch", "1024"], o => o.Workers is >= 1 and <= OptionParsers.MaxWorkers),
        new("--min-workers", ["--workers", "4"], o => o.MinWorkers >= 1 && o.MinWorkers <= o.Workers),
        new("--threads", [], o => o.Threads is >= 1 and <= OptionParsers.MaxThreads),
        new("--hidden", [], o => o.HiddenSizes.Count > 0 && o.HiddenSizes.All(h => h > 0)),
    ];

    private static readonly Gen<string> Numbers = Gen.OneOf(
        Gen.Elements("0", "-0", "1", "-1", "2", "0.5", "1e-50", "1e-40", "1e-38", "1e300", "-1e300", "1e-300", "NaN", "Infinity",
            "-Infinity", "∞", "2147483647", "2147483648", "-2147483648", "-2147483649", "4294967296", "9223372036854775807",
            "9223372036854775808", "99999999999999999999999", "0.99999999999", "0x10", "1,000", "1e3", " 3", "3 ", "+5", "١٢",
            "1.5", ".5", "5.", "1e", "--", "-x", "", " ", "\n", "1\n2", "64,32", "64,,32", "64;32", "0,5", "1,-1", "2000000000"),
        Gen.Choose(-1000, 1000).Select(i => i.ToString(CultureInfo.InvariantCulture)),
        ArbMap.Default.GeneratorFor<long>().Select(l => l.ToString(CultureInfo.InvariantCulture)),
        ArbMap.Default.GeneratorFor<double>().Select(d => d.ToString("R", CultureInfo.InvariantCulture)),
        ArbMap.Default.GeneratorFor<long>().Select(bits => BitConverter.Int64BitsToDouble(bits).ToString("R", CultureInfo.InvariantCulture)),
        Gen.Choose(0, 2000).Select(i => (i / 1000.0).ToString("R", CultureInfo.InvariantCulture)),
        Gen.ArrayOf(Gen.Choose(-3, 300)).Select(sizes => string.Join(',', sizes)),
        ArbMap.Default.GeneratorFor<string>().Select(s => s ?? ""));

    private static (int Exit, string Err, TrainOptions? Options) Parse(string[] args)
    {
        TrainOptions? captured = null;
        var backends = new CliBackends { Train = (o, _, _) => { captured = o; return Task.FromResult(0); } };
        var stderr = new StringWriter();
        int exit = Cli.Run(args, TextWriter.Null, stderr, backends, environment: new Dictionary<string, string>());
        return (exit, stderr.ToString(), captured);
    }

    /// <summary>
    /// `--flag=VALUE` keeps a value that starts with a dash a value (as a person would quote it): the property is about
    /// the option's checks, not about which tokens look like options.
    /// </summary>
    [Fact]
    public void Every_numeric_option_of_train_gives_exit_2_and_one_line_naming_it_or_a_usable_value()
    {
        var cases = Gen.Elements(Options).SelectMany(option => Numbers.Select(value => (option, value)));
        Prop.ForAll(cases.ToArbitrary(), c =>
        {
            var (option, value) = c;
            var (exit, err, parsed) = Parse(["train", .. option.Context, $"{option.Flag}={value}"]);
            string describe = $"{option.Flag}={value}: exit {exit}, stderr {err}";
            if (exit == 0)
                return Prop.Label(err == "" && parsed is not null && option.Usable(parsed), describe);
            var lines = err.Split('\n');
            return Prop.Label(exit == 2 && lines.Length == 2 && lines[1] == "" && lines[0].StartsWith($"bncluster: {option.Flag}: ", StringComparison.Ordinal)
                              && parsed is null, describe);
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(2000));
    }

    /// <summary>Values the parser accepts, drawn at random for one option at a time, train a real model (or are refused against the dataset).</summary>
    [Fact]
    public void Accepted_values_train_a_model_on_digits()
    {
        var accepted = Gen.OneOf(
            Gen.Choose(1, 2000).Select(v => ("--batch", v.ToString(CultureInfo.InvariantCulture))),
            Gen.Choose(1, 3).Select(v => ("--epochs", v.ToString(CultureInfo.InvariantCulture))),
            Gen.Choose(0, 4).Select(v => ("--max-steps", v.ToString(CultureInfo.InvariantCulture))),
            Gen.Elements("1e-30", "1e-6", "0.5", "10").Select(v => ("--lr", v)),
            Gen.Elements("0", "0.5", "0.9999999").Select(v => ("--beta1", v)),
            Gen.Elements("0", "0.5", "0.9999999").Select(v => ("--beta2", v)),
            Gen.Elements("1e-30", "1e-3", "1").Select(v => ("--opt-eps", v)),
            Gen.Elements("0", "1e-30", "1").Select(v => ("--bn-momentum", v)),
            Gen.Elements("1e-30", "1e-3", "1").Select(v => ("--bn-eps", v)),
            ArbMap.Default.GeneratorFor<int>().Select(v => ("--seed", v.ToString(CultureInfo.InvariantCulture))),
            Gen.Choose(1, 3).Select(v => ("--threads", v.ToString(CultureInfo.InvariantCulture))),
            Gen.ArrayOf(Gen.Choose(1, 40), 2).Select(v => ("--hidden", string.Join(',', v))));
        Prop.ForAll(accepted.ToArbitrary(), c =>
        {
            var (flag, value) = c;
            using var dir = new TempDir();
            string run = dir.File("run");
            var stderr = new StringWriter();
            string[] small = ["--workers=1", "--threads=1", "--epochs=1", "--max-steps=3"];
            string[] args = ["train", .. small.Where(f => !f.StartsWith(flag + "=", StringComparison.Ordinal)), "--out", run, $"{flag}={value}"];
            int exit = Cli.Run(args, TextWriter.Null, stderr, Program.Backends, environment: new Dictionary<string, string>());
            string err = stderr.ToString();
            bool trained = exit == 0 && File.Exists(Path.Combine(run, RunFolder.ModelFileName));
            // --batch above the 1437 training rows of digits is refused once the dataset is loaded, with one line.
            bool refused = exit == 2 && flag == "--batch" && int.Parse(value, CultureInfo.InvariantCulture) > 1437
                           && err == $"bncluster: --batch: {value} is more than the 1437 training rows of digits" + Environment.NewLine
                           && !Directory.Exists(run);
            return Prop.Label(trained || refused, $"{flag}={value}: exit {exit}, stderr {err}");
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(12));
    }

    [Fact]
    public void The_default_batch_on_a_smaller_dataset_trains_full_batches_and_a_given_one_must_fit()
    {
        using var dir = new TempDir();
        string csv = dir.File("small.csv");
        File.WriteAllText(csv, "a,b,label\n" + string.Concat(Enumerable.Range(0, 20).Select(i => $"{i % 7},{i % 3},{i % 2}\n")));
        var stderr = new StringWriter();
        int exit = Cli.Run(["train", "--dataset", csv, "--workers", "2", "--epochs", "1", "--hidden", "4", "--out", dir.File("run")],
            TextWriter.Null, stderr, Program.Backends, environment: new Dictionary<string, string>());
        Assert.True(exit == 0, stderr.ToString());
        using var record = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir.File("run"), RunRecord.FileName)));
        Assert.Equal(16, record.RootElement.GetProperty("settings").GetProperty("batch").GetInt32()); // 20 rows, 4 of them test
        Assert.Equal(1, record.RootElement.GetProperty("steps").GetInt64());

        stderr = new StringWriter();
        exit = Cli.Run(["train", "--dataset", csv, "--workers", "2", "--batch", "17", "--out", dir.File("run2")],
            TextWriter.Null, stderr, Program.Backends, environment: new Dictionary<string, string>());
        Assert.Equal(2, exit);
        Assert.Equal("bncluster: --batch: 17 is more than the 16 training rows of small.csv" + Environment.NewLine, stderr.ToString());
    }

    [Theory]
    [InlineData("1")]
    [InlineData("2")]
    public void Bench_on_a_dataset_refuses_a_batch_above_its_training_rows(string workers)
    {
        var stderr = new StringWriter();
        int exit = Cli.Run(["bench", "--dataset", "digits", "--batch", "2147483000", "--workers", workers, "--steps", "1", "--threads", "1"],
            TextWriter.Null, stderr, Program.Backends, environment: new Dictionary<string, string>());
        Assert.Equal(2, exit);
        Assert.Equal("bncluster: --batch: 2147483000 is more than the 1437 training rows of digits" + Environment.NewLine, stderr.ToString());
    }

    [Theory]
    [InlineData("--batch: 2147483000 is more than the 1437 training rows of digits", "--batch", "2147483000")]
    [InlineData("--hidden: layer 1 would hold 64×2000000000 weights, more than one array can hold (2147483591)", "--hidden", "2000000000")]
    [InlineData("--batch: 128 rows × 20000000 units of layer 2 are more values than one array can hold (2147483591)", "--hidden", "1,20000000")]
    public void Settings_too_large_for_the_dataset_are_refused_before_anything_is_created(string expected, string flag, string value)
    {
        using var dir = new TempDir();
        string run = dir.File("run");
        var stderr = new StringWriter();
        int exit = Cli.Run(["train", "--workers", "1", "--out", run, flag, value], TextWriter.Null, stderr, Program.Backends,
            environment: new Dictionary<string, string>());
        Assert.Equal(2, exit);
        Assert.Equal("bncluster: " + expected + Environment.NewLine, stderr.ToString());
        Assert.False(Directory.Exists(run));
    }
}
