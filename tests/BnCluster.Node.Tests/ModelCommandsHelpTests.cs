using BnCluster.Node.Commands;

namespace BnCluster.Node.Tests;

/// <summary>`eval --help` and `predict --help` show an example, and predict's say what --proba and --json print.</summary>
public sealed class ModelCommandsHelpTests
{
    private static string Help(string command)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.Equal(Cli.ExitOk, Cli.Run([command, "--help"], stdout, stderr, new CliBackends()));
        Assert.Equal("", stderr.ToString());
        return stdout.ToString();
    }

    /// <summary>The help text with every run of white space as one space (the help wraps its lines).</summary>
    private static string Flat(string help) => string.Join(' ', help.Split((char[])[' ', '\n', '\r'], StringSplitOptions.RemoveEmptyEntries));

    [Fact]
    public void Eval_help_shows_an_example_and_the_checks()
    {
        string help = Flat(Help("eval"));
        Assert.Contains("Examples: bncluster eval --model runs/digits/model.bnc --dataset digits", help);
        Assert.Contains("checksum", help);
        Assert.Contains("SHA-256", help);
    }

    [Fact]
    public void Predict_help_shows_an_example_and_what_json_and_proba_print()
    {
        string flat = Flat(Help("predict"));
        Assert.Contains("Examples: bncluster predict --model runs/digits/model.bnc --input rows.csv bncluster predict --model runs/digits/model.bnc --input rows.csv --proba --json", flat);
        Assert.Contains("JSON lines instead of text: one object per row, {\"class\": \"7\"}", flat);
        Assert.Contains("{\"class\": \"7\", \"probabilities\": {\"0\": 0.0001, …}}", flat);
        Assert.Contains("tab-separated table", flat);
        Assert.Contains("Rows are raw values in the training file's own format", flat);
    }

    [Fact]
    public void Predict_passes_proba_to_its_backend()
    {
        PredictOptions? seen = null;
        var backends = new CliBackends { Predict = (o, _, _) => { seen = o; return Task.FromResult(0); } };
        using var dir = new TempDir();
        string model = dir.File("m.bnc"), rows = dir.File("r.csv");
        File.WriteAllText(model, "");
        File.WriteAllText(rows, "");
        Assert.Equal(0, Cli.Run(["predict", "--model", model, "--input", rows, "--proba", "--json"], TextWriter.Null, TextWriter.Null, backends));
        Assert.Equal(new PredictOptions(model, rows, Json: true, Probabilities: true), seen);
    }
}
