using System.CommandLine;
using System.CommandLine.Help;
using System.Globalization;
using BnCluster.Core.Data;
using BnCluster.Core.Model;
using BnCluster.Node.Logging;

namespace BnCluster.Node.Commands;

/// <summary>Wrong input found after parsing (a bad file, a bad value); printed as one line, exit code 2.</summary>
public sealed class CliInputException(string message) : Exception(message);

/// <summary>
/// The `bncluster` command line. Errors never print System.CommandLine's multi-line report: the first
/// error becomes one line "bncluster: --option: what is wrong" on stderr and the exit code is 2.
/// Exit codes: 0 ok, 1 runtime failure, 2 wrong input, 130 cancelled (Ctrl+C), 143 terminated (SIGTERM).
/// </summary>
public static class Cli
{
    public const int ExitOk = 0, ExitFailure = 1, ExitUsage = 2, ExitCancelled = 130, ExitTerminated = 143;

    /// <param name="environment">The BNCLUSTER_* variables that set flags (see <see cref="FlagSources"/>); null = this process's environment.</param>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CliBackends? backends = null,
        CancellationToken cancel = default, IReadOnlyDictionary<string, string>? environment = null) =>
        RunAsync(args, stdout, stderr, backends, cancel, environment).GetAwaiter().GetResult();

    /// <param name="environment">The BNCLUSTER_* variables that set flags (see <see cref="FlagSources"/>); null = this process's environment.</param>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CliBackends? backends = null,
        CancellationToken cancel = default, IReadOnlyDictionary<string, string>? environment = null)
    {
        var context = new CliContext(stdout, stderr);
        var root = BuildRoot(backends ?? new CliBackends(), context);
        ParseResult parse;
        FlagSources? sources = null;
        try
        {
            parse = root.Parse(args);
            if (parse.Action is not HelpAction)
            {
                // Flags the command line does not give may come from BNCLUSTER_* variables or --config: parse again with them.
                sources = FlagSources.Collect(parse, environment ?? ProcessEnvironment());
                if (sources.Tokens.Count > 0) parse = root.Parse([.. args, .. sources.Tokens]);
            }
        }
        catch (CliInputException ex)
        {
            stderr.WriteLine("bncluster: " + OneLine(ex.Message));
            return ExitUsage;
        }
        catch (Exception ex) // a parser bug must still give one line, not a stack trace
        {
            stderr.WriteLine($"bncluster: cannot parse the command line: {OneLine(ex.Message)}");
            return ExitUsage;
        }
        if (parse.Action is not HelpAction && parse.Errors.Count > 0)
        {
            string error = DescribeError(parse);
            stderr.WriteLine("bncluster: " + (sources?.Attribute(error) ?? error));
            return ExitUsage;
        }
        var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false };
        try
        {
            return await parse.InvokeAsync(config, cancel).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is CliInputException or DatasetException or LogFormatException or ModelFileException
                                   or FileNotFoundException or DirectoryNotFoundException)
        {
            string error = OneLine(ex.Message);
            stderr.WriteLine("bncluster: " + (ex is CliInputException && sources is not null ? sources.Attribute(error) : error));
            return ExitUsage;
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            stderr.WriteLine("bncluster: cancelled");
            return ExitCancelled;
        }
        catch (Exception ex)
        {
            stderr.WriteLine($"bncluster: error: {OneLine(ex.Message)} ({ex.GetType().Name})");
            return ExitFailure;
        }
    }

    /// <summary>A command's description followed by its examples, as `--help` shows them.</summary>
    internal static string WithExamples(string description, params string[] examples) =>
        description + "\n\nExamples:\n" + string.Join("\n", examples.Select(e => "  " + e));

    private static string OneLine(string s) => s.ReplaceLineEndings(" ").Trim();

    /// <summary>The environment variables that set the flags of <paramref name="command"/> (BNCLUSTER_THREADS, …).</summary>
    internal static IReadOnlyList<string> FlagVariables(string command) =>
        BuildRoot(new CliBackends(), new CliContext(TextWriter.Null, TextWriter.Null)).Subcommands.First(c => c.Name == command)
            .Options.Where(o => o.Name.StartsWith("--", StringComparison.Ordinal)).Select(o => FlagSources.VariableOf(o.Name)).ToList();

    private static Dictionary<string, string> ProcessEnvironment()
    {
        var variables = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry e in Environment.GetEnvironmentVariables())
            if (e.Key is string name && name.StartsWith(FlagSources.EnvironmentPrefix, StringComparison.Ordinal) && e.Value is string value)
                variables[name] = value;
        return variables;
    }

    /// <summary>The first error as one line: our parsers already name the option; the library's get rephrased.</summary>
    private static string DescribeError(ParseResult parse)
    {
        if (parse.UnmatchedTokens.Count > 0)
        {
            string token = parse.UnmatchedTokens[0];
            string where = parse.CommandResult.Command is RootCommand ? "bncluster" : "bncluster " + parse.CommandResult.Command.Name;
            return token.StartsWith('-')
                ? $"{token}: unknown option (see {where} --help)"
                : $"\"{token}\": unexpected argument (see {where} --help)";
        }
        var error = parse.Errors[0];
        if (error.SymbolResult is System.CommandLine.Parsing.ArgumentResult { Tokens.Count: 0 } missingArgument)
            return $"{missingArgument.Argument.Name}: missing argument (see bncluster {parse.CommandResult.Command.Name} --help)";
        if (error.SymbolResult is System.CommandLine.Parsing.OptionResult { Tokens.Count: > 1 } repeated
            && !error.Message.StartsWith(repeated.Option.Name + ":", StringComparison.Ordinal))
            return $"{repeated.Option.Name}: given {repeated.Tokens.Count} values, expects one";
        if (error.SymbolResult is System.CommandLine.Parsing.OptionResult { Tokens.Count: 0, Implicit: false } missingValue
            && !error.Message.StartsWith(missingValue.Option.Name + ":", StringComparison.Ordinal))
            return $"{missingValue.Option.Name}: missing value";
        if (error.SymbolResult is System.CommandLine.Parsing.OptionResult { Option: var option, Tokens.Count: 0 } && option.Required
            && !error.Message.StartsWith(option.Name + ":", StringComparison.Ordinal))
            return $"{option.Name}: required option is missing";
        if (error.SymbolResult is System.CommandLine.Parsing.OptionResult or2 && !error.Message.StartsWith("--", StringComparison.Ordinal))
            return $"{or2.Option.Name}: {OneLine(error.Message)}";
        if (parse.CommandResult.Command is RootCommand && parse.Errors.Count > 0 && parse.Tokens.Count == 0)
            return "no command given (see bncluster --help)";
        return OneLine(error.Message);
    }

    internal static RootCommand BuildRoot(CliBackends backends, CliContext context)
    {
        var root = new RootCommand(
            "bncluster: train multilayer perceptrons with synchronized batch normalization on a cluster of actors.");
        root.Subcommands.Add(TrainCommand(backends, context));
        root.Subcommands.Add(CoordinatorCommand(backends, context));
        root.Subcommands.Add(WorkerCommand(backends, context));
        root.Subcommands.Add(EvalCommand(backends, context));
        root.Subcommands.Add(PredictCommand(backends, context));
        root.Subcommands.Add(ExportCommand(backends, context));
        root.Subcommands.Add(LogsCommand(context));
        root.Subcommands.Add(BenchCommand(backends, context));
        root.Subcommands.Add(StatusCommand(backends, context));
        root.Subcommands.Add(StudyCommand(backends, context));
        return root;
    }

    private static Task<int> NotAvailable(CliContext context, string command)
    {
        context.Error.WriteLine($"bncluster: {command}: not available in this build (its backend is not wired up)");
        return Task.FromResult(ExitFailure);
    }

    private static Command TrainCommand(CliBackends backends, CliContext context)
    {
        var command = new Command("train", WithExamples("Train a model on an in-process cluster of workers (or local worker processes with --processes) and write a run folder.",
            "bncluster train --dataset digits --epochs 5 --out runs/digits",
            "bncluster train --dataset fashion-mnist --hidden 512,256 --batch 256 --workers 2 --processes"));
        var flags = new TrainingFlags(command, listenMode: false);
        command.SetAction((parse, cancel) =>
        {
            var options = flags.Read(parse);
            return backends.Train is { } train ? train(options, context, cancel) : NotAvailable(context, "train");
        });
        return command;
    }

    private static Command CoordinatorCommand(CliBackends backends, CliContext context)
    {
        var command = new Command("coordinator", WithExamples("Coordinate a multi-process or multi-node run: listen for workers, wait for --workers of them, train.",
            "bncluster coordinator --listen 10.0.0.1:7077 --workers 2 --dataset digits --out runs/digits-2m"));
        var listen = OptionParsers.Endpoint("--listen", new HostPort("127.0.0.1", 7077), 0,
            "Address to listen on for workers (port 0 = any free port).");
        var advertise = OptionParsers.AdvertisedHost("--advertise",
            "Name or address the workers reach this node by, when it differs from the --listen host (e.g. --listen 0.0.0.0:7077 --advertise coordinator.example in a container).");
        command.Options.Add(listen);
        command.Options.Add(advertise);
        var flags = new TrainingFlags(command, listenMode: true);
        command.SetAction((parse, cancel) =>
        {
            var options = new CoordinatorOptions(parse.GetValue(listen)!, flags.Read(parse)) { Advertise = parse.GetValue(advertise) };
            return backends.Coordinator is { } run ? run(options, context, cancel) : NotAvailable(context, "coordinator");
        });
        return command;
    }

    private static Command WorkerCommand(CliBackends backends, CliContext context)
    {
        var command = new Command("worker", WithExamples("Join a coordinator and compute its shards of every mini-batch.",
            "bncluster worker --join 10.0.0.1:7077 --dataset digits --threads 4"));
        var join = OptionParsers.Endpoint("--join", null, 1, "Coordinator address.");
        join.Required = true;
        var dataset = OptionParsers.Dataset("--dataset", "digits", "Dataset on this node's disk (must match the coordinator's).");
        var label = new Option<string?>("--label-column") { Description = "Label column of a CSV dataset.", HelpName = "NAME" };
        var threads = OptionParsers.Int("--threads", Environment.ProcessorCount, 1, $"Compute threads of this worker (at most {OptionParsers.MaxThreads}).", max: OptionParsers.MaxThreads);
        var listen = OptionParsers.Endpoint("--listen", null, 0,
            "This worker's address as the coordinator reaches it (port 0 = any); default: the local address that routes to --join, port 0.");
        var joinTimeout = OptionParsers.Int("--join-timeout", 0, 0,
            "Seconds to keep trying to join the coordinator (it may start later) before giving up with exit code 1; 0 = for ever.", "SECONDS");
        var advertise = OptionParsers.AdvertisedHost("--advertise",
            "Name or address the coordinator reaches this worker by, when it differs from the --listen host (e.g. a pod's DNS name with --listen 0.0.0.0:7078).");
        command.Options.Add(join);
        command.Options.Add(listen);
        command.Options.Add(advertise);
        command.Options.Add(dataset);
        command.Options.Add(label);
        command.Options.Add(threads);
        command.Options.Add(joinTimeout);
        command.SetAction((parse, cancel) => backends.Worker is { } run
            ? run(new WorkerOptions(parse.GetValue(join)!, parse.GetValue(dataset)!, parse.GetValue(label), parse.GetValue(threads))
            {
                Listen = parse.GetValue(listen),
                Advertise = parse.GetValue(advertise),
                JoinTimeout = parse.GetValue(joinTimeout) is > 0 and var seconds ? TimeSpan.FromSeconds(seconds) : null,
            }, context, cancel)
            : NotAvailable(context, "worker"));
        return command;
    }

    private static Command EvalCommand(CliBackends backends, CliContext context)
    {
        var command = new Command("eval", WithExamples(
            "Evaluate a model file on a dataset's test split (loss and accuracy), the split drawn with the seed the model was trained with. " +
            "A model whose checksum or input shape (features, classes) does not match is refused (exit code 2); a dataset file other " +
            "than the one the model was trained on (by SHA-256) gets a warning on standard error.",
            "bncluster eval --model runs/digits/model.bnc --dataset digits"));
        var model = OptionParsers.ExistingFile("--model", "Model file (model.bnc).");
        var dataset = OptionParsers.Dataset("--dataset", null, "Dataset to evaluate on.");
        var label = new Option<string?>("--label-column") { Description = "Label column of a CSV dataset.", HelpName = "NAME" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object {\"accuracy\", \"loss\", \"count\"} instead of text." };
        command.Options.Add(model);
        command.Options.Add(dataset);
        command.Options.Add(label);
        command.Options.Add(json);
        command.SetAction((parse, cancel) => backends.Eval is { } run
            ? run(new EvalOptions(parse.GetValue(model)!, parse.GetValue(dataset)!, parse.GetValue(label), parse.GetValue(json)), context, cancel)
            : NotAvailable(context, "eval"));
        return command;
    }

    private static Command PredictCommand(CliBackends backends, CliContext context)
    {
        var command = new Command("predict", WithExamples(
            "Predict the class of every row of a CSV file with a model file: one line per row, in the file's order. " +
            "Rows are raw values in the training file's own format (optical digits 0..16, IDX pixels 0..255): the model applies the " +
            "scaling its dataset loader applied, then its input normalization. Each row needs one value per model input (no label).",
            "bncluster predict --model runs/digits/model.bnc --input rows.csv",
            "bncluster predict --model runs/digits/model.bnc --input rows.csv --proba --json"));
        var model = OptionParsers.ExistingFile("--model", "Model file (model.bnc).");
        var input = OptionParsers.ExistingFile("--input", "CSV file of feature rows (comma-separated; a header row is skipped).", "CSV");
        var proba = new Option<bool>("--proba")
        {
            Description = "Also print every class's probability (softmax). Text: a tab-separated table, a header line \"class\" and the class " +
                          "names, then per row the predicted class and the probabilities in that order, 6 decimals.",
        };
        var json = new Option<bool>("--json")
        {
            Description = "Print JSON lines instead of text: one object per row, {\"class\": \"7\"}; with --proba " +
                          "{\"class\": \"7\", \"probabilities\": {\"0\": 0.0001, …}}, keyed by class name in the model's class order.",
        };
        command.Options.Add(model);
        command.Options.Add(input);
        command.Options.Add(proba);
        command.Options.Add(json);
        command.SetAction((parse, cancel) => backends.Predict is { } run
            ? run(new PredictOptions(parse.GetValue(model)!, parse.GetValue(input)!, parse.GetValue(json), parse.GetValue(proba)), context, cancel)
            : NotAvailable(context, "predict"));
        return command;
    }

    private static Command ExportCommand(CliBackends backends, CliContext context)
    {
        var command = new Command("export", WithExamples(
            "Write a model file as ONNX (runs in ONNX Runtime: input \"input\" float [N, features], outputs \"probabilities\" float [N, classes] " +
            "and \"label\" int64 [N]) or safetensors (the state_dict of the equivalent torch.nn.Sequential, which outputs logits). Both take rows " +
            "in the training file's own format, as predict does: the model's preprocessing and input normalization are part of them. " +
            "The file goes next to the model (runs/digits/model.onnx) unless --out says where.",
            "bncluster export --model runs/digits/model.bnc --format onnx",
            "bncluster export --model runs/digits/model.bnc --format safetensors --out digits.safetensors"));
        var model = OptionParsers.ExistingFile("--model", "Model file (model.bnc).");
        var format = OptionParsers.Choice("--format", "onnx", OptionParsers.ExportFormats, "File format.");
        format.Required = true;
        format.DefaultValueFactory = null; // no default: say which format
        var output = new Option<string?>("--out")
        {
            Description = "Output file (default: next to the model, model.onnx or model.safetensors); replaced atomically if it exists.",
            HelpName = "FILE",
        };
        output.Validators.Add(r =>
        {
            if (r.Tokens.Count == 0) return;
            string path = r.Tokens[0].Value;
            if (path.Length == 0) r.AddError("--out: empty path");
            else if (Directory.Exists(path)) r.AddError($"--out: \"{path}\" is a folder, not a file");
        });
        command.Options.Add(model);
        command.Options.Add(format);
        command.Options.Add(output);
        command.SetAction((parse, cancel) => backends.Export is { } run
            ? run(new ExportOptions(parse.GetValue(model)!, OptionParsers.Pick(OptionParsers.ExportFormats, parse.GetValue(format)!), parse.GetValue(output)), context, cancel)
            : NotAvailable(context, "export"));
        return command;
    }

    private static Command LogsCommand(CliContext context)
    {
        var command = new Command("logs", WithExamples("Summarize a run's log.jsonl: steps/s, compute vs waiting per worker, membership changes, aborted steps.",
            "bncluster logs runs/digits", "bncluster logs runs/digits/log.jsonl --json"));
        var path = new Argument<string>("LOG") { Description = "Path to RUN/log.jsonl (or the run folder)." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of text." };
        command.Arguments.Add(path);
        command.Options.Add(json);
        command.SetAction(parse =>
        {
            string file = parse.GetValue(path)!;
            if (Directory.Exists(file)) file = Path.Combine(file, RunFolder.LogFileName);
            if (!File.Exists(file)) throw new CliInputException($"LOG: file \"{file}\" does not exist");
            var summary = LogSummary.Read(file);
            if (parse.GetValue(json)) summary.WriteJson(context.Out);
            else summary.WriteText(context.Out);
            return ExitOk;
        });
        return command;
    }

    private static Command StatusCommand(CliBackends backends, CliContext context)
    {
        var command = new Command("status", WithExamples("Show a running cluster: its members (roles, status, reachability), the step and epoch, samples/s and the last loss. "
            + "Asks the coordinator's node without joining the cluster, so it never changes the run.",
            "bncluster status 10.0.0.1:7077", "bncluster status 10.0.0.1:7077 --watch 5", "bncluster status 127.0.0.1:7077 --json"));
        var address = new Argument<HostPort?>("HOST:PORT")
        {
            Description = "The coordinator's address: what `coordinator --listen` was given (the host exactly as it was given there).",
            Arity = ArgumentArity.ZeroOrOne, // (it may have been taken as --watch's value: see below)
            CustomParser = r => ParseStatusAddress(r.Tokens.Count > 0 ? r.Tokens[0].Value : "", r.AddError),
        };
        // --watch's value is optional, so `--watch HOST:PORT` gives it the address: a value that is no number is taken as the
        // address (System.CommandLine cannot hand an option's token back to the argument).
        var watch = new Option<(double Seconds, HostPort? Address)?>("--watch")
        {
            Description = $"Refresh every SECONDS (default {StatusOptions.DefaultWatchSeconds}) until Ctrl+C.",
            HelpName = "SECONDS",
            Arity = ArgumentArity.ZeroOrOne,
            CustomParser = r =>
            {
                if (r.Tokens.Count == 0) return (StatusOptions.DefaultWatchSeconds, null);
                string text = r.Tokens[0].Value;
                if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds))
                {
                    var hp = OptionParsers.ParseHostPort(text, 1);
                    if (hp is null) r.AddError($"--watch: \"{text}\" is neither a number of seconds nor HOST:PORT");
                    return (StatusOptions.DefaultWatchSeconds, hp);
                }
                if (!double.IsFinite(seconds) || seconds < StatusOptions.MinWatchSeconds || seconds > 86400)
                    r.AddError($"--watch: {text} is not in [{StatusOptions.MinWatchSeconds.ToString(CultureInfo.InvariantCulture)}, 86400] seconds");
                return (seconds, null);
            },
        };
        var json = new Option<bool>("--json") { Description = "Print one JSON object (one line per refresh with --watch) instead of text." };
        var timeout = OptionParsers.Double("--timeout", 10, 0, true, 3600, false, "Give up (exit 1, one line) when the coordinator has not answered within this many seconds.");
        timeout.HelpName = "SECONDS";
        command.Arguments.Add(address);
        command.Options.Add(watch);
        command.Options.Add(json);
        command.Options.Add(timeout);
        command.SetAction((parse, cancel) =>
        {
            var watched = parse.GetValue(watch);
            HostPort? given = parse.GetValue(address), taken = watched?.Address;
            if (given is not null && taken is not null) throw new CliInputException("HOST:PORT: given twice (see bncluster status --help)");
            var target = given ?? taken ?? throw new CliInputException("HOST:PORT: missing argument (see bncluster status --help)");
            return backends.Status is { } run
                ? run(new StatusOptions(target, watched is { } w ? TimeSpan.FromSeconds(w.Seconds) : null, parse.GetValue(json),
                    TimeSpan.FromSeconds(parse.GetValue(timeout))), context, cancel)
                : NotAvailable(context, "status");
        });
        return command;
    }

    private static HostPort? ParseStatusAddress(string text, Action<string> error)
    {
        var hp = OptionParsers.ParseHostPort(text, 1);
        if (hp is null) error($"HOST:PORT: \"{text}\" is not HOST:PORT with a port in 1..65535");
        return hp;
    }

    private static Command BenchCommand(CliBackends backends, CliContext context)
    {
        var command = new Command("bench", WithExamples("Time training steps (samples/s, ms per step, and per worker: compute, batch-norm reductions, gradient exchange) on one worker or on the cluster.",
            "bncluster bench --dataset fashion-mnist --hidden 512,256 --batch 256 --steps 200",
            "bncluster bench --dataset digits --workers 2 --processes --threads 1 --json"));
        var features = OptionParsers.Int("--features", 784, 1, "Input features of the random data.");
        var classes = OptionParsers.Int("--classes", 10, 2, "Output classes of the random data.");
        var hidden = OptionParsers.PositiveList("--hidden", "256,128", "Hidden layer sizes, comma-separated.");
        var batch = OptionParsers.Int("--batch", 256, 1, "Global mini-batch size.");
        var workers = OptionParsers.Int("--workers", 1, 1, "Number of workers: 1 = the training step in this process; more = the cluster `train --workers` runs.", max: OptionParsers.MaxWorkers);
        var steps = OptionParsers.Int("--steps", 50, 1, "Timed steps (after warm-up).");
        var warmup = OptionParsers.Int("--warmup", BenchOptions.DefaultWarmup, 1, "Untimed warm-up steps before the timed ones (with --workers 1, then more until the JIT has compiled nothing for 0.25 s).");
        var threads = OptionParsers.Int("--threads", Environment.ProcessorCount, 1, $"Compute threads per worker (at most {OptionParsers.MaxThreads}); the default is for one worker: without --threads, K workers share the cores (cores / K each).", max: OptionParsers.MaxThreads);
        var processes = new Option<bool>("--processes") { Description = "Run the workers as local processes over loopback, as `train --processes` (needs --dataset)." };
        var dataset = new Option<string?>("--dataset") { Description = "Time steps on this dataset's training split instead of random data (--features/--classes are then the dataset's).", HelpName = "DATASET" };
        var optimizer = OptionParsers.Choice("--optimizer", "adam", OptionParsers.Optimizers, "Optimizer the timed steps apply.");
        var lr = OptionParsers.Double("--lr", 1e-3, 0, true, double.PositiveInfinity, false, "Learning rate α.");
        var noSharedMemory = new Option<bool>("--no-shared-memory") { Description = NoSharedMemoryHelp };
        var noShardedUpdate = new Option<bool>("--no-sharded-update") { Description = NoShardedUpdateHelp };
        var noPin = new Option<bool>("--no-pin") { Description = NoPinHelp };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of text." };
        foreach (var o in new Option[] { features, classes, hidden, batch, workers, steps, warmup, threads, processes, noSharedMemory, noShardedUpdate, noPin, dataset, optimizer, lr, json })
            command.Options.Add(o);
        command.SetAction((parse, cancel) =>
        {
            if (backends.Bench is not { } run) return NotAvailable(context, "bench");
            int workerCount = parse.GetValue(workers);
            var hiddenSizes = OptionParsers.ParseSizes(parse.GetValue(hidden)!)!;
            if (parse.GetValue(dataset) is null) // with a dataset, the backend checks against the dataset's shape
                NetworkSize.Check(parse.GetValue(features), hiddenSizes, parse.GetValue(classes), parse.GetValue(batch),
                    dataRows: Math.Max(parse.GetValue(batch) * 16L, 1024)); // the random data BenchBackend makes (at most 16 batches)
            // Not given: share the cores between the workers rather than oversubscribe them.
            int threadsPerWorker = parse.GetResult(threads) is { Implicit: false } ? parse.GetValue(threads) : Math.Max(1, Environment.ProcessorCount / workerCount);
            return run(new BenchOptions
            {
                Features = parse.GetValue(features), Classes = parse.GetValue(classes), HiddenSizes = hiddenSizes,
                Batch = parse.GetValue(batch), Workers = workerCount, Steps = parse.GetValue(steps), Warmup = parse.GetValue(warmup),
                Threads = threadsPerWorker, Processes = parse.GetValue(processes), SharedMemory = !parse.GetValue(noSharedMemory), ShardedUpdate = !parse.GetValue(noShardedUpdate), PinWorkers = !parse.GetValue(noPin),
                Dataset = parse.GetValue(dataset), Json = parse.GetValue(json),
                Optimizer = OptionParsers.Pick(OptionParsers.Optimizers, parse.GetValue(optimizer)!), LearningRate = parse.GetValue(lr),
            }, context, cancel);
        });
        return command;
    }

    private static Command StudyCommand(CliBackends backends, CliContext context)
    {
        var command = new Command("study", WithExamples(
            "Measure what batch norm is claimed to do on a dataset (learning-rate robustness, depth, covariate shift, regularization " +
            "and batch size, before vs after the activation, running averages at test time) with real training runs; write DIR/report.md, " +
            "one SVG per experiment and DIR/results.jsonl. The full study is 258 training runs (minutes on two cores on fashion-mnist); --quick is a few seconds on digits.",
            "bncluster study --quick --out study-digits",
            "bncluster study --dataset fashion-mnist --out study-fashion"));
        var dataset = OptionParsers.Dataset("--dataset", "digits", "Dataset: digits (shipped), fashion-mnist or mnist, a folder of the four IDX files, or a labelled CSV file (its last column is the label).");
        var quick = new Option<bool>("--quick") { Description = "Small networks, short runs and fewer settings: a first look in well under a minute." };
        var parallel = OptionParsers.Int("--parallel", Environment.ProcessorCount, 1, $"Training runs at a time, one thread each (at most {OptionParsers.MaxThreads}).", max: OptionParsers.MaxThreads);
        var outDir = new Option<string>("--out") { Description = "Folder for report.md, the SVGs and results.jsonl.", HelpName = "DIR", Required = true };
        outDir.Validators.Add(r =>
        {
            if (r.Tokens.Count == 0) return;
            string dir = r.Tokens[0].Value;
            if (dir.Length == 0) r.AddError("--out: empty path");
            else if (File.Exists(dir)) r.AddError($"--out: \"{dir}\" is a file, not a folder");
        });
        foreach (var o in new Option[] { dataset, quick, parallel, outDir }) command.Options.Add(o);
        command.SetAction((parse, cancel) => backends.Study is { } run
            ? run(new Study.StudyOptions(parse.GetValue(dataset)!, parse.GetValue(quick), parse.GetValue(outDir)!, parse.GetValue(parallel)), context, cancel)
            : NotAvailable(context, "study"));
        return command;
    }

    /// <summary>The training flags shared by `train` and `coordinator`, added to one command.</summary>
    private const string NoSharedMemoryHelp = "Send every tensor in the messages: over TCP, also to worker processes on this machine, and as the message objects to workers in this process (default: a shared-memory file for all of those).";
    private const string NoShardedUpdateHelp = "Let the coordinator make every optimizer update (default: the workers on this machine, worker processes or in this process, each update their slice of the parameters in shared memory).";
    private const string NoPinHelp = "With --processes: let the system place the worker processes (default on Linux: each on CPUs of its own when there are enough for all their threads).";

    private sealed class TrainingFlags
    {
        private readonly Option<string> _dataset = OptionParsers.Dataset("--dataset", "digits", "Dataset: digits (shipped), fashion-mnist or mnist (IDX files in ~/.bncluster/datasets or /usr/share/datasets), a folder of the four IDX files, or a labelled CSV file.");
        private readonly Option<string?> _label = new("--label-column") { Description = "Label column of a CSV dataset (default: the last column).", HelpName = "NAME" };
        private readonly Option<string> _hidden = OptionParsers.PositiveList("--hidden", "256,128", "Hidden layer sizes, comma-separated.");
        private readonly Option<string> _activation = OptionParsers.Choice("--activation", "relu", OptionParsers.Activations, "Hidden activation.");
        private readonly Option<string> _bn = OptionParsers.Choice("--bn", "before", OptionParsers.BnPlacements, "Batch norm before or after the activation, or none.");
        private readonly Option<int> _batch = OptionParsers.Int("--batch", 128, 1, "Global mini-batch size (split over the workers).");
        private readonly Option<int> _epochs = OptionParsers.Int("--epochs", 5, 1, "Passes over the training set.");
        private readonly Option<long> _maxSteps = OptionParsers.Long("--max-steps", 0, 0, "Stop after this many steps (0 = no limit).");
        private readonly Option<string> _optimizer = OptionParsers.Choice("--optimizer", "adam", OptionParsers.Optimizers, "Optimizer.");
        private readonly Option<double> _lr = OptionParsers.Double("--lr", 1e-3, 0, true, double.PositiveInfinity, false, "Learning rate α.");
        private readonly Option<double> _beta1 = OptionParsers.Double("--beta1", 0.9, 0, false, 1, true, "β1 of momentum/adam.");
        private readonly Option<double> _beta2 = OptionParsers.Double("--beta2", 0.999, 0, false, 1, true, "β2 of rmsprop/adam.");
        private readonly Option<double> _optEps = OptionParsers.Double("--opt-eps", 1e-8, 0, true, 1, false, "ε of rmsprop/adam.");
        private readonly Option<double> _bnMomentum = OptionParsers.Double("--bn-momentum", 0.1, 0, false, 1, false, "Momentum m of the BN running averages.");
        private readonly Option<double> _bnEps = OptionParsers.Double("--bn-eps", 1e-5, 0, true, 1, false, "ε of batch norm (added to the batch variance, whose inputs are of order 1).");
        private readonly Option<int> _seed = OptionParsers.Int("--seed", 1, int.MinValue, "Random seed (init and epoch permutations).");
        private readonly Option<int> _workers;
        private readonly Option<bool> _processes = new("--processes") { Description = "Run the workers as local child processes." };
        private readonly Option<int> _minWorkers = OptionParsers.Int("--min-workers", 1, 1, "Keep training while at least this many workers remain.");
        private readonly Option<bool> _noSharedMemory = new("--no-shared-memory") { Description = NoSharedMemoryHelp };
        private readonly Option<bool> _noShardedUpdate = new("--no-sharded-update") { Description = NoShardedUpdateHelp };
        private readonly Option<bool> _noPin = new("--no-pin") { Description = NoPinHelp };
        private readonly Option<int> _threads = OptionParsers.Int("--threads", Environment.ProcessorCount, 1, $"Compute threads on this machine (at most {OptionParsers.MaxThreads}), shared by the workers it runs: K in-process workers or worker processes get threads/K each.", max: OptionParsers.MaxThreads);
        private readonly Option<int> _stepsEvery = OptionParsers.Int("--steps-every", 1, 0, "Write every N-th step's loss to the run folder's steps.jsonl (0 = no steps.jsonl).");
        private readonly Option<string> _out = new("--out")
        {
            Description = "Run folder (default: runs/<yyyyMMdd-HHmmss>); must be new or empty unless --overwrite is given.",
            HelpName = "DIR",
        };
        private readonly Option<string> _logLevel = OptionParsers.Choice("--log-level", "information", OptionParsers.LogLevels,
            "Lowest level of the log lines on the console (log.jsonl keeps every level from debug up).");
        private readonly Option<bool> _quiet = new("--quiet") { Description = "Print only errors and the final summary line: no progress, no log lines below error." };
        private readonly Option<bool> _overwrite = new("--overwrite")
        {
            Description = "Clear a non-empty --out before training (only a run folder: one holding run.json, model.bnc, metrics.jsonl or log.jsonl; links in it are removed, never followed).",
        };
        private readonly Option<string?> _config = FlagSources.ConfigOption();
        private readonly bool _listenMode;

        public TrainingFlags(Command command, bool listenMode)
        {
            _listenMode = listenMode;
            _workers = OptionParsers.Int("--workers", 2, 1, listenMode ? "Workers to wait for before training."
                : "Number of worker actors in this process, each taking a shard of every batch (1 = the single-node trainer).",
                max: OptionParsers.MaxWorkers);
            _out.Validators.Add(r =>
            {
                if (r.Tokens.Count == 0) return;
                string dir = r.Tokens[0].Value;
                if (dir.Length == 0) r.AddError("--out: empty path");
                else if (File.Exists(dir)) r.AddError($"--out: \"{dir}\" is a file, not a folder");
            });
            var all = new List<Option> { _dataset, _label, _hidden, _activation, _bn, _batch, _epochs, _maxSteps, _optimizer, _lr,
                _beta1, _beta2, _optEps, _bnMomentum, _bnEps, _seed, _workers };
            if (!listenMode) all.AddRange([_processes, _noPin]);
            all.AddRange([_minWorkers, _noSharedMemory, _noShardedUpdate, _threads, _out, _overwrite, _config, _stepsEvery]);
            all.AddRange([_logLevel, _quiet]);
            foreach (var o in all) command.Options.Add(o);
        }

        /// <summary>The options, after the checks that involve two flags (wrong → CliInputException, exit 2).</summary>
        public TrainOptions Read(ParseResult p)
        {
            var options = ReadFlags(p);
            if (options.MinWorkers > options.Workers)
                throw new CliInputException($"--min-workers: {options.MinWorkers} is more than --workers {options.Workers}");
            if (options.Batch < options.Workers)
                throw new CliInputException($"--batch: {options.Batch} is smaller than --workers {options.Workers} (every worker needs a row)");
            if (options.Quiet && p.GetResult(_logLevel) is { Implicit: false })
                throw new CliInputException("--quiet: cannot be combined with --log-level (--quiet shows errors only)");
            return options;
        }

        private TrainOptions ReadFlags(ParseResult p) => new()
        {
            Dataset = p.GetValue(_dataset)!,
            LabelColumn = p.GetValue(_label),
            HiddenSizes = OptionParsers.ParseSizes(p.GetValue(_hidden)!)!,
            Activation = OptionParsers.Pick(OptionParsers.Activations, p.GetValue(_activation)!),
            BatchNorm = OptionParsers.Pick(OptionParsers.BnPlacements, p.GetValue(_bn)!),
            Batch = p.GetValue(_batch),
            BatchIsDefault = p.GetResult(_batch) is null or { Implicit: true },
            Epochs = p.GetValue(_epochs),
            MaxSteps = p.GetValue(_maxSteps),
            Optimizer = OptionParsers.Pick(OptionParsers.Optimizers, p.GetValue(_optimizer)!),
            LearningRate = p.GetValue(_lr),
            Beta1 = p.GetValue(_beta1),
            Beta2 = p.GetValue(_beta2),
            OptimizerEpsilon = p.GetValue(_optEps),
            BnMomentum = p.GetValue(_bnMomentum),
            BnEpsilon = p.GetValue(_bnEps),
            Seed = p.GetValue(_seed),
            Workers = p.GetValue(_workers),
            Processes = !_listenMode && p.GetValue(_processes),
            MinWorkers = p.GetValue(_minWorkers),
            SharedMemory = !p.GetValue(_noSharedMemory),
            ShardedUpdate = !p.GetValue(_noShardedUpdate),
            PinWorkers = _listenMode || !p.GetValue(_noPin),
            Threads = p.GetValue(_threads),
            StepsEvery = p.GetValue(_stepsEvery),
            OutDirectory = p.GetValue(_out) ?? Path.Combine("runs", DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)),
            ConsoleLevel = OptionParsers.Pick(OptionParsers.LogLevels, p.GetValue(_logLevel)!),
            Quiet = p.GetValue(_quiet),
            Overwrite = p.GetValue(_overwrite),
        };
    }
}
