using System.Diagnostics;
using BnCluster.Node.Commands;
using Xunit;

namespace BnCluster.IntegrationTests;

/// <summary>Wrong input anywhere: exit 2, one stderr line naming the file (and where in it), no stack trace, nothing written.</summary>
public sealed class BadInputTests
{
    public static TheoryData<string> IdxDefects => new() { "truncated", "magic", "count-mismatch", "label-range" };

    [Theory]
    [MemberData(nameof(IdxDefects))]
    public void Bad_idx_folder_exits_2_naming_the_file(string defect)
    {
        using var tmp = new TempFolder();
        string data = tmp["idx"];
        IdxFiles.WriteSet(data);
        (string file, string where) = defect switch
        {
            "truncated" => Do(() => IdxFiles.Truncate(Path.Combine(data, "t10k-images-idx3-ubyte"), 5), "t10k-images-idx3-ubyte", "offset"),
            "magic" => Do(() => IdxFiles.WriteImages(Path.Combine(data, "train-images-idx3-ubyte"), 40, magic: 0x00000801), "train-images-idx3-ubyte", "offset 0"),
            "count-mismatch" => Do(() => IdxFiles.WriteLabels(Path.Combine(data, "train-labels-idx1-ubyte"), new byte[39]), "train-labels-idx1-ubyte", "39"),
            _ => Do(() => IdxFiles.WriteLabels(Path.Combine(data, "train-labels-idx1-ubyte"), Enumerable.Range(0, 40).Select(i => (byte)(i == 17 ? 10 : 0)).ToArray()),
                "train-labels-idx1-ubyte", "10"),
        };

        var run = CliHarness.Run("train", "--dataset", data, "--epochs", "1", "--out", tmp["run"]);

        AssertOneLineUsageError(run, tmp["run"], file, where);
    }

    [Theory]
    [InlineData("a,b,label\n0.5,0.25,1\n0.5,,0\n", "line 3")]
    [InlineData("a,b,label\n0.5,0.25,1\n0.5,NaN,0\n", "line 3")]
    public void Bad_csv_exits_2_naming_file_and_line(string content, string where)
    {
        using var tmp = new TempFolder();
        File.WriteAllText(tmp["bad.csv"], content);

        var run = CliHarness.Run("train", "--dataset", tmp["bad.csv"], "--epochs", "1", "--out", tmp["run"]);

        AssertOneLineUsageError(run, tmp["run"], "bad.csv", where);
    }

    [Fact]
    public void Unknown_flag_value_exits_2_naming_the_flag()
    {
        using var tmp = new TempFolder();
        var run = CliHarness.Run("train", "--optimizer", "sgdx", "--out", tmp["run"]);
        AssertOneLineUsageError(run, tmp["run"], "--optimizer", "sgdx");
    }

    [Fact]
    public void Corrupt_model_file_exits_2_naming_it()
    {
        using var tmp = new TempFolder();
        File.WriteAllBytes(tmp["model.bnc"], [0x81, 0xa6, 0x66, 0x6f, 0x72]);
        var run = CliHarness.Run("eval", "--model", tmp["model.bnc"], "--dataset", "digits");
        Assert.Equal(Cli.ExitUsage, run.Exit);
        Assert.Contains("model.bnc", Assert.Single(run.ErrorLines));
    }

    private static (string, string) Do(Action damage, string file, string where)
    {
        damage();
        return (file, where);
    }

    private static void AssertOneLineUsageError(CliRun run, string runFolder, string file, string where)
    {
        Assert.Equal(Cli.ExitUsage, run.Exit);
        string line = Assert.Single(run.ErrorLines);
        Assert.StartsWith("bncluster: ", line);
        Assert.Contains(file, line);
        Assert.Contains(where, line);
        Assert.DoesNotContain("   at ", run.Error);
        Assert.False(File.Exists(Path.Combine(runFolder, "model.bnc")));
        Assert.False(Directory.Exists(runFolder), "the run folder was created although nothing was trained");
    }
}

/// <summary>The built `bncluster` executable as a process: exit code and stderr as a user sees them.</summary>
public sealed class ExecutableTests
{
    [Fact]
    public void Executable_reports_bad_flag_and_truncated_idx_in_one_line_with_exit_2()
    {
        using var tmp = new TempFolder();
        var bad = RunExecutable(tmp.Path, "train", "--epochs", "zero");
        Assert.Equal(2, bad.Exit);
        Assert.Contains("--epochs", Assert.Single(bad.ErrorLines));

        IdxFiles.WriteSet(tmp["idx"]);
        IdxFiles.Truncate(Path.Combine(tmp["idx"], "train-labels-idx1-ubyte"), 3);
        var truncated = RunExecutable(tmp.Path, "train", "--dataset", tmp["idx"], "--out", tmp["run"]);
        Assert.Equal(2, truncated.Exit);
        string line = Assert.Single(truncated.ErrorLines);
        Assert.Contains("train-labels-idx1-ubyte", line);
        Assert.DoesNotContain("   at ", truncated.Error);
        Assert.False(Directory.Exists(tmp["run"]));
    }

    [Fact]
    public void Executable_takes_flags_from_BNCLUSTER_variables_and_names_a_wrong_one()
    {
        using var tmp = new TempFolder();
        var bad = RunExecutable(tmp.Path, new Dictionary<string, string> { ["BNCLUSTER_LR"] = "1e300" }, "train", "--out", tmp["run"]);
        Assert.Equal(2, bad.Exit);
        Assert.Equal("bncluster: BNCLUSTER_LR: 1e300 is too large for float32 (the precision training computes in)", Assert.Single(bad.ErrorLines));
        Assert.False(Directory.Exists(tmp["run"]));

        var good = RunExecutable(tmp.Path, new Dictionary<string, string> { ["BNCLUSTER_HIDDEN"] = "12", ["BNCLUSTER_MAX_STEPS"] = "2", ["BNCLUSTER_WORKERS"] = "1" },
            "train", "--out", tmp["run"]);
        Assert.True(good.Exit == 0, good.Error);
        using var record = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(Path.Combine(tmp["run"], "run.json")));
        var settings = record.RootElement.GetProperty("settings");
        Assert.Equal([12], settings.GetProperty("hidden").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(2, settings.GetProperty("max-steps").GetInt64());
        Assert.Equal(2, record.RootElement.GetProperty("steps").GetInt64());
    }

    private static CliRun RunExecutable(string workingDirectory, params string[] args) => RunExecutable(workingDirectory, new Dictionary<string, string>(), args);

    private static CliRun RunExecutable(string workingDirectory, Dictionary<string, string> environment, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var (name, value) in environment) start.Environment[name] = value;
        start.ArgumentList.Add(FindExecutable());
        foreach (string a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            Assert.Fail($"bncluster {string.Join(' ', args)} did not exit within 60 s");
        }
        return new CliRun(process.ExitCode, stdout.GetAwaiter().GetResult(), stderr.GetAwaiter().GetResult());
    }

    /// <summary>bncluster.dll next to this assembly (copied by the project reference), else the Node project's build output.</summary>
    private static string FindExecutable()
    {
        string here = Path.Combine(AppContext.BaseDirectory, "bncluster.dll");
        if (File.Exists(here) && File.Exists(Path.Combine(AppContext.BaseDirectory, "bncluster.runtimeconfig.json"))) return here;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string bin = Path.Combine(dir.FullName, "src", "BnCluster.Node", "bin");
            if (!Directory.Exists(bin)) continue;
            var found = Directory.GetFiles(bin, "bncluster.dll", SearchOption.AllDirectories)
                .Where(f => File.Exists(Path.ChangeExtension(f, ".runtimeconfig.json")))
                .OrderByDescending(File.GetLastWriteTimeUtc).FirstOrDefault();
            if (found is not null) return found;
        }
        throw new FileNotFoundException("bncluster.dll not found next to the tests or under src/BnCluster.Node/bin");
    }
}
