using BnCluster.Core.Model;
using BnCluster.Node.Commands;

namespace BnCluster.Node.Tests;

public sealed class CliTests
{
    private sealed record Outcome(int Exit, string Out, string Err);

    private static Outcome Run(CliBackends backends, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = Cli.Run(args, stdout, stderr, backends);
        return new Outcome(exit, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Backends that capture the parsed options and succeed.</summary>
    private sealed class Capture
    {
        public TrainOptions? Train;
        public CoordinatorOptions? Coordinator;
        public WorkerOptions? Worker;
        public BenchOptions? Bench;

        public CliBackends Backends => new()
        {
            Train = (o, _, _) => { Train = o; return Task.FromResult(0); },
            Coordinator = (o, _, _) => { Coordinator = o; return Task.FromResult(0); },
            Worker = (o, _, _) => { Worker = o; return Task.FromResult(0); },
            Bench = (o, _, _) => { Bench = o; return Task.FromResult(0); },
        };
    }

    [Fact]
    public void Train_defaults()
    {
        var capture = new Capture();
        var r = Run(capture.Backends, "train");
        Assert.Equal(0, r.Exit);
        Assert.Equal("", r.Err);
        var o = capture.Train!;
        Assert.Equal("digits", o.Dataset);
        Assert.Equal(new[] { 256, 128 }, o.HiddenSizes);
        Assert.Equal(Activation.Relu, o.Activation);
        Assert.Equal(BatchNormPlacement.Before, o.BatchNorm);
        Assert.Equal(128, o.Batch);
        Assert.Equal(5, o.Epochs);
        Assert.Equal(0, o.MaxSteps);
        Assert.Equal(OptimizerChoice.Adam, o.Optimizer);
        Assert.Equal(1e-3, o.LearningRate);
        Assert.Equal(0.9, o.Beta1);
        Assert.Equal(0.999, o.Beta2);
        Assert.Equal(1e-8, o.OptimizerEpsilon);
        Assert.Equal(0.1, o.BnMomentum);
        Assert.Equal(1e-5, o.BnEpsilon);
        Assert.Equal(1, o.Seed);
        Assert.Equal(2, o.Workers); // the in-process cluster by default
        Assert.False(o.Processes);
        Assert.Equal(1, o.MinWorkers);
        Assert.True(o.SharedMemory);
        Assert.True(o.ShardedUpdate);
        Assert.True(o.PinWorkers);
        Assert.Equal(Environment.ProcessorCount, o.Threads);
        Assert.Matches(@"^runs[/\\]\d{8}-\d{6}$", o.OutDirectory);
        Assert.Equal((Serilog.Events.LogEventLevel.Information, false), (o.ConsoleLevel, o.Quiet));
    }

    [Fact]
    public void Console_flags_of_train_and_coordinator()
    {
        var capture = new Capture();
        Assert.Equal(0, Run(capture.Backends, "train", "--log-level", "WARNING").Exit);
        Assert.Equal((Serilog.Events.LogEventLevel.Warning, false), (capture.Train!.ConsoleLevel, capture.Train.Quiet));
        Assert.Equal(0, Run(capture.Backends, "train", "--log-level", "verbose").Exit);
        Assert.Equal(Serilog.Events.LogEventLevel.Verbose, capture.Train!.ConsoleLevel);
        Assert.Equal(0, Run(capture.Backends, "coordinator", "--quiet").Exit);
        Assert.True(capture.Coordinator!.Train.Quiet);
        Assert.Equal(0, Run(capture.Backends, "coordinator", "--log-level", "debug").Exit);
        Assert.Equal(Serilog.Events.LogEventLevel.Debug, capture.Coordinator!.Train.ConsoleLevel);
    }

    [Fact]
    public void Train_all_flags_are_parsed()
    {
        var capture = new Capture();
        var r = Run(capture.Backends, "train", "--dataset", "FASHION-MNIST", "--label-column", "y", "--hidden", "512, 256,64",
            "--activation", "Tanh", "--bn", "after", "--batch", "64", "--epochs", "3", "--max-steps", "100",
            "--optimizer", "rmsprop", "--lr", "0.01", "--beta1", "0.8", "--beta2", "0.99", "--opt-eps", "1e-7",
            "--bn-momentum", "0.2", "--bn-eps", "1e-3", "--seed", "-7", "--workers", "4", "--processes",
            "--min-workers", "2", "--threads", "3", "--out", "some/dir", "--no-shared-memory", "--no-sharded-update", "--no-pin");
        Assert.Equal("", r.Err);
        Assert.Equal(0, r.Exit);
        var o = capture.Train!;
        Assert.Equal("fashion-mnist", o.Dataset);
        Assert.Equal("y", o.LabelColumn);
        Assert.Equal(new[] { 512, 256, 64 }, o.HiddenSizes);
        Assert.Equal(Activation.Tanh, o.Activation);
        Assert.Equal(BatchNormPlacement.After, o.BatchNorm);
        Assert.Equal((64, 3, 100L), (o.Batch, o.Epochs, o.MaxSteps));
        Assert.Equal(OptimizerChoice.RmsProp, o.Optimizer);
        Assert.Equal((0.01, 0.8, 0.99, 1e-7), (o.LearningRate, o.Beta1, o.Beta2, o.OptimizerEpsilon));
        Assert.Equal((0.2, 1e-3), (o.BnMomentum, o.BnEpsilon));
        Assert.Equal(-7, o.Seed);
        Assert.Equal((4, true, 2, 3), (o.Workers, o.Processes, o.MinWorkers, o.Threads));
        Assert.Equal((false, false, false), (o.SharedMemory, o.ShardedUpdate, o.PinWorkers));
        Assert.Equal("some/dir", o.OutDirectory);
    }

    [Fact]
    public void Dataset_path_must_exist_and_is_kept_as_given()
    {
        using var dir = new TempDir();
        string csv = dir.File("data.csv");
        File.WriteAllText(csv, "a,label\n1,0\n");
        var capture = new Capture();
        Assert.Equal(0, Run(capture.Backends, "train", "--dataset", csv).Exit);
        Assert.Equal(csv, capture.Train!.Dataset);

        var r = Run(capture.Backends, "train", "--dataset", dir.File("missing.csv"));
        Assert.Equal(2, r.Exit);
        Assert.StartsWith("bncluster: --dataset: ", r.Err);
    }

    [Fact]
    public void Coordinator_worker_and_bench_options()
    {
        var capture = new Capture();
        Assert.Equal(0, Run(capture.Backends, "coordinator", "--listen", "0.0.0.0:9000", "--workers", "3", "--epochs", "2").Exit);
        Assert.Equal(new HostPort("0.0.0.0", 9000), capture.Coordinator!.Listen);
        Assert.Equal(3, capture.Coordinator.Train.Workers);
        Assert.Equal(2, capture.Coordinator.Train.Epochs);

        Assert.Equal(0, Run(capture.Backends, "worker", "--join", "[::1]:9000", "--threads", "1").Exit);
        Assert.Equal(new HostPort("::1", 9000), capture.Worker!.Join);
        Assert.Equal("digits", capture.Worker.Dataset);
        Assert.Equal(1, capture.Worker.Threads);

        Assert.Equal(0, Run(capture.Backends, "bench", "--hidden", "1024,1024", "--batch", "512", "--workers", "2", "--steps", "7").Exit);
        Assert.Equal(new[] { 1024, 1024 }, capture.Bench!.HiddenSizes);
        Assert.Equal((512, 2, 7), (capture.Bench.Batch, capture.Bench.Workers, capture.Bench.Steps));
        Assert.Equal((OptimizerChoice.Adam, 1e-3), (capture.Bench.Optimizer, capture.Bench.LearningRate));

        Assert.Equal(0, Run(capture.Backends, "bench", "--optimizer", "momentum", "--lr", "0.05").Exit);
        Assert.Equal((OptimizerChoice.Momentum, 0.05), (capture.Bench!.Optimizer, capture.Bench.LearningRate));
    }

    [Theory]
    [InlineData("--activation: \"gelu\" is not one of relu, tanh, sigmoid", "train", "--activation", "gelu")]
    [InlineData("--bn: \"middle\" is not one of before, after, none", "train", "--bn", "middle")]
    [InlineData("--optimizer: \"sgd\" is not one of gd, momentum, rmsprop, adam", "train", "--optimizer", "sgd")]
    [InlineData("--hidden: \"512,x\" is not a list of positive integers", "train", "--hidden", "512,x")]
    [InlineData("--hidden: \"0\" is not a list of positive integers", "train", "--hidden", "0")]
    [InlineData("--hidden: \"\" is not a list of positive integers", "train", "--hidden", "")]
    [InlineData("--batch: 0 is less than 1", "train", "--batch", "0")]
    [InlineData("--batch: -3 is less than 1", "train", "--batch", "-3")]
    [InlineData("--batch: \"1.5\" is not an integer", "train", "--batch", "1.5")]
    [InlineData("--batch: missing value", "train", "--batch")]
    [InlineData("--epochs: given 2 values, expects one", "train", "--epochs", "1", "--epochs", "2")]
    [InlineData("--epochs: 0 is less than 1", "train", "--epochs", "0")]
    [InlineData("--max-steps: -1 is less than 0", "train", "--max-steps", "-1")]
    [InlineData("--lr: 0 is not in (0, +inf)", "train", "--lr", "0")]
    [InlineData("--lr: -0.1 is not in (0, +inf)", "train", "--lr", "-0.1")]
    [InlineData("--lr: 1e300 is too large for float32 (the precision training computes in)", "train", "--lr", "1e300")]
    [InlineData("--lr: 1e-50 is too small for float32 (the precision training computes in; the smallest is 1.2e-38)", "train", "--lr", "1e-50")]
    [InlineData("--lr: 1e-40 is too small for float32 (the precision training computes in; the smallest is 1.2e-38)", "bench", "--lr", "1e-40")]
    [InlineData("--bn-eps: 1e300 is not in (0, 1]", "train", "--bn-eps", "1e300")]
    [InlineData("--bn-eps: 1e-60 is too small for float32 (the precision training computes in; the smallest is 1.2e-38)", "coordinator", "--bn-eps", "1e-60")]
    [InlineData("--opt-eps: 2 is not in (0, 1]", "train", "--opt-eps", "2")]
    [InlineData("--beta1: 0.99999999999 is 1 in float32 (the precision training computes in), not in [0, 1)", "train", "--beta1", "0.99999999999")]
    [InlineData("--beta2: -1E-300 is not in [0, 1)", "train", "--beta2", "-1E-300")]
    [InlineData("--bn-momentum: 1e-300 is too small for float32 (the precision training computes in; the smallest is 1.2e-38)", "train", "--bn-momentum", "1e-300")]
    [InlineData("--threads: 1000 is more than 256", "train", "--threads", "1000")]
    [InlineData("--threads: 257 is more than 256", "worker", "--join", "h:1", "--threads", "257")]
    [InlineData("--threads: 99999999999 is more than 256", "bench", "--threads", "99999999999")]
    [InlineData("--workers: 5000 is more than 1024", "coordinator", "--workers", "5000")]
    [InlineData("--batch: 4294967296 is more than 2147483647", "train", "--batch", "4294967296")]
    [InlineData("--seed: -99999999999 is less than -2147483648", "train", "--seed", "-99999999999")]
    [InlineData("--hidden: layer 1 would hold 784×2000000000 weights, more than one array can hold (2147483591)", "bench", "--hidden", "2000000000")]
    [InlineData("--batch: 2000000 rows × 2000 units of layer 1 are more values than one array can hold (2147483591)", "bench", "--hidden", "2000", "--batch", "2000000")]
    [InlineData("--lr: \"NaN\" is not a finite number", "train", "--lr", "NaN")]
    [InlineData("--lr: \"Infinity\" is not a finite number", "train", "--lr", "Infinity")]
    [InlineData("--beta1: 1 is not in [0, 1)", "train", "--beta1", "1")]
    [InlineData("--bn-momentum: 1.5 is not in [0, 1]", "train", "--bn-momentum", "1.5")]
    [InlineData("--workers: 0 is less than 1", "train", "--workers", "0")]
    [InlineData("--threads: 0 is less than 1", "train", "--threads", "0")]
    [InlineData("--min-workers: 3 is more than --workers 2", "train", "--min-workers", "3", "--workers", "2")]
    [InlineData("--batch: 2 is smaller than --workers 3 (every worker needs a row)", "train", "--batch", "2", "--workers", "3")]
    [InlineData("--log-level: \"loud\" is not one of verbose, debug, information, warning, error", "train", "--log-level", "loud")]
    [InlineData("--quiet: cannot be combined with --log-level (--quiet shows errors only)", "train", "--quiet", "--log-level", "error")]
    [InlineData("--quiet: cannot be combined with --log-level (--quiet shows errors only)", "coordinator", "--log-level", "warning", "--quiet")]
    [InlineData("--foo: unknown option (see bncluster train --help)", "train", "--foo")]
    [InlineData("--processes: unknown option (see bncluster coordinator --help)", "coordinator", "--processes")]
    [InlineData("\"extra\": unexpected argument (see bncluster train --help)", "train", "extra")]
    [InlineData("--model: required option is missing", "eval", "--dataset", "digits")]
    [InlineData("--model: file \"/no/such/model.bnc\" does not exist", "eval", "--model", "/no/such/model.bnc", "--dataset", "digits")]
    [InlineData("--join: required option is missing", "worker")]
    [InlineData("--join: \"localhost\" is not HOST:PORT with a port in 1..65535", "worker", "--join", "localhost")]
    [InlineData("--join: \"h:70000\" is not HOST:PORT with a port in 1..65535", "worker", "--join", "h:70000")]
    [InlineData("LOG: missing argument (see bncluster logs --help)", "logs")]
    [InlineData("no command given (see bncluster --help)")]
    [InlineData("\"frobnicate\": unexpected argument (see bncluster --help)", "frobnicate")]
    public void Wrong_input_gives_one_line_and_exit_code_2(string expected, params string[] args)
    {
        var capture = new Capture();
        var r = Run(capture.Backends, args);
        Assert.Equal(2, r.Exit);
        Assert.Equal("bncluster: " + expected + Environment.NewLine, r.Err);
        Assert.Equal("", r.Out);
        Assert.Null(capture.Train);
    }

    [Theory]
    [InlineData("train")]
    [InlineData("coordinator")]
    [InlineData("worker")]
    [InlineData("eval")]
    [InlineData("predict")]
    [InlineData("export")]
    [InlineData("logs")]
    [InlineData("bench")]
    public void Help_describes_every_command(string command)
    {
        var r = Run(new CliBackends(), command, "--help");
        Assert.Equal(0, r.Exit);
        Assert.Equal("", r.Err);
        Assert.Contains("Usage:", r.Out);
        Assert.Matches($@"\b{command}\b.*\[options\]", r.Out); // the usage line
    }

    /// <summary>Every command's help ends with examples, and every example names only options its command has.</summary>
    [Fact]
    public void Every_command_shows_examples_that_parse()
    {
        var root = Cli.BuildRoot(new CliBackends(), new CliContext(TextWriter.Null, TextWriter.Null));
        Assert.NotEmpty(root.Subcommands);
        foreach (var command in root.Subcommands)
        {
            var r = Run(new CliBackends(), command.Name, "--help");
            Assert.Equal(0, r.Exit);
            int start = r.Out.IndexOf("Examples:", StringComparison.Ordinal);
            Assert.True(start >= 0, $"{command.Name} --help has no examples");
            var examples = r.Out[start..].Split('\n').Skip(1).Select(l => l.Trim())
                .TakeWhile(l => l.StartsWith("bncluster ", StringComparison.Ordinal)).ToList();
            Assert.True(examples.Count > 0, $"{command.Name} --help: no example after 'Examples:'");
            foreach (var example in examples)
            {
                var args = example.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).ToArray();
                Assert.Equal(command.Name, args[0]);
                var parse = root.Parse(args);
                Assert.True(parse.UnmatchedTokens.Count == 0, $"{example}: unknown {string.Join(", ", parse.UnmatchedTokens)}");
                // A file the example names need not exist here; any other error is a wrong example.
                var wrong = parse.Errors.Where(e => !e.Message.Contains("does not exist", StringComparison.Ordinal)).ToList();
                Assert.True(wrong.Count == 0, $"{example}: {string.Join("; ", wrong.Select(e => e.Message))}");
            }
        }
    }

    [Fact]
    public void Root_help_lists_the_commands()
    {
        var r = Run(new CliBackends(), "--help");
        Assert.Equal(0, r.Exit);
        foreach (var c in new[] { "train", "coordinator", "worker", "eval", "predict", "export", "logs", "bench" })
            Assert.Contains(c, r.Out);
    }

    [Fact]
    public void Command_without_backend_fails_with_exit_1()
    {
        var r = Run(new CliBackends(), "train", "--epochs", "1");
        Assert.Equal(1, r.Exit);
        Assert.Equal("bncluster: train: not available in this build (its backend is not wired up)" + Environment.NewLine, r.Err);
    }

    [Fact]
    public void Backend_exception_becomes_one_line_with_exit_1()
    {
        var backends = new CliBackends { Train = (_, _, _) => throw new InvalidOperationException("disk full\nsecond line") };
        var r = Run(backends, "train");
        Assert.Equal(1, r.Exit);
        Assert.Equal("bncluster: error: disk full second line (InvalidOperationException)" + Environment.NewLine, r.Err);
    }

    [Fact]
    public void Backend_input_exception_gives_exit_2()
    {
        var backends = new CliBackends { Train = (_, _, _) => throw new CliInputException("--dataset: row 3 has 4 fields, expected 5") };
        var r = Run(backends, "train");
        Assert.Equal(2, r.Exit);
        Assert.Equal("bncluster: --dataset: row 3 has 4 fields, expected 5" + Environment.NewLine, r.Err);
    }
}
