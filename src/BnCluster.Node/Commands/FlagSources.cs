using System.CommandLine;
using System.CommandLine.Parsing;
using System.Text.Json;

namespace BnCluster.Node.Commands;

/// <summary>
/// Flag values that come from elsewhere than the command line, for `train`, `coordinator` and `worker`:
/// <list type="bullet">
/// <item>an environment variable per flag: BNCLUSTER_ + the flag's name upper-cased with dashes as underscores
/// (--lr → BNCLUSTER_LR, --no-shared-memory → BNCLUSTER_NO_SHARED_MEMORY; a switch takes 1/0, true/false, yes/no, on/off);</item>
/// <item>`--config FILE` (train and coordinator): a run folder's run.json (its "settings") or a JSON object of the same
/// form: one member per flag, named as the flag without its dashes ("lr": 0.01, "hidden": [64, 32], "no-pin": true).</item>
/// </list>
/// Precedence: command line &gt; environment &gt; --config &gt; defaults. The values become ordinary tokens appended to the
/// command line (for the flags it does not give), so they get exactly the command line's checks; an error about one of
/// them names its source ("BNCLUSTER_LR: …", "runs/a/run.json: lr: …") instead of the flag.
/// </summary>
internal sealed class FlagSources
{
    public const string EnvironmentPrefix = "BNCLUSTER_";
    public const string ConfigFlag = "--config";

    /// <summary>Commands whose flags the environment sets.</summary>
    private static readonly string[] EnvironmentCommands = ["train", "coordinator", "worker"];

    /// <summary>Settings a run.json holds that some training command has and another lacks (skipped, not refused).</summary>
    private static readonly string[] OtherCommandsSettings = ["processes", "no-pin", "listen", "advertise"];

    /// <summary>Flags never taken from a --config file: where this run writes, and the file itself.</summary>
    private static readonly string[] NotFromConfig = ["out", "overwrite", "config"];

    /// <summary>Flags that exclude each other: one typed on the command line overrides the other from elsewhere.</summary>
    private static readonly (string, string)[] Exclusive = [("quiet", "log-level")];

    private readonly Dictionary<string, string> _sourceOfFlag = new(StringComparer.Ordinal);

    private FlagSources(List<string> tokens) => Tokens = tokens;

    /// <summary>Tokens to append to the command line (empty: nothing came from elsewhere).</summary>
    public List<string> Tokens { get; }

    public static Option<string?> ConfigOption() => new(ConfigFlag)
    {
        Description = "Take every setting this command line does not give from FILE: a run folder's run.json (to train again with its settings) or a JSON object of flag names and values. Precedence: flags > BNCLUSTER_* environment variables > --config > defaults.",
        HelpName = "FILE",
        CustomParser = r =>
        {
            if (r.Tokens.Count == 0) return null; // the parser reports the missing value
            string text = r.Tokens[0].Value;
            if (!File.Exists(text)) r.AddError($"{ConfigFlag}: file \"{text}\" does not exist");
            return text;
        },
    };

    /// <summary>The environment variable that sets <paramref name="flag"/> ("--min-workers" → BNCLUSTER_MIN_WORKERS).</summary>
    public static string VariableOf(string flag) => EnvironmentPrefix + flag.TrimStart('-').ToUpperInvariant().Replace('-', '_');

    /// <summary>
    /// The values the environment and the --config file give for the flags of the parsed command that its command line
    /// does not. Wrong files or switch values throw <see cref="CliInputException"/> naming the source.
    /// </summary>
    public static FlagSources Collect(ParseResult parse, IReadOnlyDictionary<string, string> environment)
    {
        var command = parse.CommandResult.Command;
        var sources = new FlagSources([]);
        if (!EnvironmentCommands.Contains(command.Name)) return sources;

        var options = command.Options.Where(o => o.Name.StartsWith("--", StringComparison.Ordinal) && o is not System.CommandLine.Help.HelpOption and not VersionOption)
            .ToDictionary(o => o.Name[2..], StringComparer.Ordinal);
        var given = options.Values.Where(o => parse.GetResult(o) is OptionResult { Implicit: false }).Select(o => o.Name[2..]).ToHashSet();
        var values = new Dictionary<string, (string Source, string? Value, bool IsSwitch)>(StringComparer.Ordinal);

        // Lowest first: the config file, then the environment over it.
        string? configPath = null;
        if (options.TryGetValue("config", out var configOption))
            configPath = given.Contains("config") ? (parse.GetResult(configOption) is OptionResult { Tokens.Count: > 0 } result ? result.Tokens[0].Value : null)
                : environment.TryGetValue(VariableOf(ConfigFlag), out var fromEnvironment) && fromEnvironment.Length > 0 ? fromEnvironment : null;
        if (configPath is not null && !given.Contains("config") && !File.Exists(configPath))
            throw new CliInputException($"{VariableOf(ConfigFlag)}: file \"{configPath}\" does not exist");
        if (configPath is not null && File.Exists(configPath)) // a missing --config FILE is the parser's error
            foreach (var (name, value) in ReadConfig(configPath))
            {
                if (NotFromConfig.Contains(name)) continue;
                if (!options.TryGetValue(name, out var option))
                {
                    if (OtherCommandsSettings.Contains(name)) continue;
                    throw new CliInputException($"{configPath}: {name}: no such setting of bncluster {command.Name} (see bncluster {command.Name} --help)");
                }
                values[name] = ($"{configPath}: {name}", value, option is Option<bool>);
            }
        foreach (var (name, option) in options)
        {
            string variable = VariableOf(option.Name);
            if (name == "config" || !environment.TryGetValue(variable, out var value)) continue;
            values[name] = (variable, value, option is Option<bool>);
        }

        foreach (var (a, b) in Exclusive)
        {
            if (given.Contains(a)) values.Remove(b);
            if (given.Contains(b)) values.Remove(a);
        }
        foreach (var (name, (source, value, isSwitch)) in values)
        {
            if (given.Contains(name) || value is null) continue;
            if (isSwitch)
            {
                if (ParseSwitch(value) is not { } on)
                    throw new CliInputException($"{source}: \"{value}\" is not one of 1, 0, true, false, yes, no, on, off");
                sources.Tokens.AddRange(["--" + name, on ? "true" : "false"]);
            }
            else sources.Tokens.AddRange(["--" + name, value]);
            sources._sourceOfFlag["--" + name] = source;
        }
        return sources;
    }

    /// <summary>
    /// An error message about a flag that came from elsewhere, re-labelled with its source: "--lr: 0 is not in (0, 10]"
    /// → "BNCLUSTER_LR: 0 is not in (0, 10]". Other messages are returned as they are.
    /// </summary>
    public string Attribute(string message)
    {
        int colon = message.IndexOf(": ", StringComparison.Ordinal);
        if (colon > 0 && _sourceOfFlag.TryGetValue(message[..colon], out var source))
            return source + message[colon..];
        return message;
    }

    private static bool? ParseSwitch(string value) => value.Trim().ToLowerInvariant() switch
    {
        "1" or "true" or "yes" or "on" => true,
        "0" or "false" or "no" or "off" or "" => false,
        _ => null,
    };

    /// <summary>The members of a config file as flag values (null: JSON null, the flag's default).</summary>
    private static IEnumerable<(string Name, string? Value)> ReadConfig(string path)
    {
        JsonDocument document;
        try { document = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new CliInputException($"{path}: not a JSON file: {e.Message}"); }
        catch (IOException e) { throw new CliInputException($"{path}: cannot be read: {e.Message}"); }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new CliInputException($"{path}: expected a JSON object of settings");
            // A run.json keeps its settings in "settings"; a hand-written file may be the settings themselves.
            var settings = root.TryGetProperty("settings", out var inner) ? inner : root;
            if (settings.ValueKind != JsonValueKind.Object) throw new CliInputException($"{path}: settings: expected a JSON object");
            var result = new List<(string, string?)>();
            foreach (var member in settings.EnumerateObject())
                result.Add((member.Name, ValueText(path, member)));
            return result;
        }
    }

    private static string? ValueText(string path, JsonProperty member) => member.Value.ValueKind switch
    {
        JsonValueKind.Null => null,
        JsonValueKind.String => member.Value.GetString(),
        JsonValueKind.Number => member.Value.GetRawText(),
        JsonValueKind.True => "true",
        JsonValueKind.False => "false",
        // --hidden as [64, 32]
        JsonValueKind.Array when member.Value.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number) =>
            string.Join(',', member.Value.EnumerateArray().Select(e => e.GetRawText())),
        _ => throw new CliInputException($"{path}: {member.Name}: expected a string, a number, true/false or a list of numbers"),
    };
}
