using BnCluster.Node.Commands;

namespace BnCluster.Node.Tests;

/// <summary>BNCLUSTER_* variables and --config set the flags a command line does not give: flags &gt; environment &gt; --config &gt; defaults.</summary>
public sealed class FlagSourcesTests
{
    private sealed record Outcome(int Exit, string Out, string Err, TrainOptions? Train, CoordinatorOptions? Coordinator, WorkerOptions? Worker);

    private static Outcome Run(Dictionary<string, string> environment, params string[] args)
    {
        TrainOptions? train = null;
        CoordinatorOptions? coordinator = null;
        WorkerOptions? worker = null;
        var backends = new CliBackends
        {
            Train = (o, _, _) => { train = o; return Task.FromResult(0); },
            Coordinator = (o, _, _) => { coordinator = o; return Task.FromResult(0); },
            Worker = (o, _, _) => { worker = o; return Task.FromResult(0); },
        };
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = Cli.Run(args, stdout, stderr, backends, environment: environment);
        return new Outcome(exit, stdout.ToString(), stderr.ToString(), train, coordinator, worker);
    }

    private static Dictionary<string, string> Env(params (string Name, string Value)[] variables) =>
        variables.ToDictionary(v => v.Name, v => v.Value);

    [Fact]
    public void Environment_variables_set_flags_named_upper_case_with_underscores()
    {
        var r = Run(Env(("BNCLUSTER_LR", "0.01"), ("BNCLUSTER_HIDDEN", "64,32"), ("BNCLUSTER_NO_SHARED_MEMORY", "1"),
            ("BNCLUSTER_MIN_WORKERS", "2"), ("BNCLUSTER_OPTIMIZER", "rmsprop"), ("BNCLUSTER_HEARTBEAT_MS", "500")), "train");
        Assert.Equal("", r.Err);
        Assert.Equal(0, r.Exit);
        Assert.Equal(0.01, r.Train!.LearningRate);
        Assert.Equal(new[] { 64, 32 }, r.Train.HiddenSizes);
        Assert.False(r.Train.SharedMemory);
        Assert.Equal(2, r.Train.MinWorkers);
        Assert.Equal(OptimizerChoice.RmsProp, r.Train.Optimizer);
        Assert.True(r.Train.ShardedUpdate); // not set: the default
    }

    /// <summary>--quiet and --log-level exclude each other: the one typed wins over the other from the environment.</summary>
    [Fact]
    public void A_typed_quiet_or_log_level_overrides_the_other_from_the_environment()
    {
        var quiet = Run(Env(("BNCLUSTER_LOG_LEVEL", "debug")), "train", "--quiet");
        Assert.Equal("", quiet.Err);
        Assert.True(quiet.Train!.Quiet);
        var debug = Run(Env(("BNCLUSTER_QUIET", "1")), "train", "--log-level", "debug");
        Assert.Equal("", debug.Err);
        Assert.Equal((false, Serilog.Events.LogEventLevel.Debug), (debug.Train!.Quiet, debug.Train.ConsoleLevel));
        // Both from the environment is still a contradiction.
        Assert.Equal(2, Run(Env(("BNCLUSTER_QUIET", "1"), ("BNCLUSTER_LOG_LEVEL", "debug")), "train").Exit);
    }

    [Fact]
    public void Flags_win_over_the_environment_which_wins_over_the_config_file()
    {
        using var dir = new TempDir();
        string config = dir.File("settings.json");
        File.WriteAllText(config, """{ "lr": 0.5, "batch": 32, "epochs": 7, "no-sharded-update": true }""");
        var r = Run(Env(("BNCLUSTER_LR", "0.25"), ("BNCLUSTER_BATCH", "16"), ("BNCLUSTER_NO_SHARDED_UPDATE", "false")),
            "train", "--config", config, "--lr", "0.125");
        Assert.Equal("", r.Err);
        Assert.Equal(0.125, r.Train!.LearningRate); // flag
        Assert.Equal(16, r.Train.Batch); // environment over config
        Assert.Equal(7, r.Train.Epochs); // config over default
        Assert.True(r.Train.ShardedUpdate); // BNCLUSTER_NO_SHARDED_UPDATE=false over the config's true
        Assert.Equal(0.9, r.Train.Beta1); // default
    }

    [Fact]
    public void A_run_json_trains_again_with_its_settings()
    {
        using var dir = new TempDir();
        var first = Run(Env(), "train", "--dataset", "digits", "--hidden", "48,24", "--activation", "tanh", "--bn", "after",
            "--batch", "40", "--epochs", "3", "--max-steps", "9", "--optimizer", "momentum", "--lr", "0.03", "--beta1", "0.8",
            "--beta2", "0.95", "--opt-eps", "1e-6", "--bn-momentum", "0.2", "--bn-eps", "0.001", "--seed", "-4", "--workers", "3",
            "--processes", "--min-workers", "2", "--no-shared-memory", "--no-sharded-update", "--no-pin", "--threads", "5", "--out", dir.File("a"));
        Assert.Equal(0, first.Exit);
        string runJson = dir.File("run.json");
        File.WriteAllText(runJson, new System.Text.Json.Nodes.JsonObject { ["settings"] = RunRecord.Settings("train", first.Train!) }.ToJsonString());

        var again = Run(Env(), "train", "--config", runJson, "--out", dir.File("b"));
        Assert.Equal("", again.Err);
        Assert.Equal(first.Train! with { OutDirectory = dir.File("b") }, again.Train! with { HiddenSizes = first.Train.HiddenSizes });
        Assert.Equal(first.Train.HiddenSizes, again.Train.HiddenSizes);

        // A coordinator's run.json has --listen and no --processes/--no-pin: train skips the one, coordinator the others.
        File.WriteAllText(runJson, new System.Text.Json.Nodes.JsonObject
        {
            ["settings"] = RunRecord.Settings("coordinator", first.Train! with { Processes = false }, new HostPort("127.0.0.1", 7100)),
        }.ToJsonString());
        var coordinator = Run(Env(), "coordinator", "--config", runJson);
        Assert.Equal("", coordinator.Err);
        Assert.Equal(new HostPort("127.0.0.1", 7100), coordinator.Coordinator!.Listen);
        Assert.Equal((3, 0.03), (coordinator.Coordinator.Train.Workers, coordinator.Coordinator.Train.LearningRate));
        Assert.Equal(0, Run(Env(), "train", "--config", runJson).Exit);
    }

    [Fact]
    public void Run_json_settings_name_every_flag_of_train_and_coordinator()
    {
        var root = Cli.BuildRoot(new CliBackends(), new CliContext(TextWriter.Null, TextWriter.Null));
        var options = new TrainOptions { Dataset = "digits", HiddenSizes = [8], OutDirectory = "x" };
        foreach (var (command, listen) in new[] { ("train", (HostPort?)null), ("coordinator", new HostPort("127.0.0.1", 1)) })
        {
            var flags = root.Subcommands.Single(c => c.Name == command).Options.Select(o => o.Name)
                .Where(n => n.StartsWith("--", StringComparison.Ordinal) && n is not ("--help" or "--out" or "--overwrite" or "--config" or "--log-level" or "--quiet"))
                .Select(n => n[2..]).Order(StringComparer.Ordinal);
            var settings = RunRecord.Settings(command, options, listen).Select(p => p.Key).Order(StringComparer.Ordinal);
            Assert.Equal(flags, settings);
        }
    }

    [Theory]
    [InlineData("BNCLUSTER_LR: 0 is not in (0, +inf)", "BNCLUSTER_LR", "0")]
    [InlineData("BNCLUSTER_LR: \"fast\" is not a finite number", "BNCLUSTER_LR", "fast")]
    [InlineData("BNCLUSTER_HIDDEN: \"64;32\" is not a list of positive integers", "BNCLUSTER_HIDDEN", "64;32")]
    [InlineData("BNCLUSTER_NO_SHARED_MEMORY: \"maybe\" is not one of 1, 0, true, false, yes, no, on, off", "BNCLUSTER_NO_SHARED_MEMORY", "maybe")]
    [InlineData("BNCLUSTER_MIN_WORKERS: 5 is more than --workers 2", "BNCLUSTER_MIN_WORKERS", "5")]
    [InlineData("BNCLUSTER_CONFIG: file \"/no/such.json\" does not exist", "BNCLUSTER_CONFIG", "/no/such.json")]
    public void A_wrong_environment_value_names_the_variable(string expected, string variable, string value)
    {
        var r = Run(Env((variable, value)), "train");
        Assert.Equal(2, r.Exit);
        Assert.Equal("bncluster: " + expected + Environment.NewLine, r.Err);
        Assert.Null(r.Train);
    }

    [Theory]
    [InlineData("""{ "lr": 1e300 }""", "lr: 1e300 is too large for float32 (the precision training computes in)")]
    [InlineData("""{ "settings": { "batch": "many" } }""", "batch: \"many\" is not an integer")]
    [InlineData("""{ "hidden": [64, -1] }""", "hidden: \"64,-1\" is not a list of positive integers")]
    [InlineData("""{ "learning-rate": 0.1 }""", "learning-rate: no such setting of bncluster train (see bncluster train --help)")]
    [InlineData("""{ "hidden": { "a": 1 } }""", "hidden: expected a string, a number, true/false or a list of numbers")]
    [InlineData("""[1, 2]""", "expected a JSON object of settings")]
    public void A_wrong_config_value_names_the_file_and_setting(string json, string expected)
    {
        using var dir = new TempDir();
        string config = dir.File("run.json");
        File.WriteAllText(config, json);
        var r = Run(Env(), "train", "--config", config);
        Assert.Equal(2, r.Exit);
        Assert.Equal($"bncluster: {config}: {expected}" + Environment.NewLine, r.Err);
    }

    [Fact]
    public void Not_json_and_a_missing_config_file_are_one_line_each()
    {
        using var dir = new TempDir();
        string config = dir.File("run.json");
        File.WriteAllText(config, "{ lr: ");
        var r = Run(Env(), "train", "--config", config);
        Assert.Equal(2, r.Exit);
        Assert.StartsWith($"bncluster: {config}: not a JSON file: ", r.Err);
        Assert.Single(r.Err.TrimEnd().Split('\n'));

        r = Run(Env(), "train", "--config", dir.File("missing.json"));
        Assert.Equal($"bncluster: --config: file \"{dir.File("missing.json")}\" does not exist" + Environment.NewLine, r.Err);
    }

    [Fact]
    public void The_config_file_never_sets_out_or_overwrite()
    {
        using var dir = new TempDir();
        string config = dir.File("c.json");
        File.WriteAllText(config, """{ "out": "/somewhere", "overwrite": true, "epochs": 2 }""");
        var r = Run(Env(), "train", "--config", config);
        Assert.Equal(0, r.Exit);
        Assert.Equal(2, r.Train!.Epochs);
        Assert.False(r.Train.Overwrite);
        Assert.NotEqual("/somewhere", r.Train.OutDirectory);
    }

    [Fact]
    public void A_worker_takes_its_required_join_and_its_threads_from_the_environment()
    {
        var r = Run(Env(("BNCLUSTER_JOIN", "10.0.0.1:7077"), ("BNCLUSTER_THREADS", "3")), "worker");
        Assert.Equal("", r.Err);
        Assert.Equal(new HostPort("10.0.0.1", 7077), r.Worker!.Join);
        Assert.Equal(3, r.Worker.Threads);
        // The command line still wins.
        Assert.Equal(1, Run(Env(("BNCLUSTER_THREADS", "3")), "worker", "--join", "h:1", "--threads", "1").Worker!.Threads);
    }

    [Fact]
    public void Help_and_other_commands_ignore_the_environment()
    {
        Assert.Equal(0, Run(Env(("BNCLUSTER_LR", "oops")), "train", "--help").Exit);
        var r = Run(Env(("BNCLUSTER_LR", "oops"), ("BNCLUSTER_MODEL", "/nope")), "logs", "/no/such/log.jsonl");
        Assert.Equal("bncluster: LOG: file \"/no/such/log.jsonl\" does not exist" + Environment.NewLine, r.Err);
    }

    [Fact]
    public void The_variables_worker_processes_do_not_inherit_are_the_worker_flags()
    {
        var variables = Cli.FlagVariables("worker");
        Assert.Contains("BNCLUSTER_LISTEN", variables);
        Assert.Contains("BNCLUSTER_THREADS", variables);
        Assert.DoesNotContain("BNCLUSTER_HEARTBEAT_MS", variables);
    }
}
