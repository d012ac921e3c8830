using System.CommandLine;
using System.Diagnostics;
using System.Text.RegularExpressions;
using BnCluster.Node.Commands;
using YamlDotNet.RepresentationModel;

namespace BnCluster.IntegrationTests.Deploy;

/// <summary>
/// One `bncluster` command line found in a file: where it is, its arguments after "bncluster", and whether BNCLUSTER_*
/// variables set before it on its line may give options it leaves out.
/// </summary>
public sealed record Invocation(string Where, string[] Args, bool FromEnvironment = false)
{
    public override string ToString() => $"{Where}: bncluster {string.Join(' ', Args)}";
}

/// <summary>
/// The files of deploy/ and the `bncluster` command lines in them, with their placeholders filled the way each tool
/// fills them: a systemd unit's ${X} and $X from its example EnvironmentFile, a compose file's ${X:-default} with the
/// default, a Kubernetes container's $(X) from its env (a value taken from the pod at run time: "0").
/// </summary>
public static class DeployFiles
{
    public static string Folder { get; } = FindFolder();

    private static string FindFolder()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "BnCluster.sln"))) dir = dir.Parent;
        if (dir is null) throw new InvalidOperationException($"no BnCluster.sln above {AppContext.BaseDirectory}");
        return Path.Combine(dir.FullName, "deploy");
    }

    public static string PathOf(string relative) => Path.Combine(Folder, relative);

    /// <summary>The real command line's commands (as `bncluster` builds them), by name.</summary>
    public static RootCommand Root() => Cli.BuildRoot(new CliBackends(), new CliContext(TextWriter.Null, TextWriter.Null));

    // ---- systemd ----

    public static IEnumerable<string> Units() => Directory.GetFiles(PathOf("systemd"), "*.service").Order(StringComparer.Ordinal);

    /// <summary>The unit's settings as (key, value) pairs in order (comments and section headers left out).</summary>
    public static List<(string Key, string Value)> UnitSettings(string unitPath) =>
        File.ReadAllLines(unitPath)
            .Select(l => l.Trim())
            .Where(l => l.Length > 0 && l[0] is not ('#' or ';' or '['))
            .Select(l => (l[..l.IndexOf('=')], l[(l.IndexOf('=') + 1)..]))
            .ToList();

    /// <summary>KEY=value lines of an EnvironmentFile (no quoting is used in ours).</summary>
    public static Dictionary<string, string> EnvironmentFile(string path) =>
        File.ReadAllLines(path)
            .Select(l => l.Trim())
            .Where(l => l.Length > 0 && l[0] != '#')
            .ToDictionary(l => l[..l.IndexOf('=')], l => l[(l.IndexOf('=') + 1)..]);

    private static IEnumerable<Invocation> SystemdInvocations()
    {
        foreach (var unit in Units())
        {
            var settings = UnitSettings(unit);
            // Its first required EnvironmentFile, whose example sits beside the unit under the same name.
            string envFile = settings.First(s => s.Key == "EnvironmentFile" && !s.Value.StartsWith('-')).Value;
            var env = EnvironmentFile(Path.Combine(Path.GetDirectoryName(unit)!, Path.GetFileName(envFile)));
            foreach (var (_, value) in settings.Where(s => s.Key == "ExecStart"))
            {
                var words = value.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (!words[0].EndsWith("/bncluster", StringComparison.Ordinal)) continue;
                var args = new List<string>();
                foreach (var word in words.Skip(1))
                {
                    var whole = Regex.Match(word, @"^\$\{(\w+)\}$");
                    var split = Regex.Match(word, @"^\$(\w+)$");
                    if (whole.Success) args.Add(Lookup(env, whole.Groups[1].Value, unit));
                    else if (split.Success) args.AddRange(Lookup(env, split.Groups[1].Value, unit).Split(' ', StringSplitOptions.RemoveEmptyEntries));
                    else if (word.Contains('$')) throw new InvalidOperationException($"{unit}: cannot expand {word}");
                    else args.Add(word);
                }
                yield return new Invocation("systemd/" + Path.GetFileName(unit), args.ToArray());
            }
        }
    }

    private static string Lookup(Dictionary<string, string> env, string name, string where) =>
        env.TryGetValue(name, out var v) ? v : throw new InvalidOperationException($"{where}: ${name} is not in its example environment file");

    // ---- compose ----

    public static YamlMappingNode Compose() => (YamlMappingNode)Load(PathOf("compose.yaml")).Single().RootNode;

    private static IEnumerable<Invocation> ComposeInvocations()
    {
        var services = (YamlMappingNode)Compose()["services"];
        foreach (var (name, service) in services.Children)
        {
            var command = ((YamlMappingNode)service).Children[new YamlScalarNode("command")];
            var args = ((YamlSequenceNode)command).Children.Select(n => ComposeDefaults(((YamlScalarNode)n).Value!)).ToArray();
            yield return new Invocation($"compose.yaml services.{name}", args);
        }
    }

    /// <summary>${NAME:-default} → default (a ${NAME} without a default would be empty when NAME is not set: refused).</summary>
    private static string ComposeDefaults(string value) =>
        Regex.Replace(value, @"\$\{(\w+)(:-([^}]*))?\}", m => m.Groups[2].Success
            ? m.Groups[3].Value
            : throw new InvalidOperationException($"compose.yaml: ${{{m.Groups[1].Value}}} has no default"));

    // ---- Kubernetes ----

    public static IEnumerable<(string File, YamlMappingNode Document)> Manifests() =>
        Directory.GetFiles(PathOf("k8s"), "*.yaml").Order(StringComparer.Ordinal)
            .SelectMany(f => Load(f).Select(d => (Path.GetFileName(f), (YamlMappingNode)d.RootNode)));

    private static IEnumerable<Invocation> KubernetesInvocations()
    {
        foreach (var (file, doc) in Manifests())
        {
            if (Child(doc, "spec") is not YamlMappingNode spec || Child(spec, "template") is not YamlMappingNode template) continue;
            var containers = (YamlSequenceNode)Child((YamlMappingNode)Child(template, "spec")!, "containers")!;
            foreach (YamlMappingNode container in containers.Children.Cast<YamlMappingNode>())
            {
                string image = ((YamlScalarNode)container["image"]).Value!;
                if (!image.Split('/')[^1].StartsWith("bncluster", StringComparison.Ordinal)) continue;
                if (Child(container, "command") is not null) throw new InvalidOperationException($"k8s/{file}: the image's entrypoint is bncluster; give args only");
                var env = Child(container, "env") is YamlSequenceNode list
                    ? list.Children.Cast<YamlMappingNode>().ToDictionary(
                        e => ((YamlScalarNode)e["name"]).Value!,
                        e => Child(e, "value") is YamlScalarNode v ? v.Value! : "0")
                    : [];
                var args = ((YamlSequenceNode)container["args"]).Children
                    .Select(n => Regex.Replace(((YamlScalarNode)n).Value!, @"\$\((\w+)\)", m => Lookup(env, m.Groups[1].Value, $"k8s/{file}")))
                    .ToArray();
                string kind = ((YamlScalarNode)doc["kind"]).Value!, name = ((YamlScalarNode)((YamlMappingNode)doc["metadata"])["name"]).Value!;
                yield return new Invocation($"k8s/{file} {kind}/{name} container {((YamlScalarNode)container["name"]).Value}", args);
            }
        }
    }

    public static YamlNode? Child(YamlMappingNode node, string key) =>
        node.Children.TryGetValue(new YamlScalarNode(key), out var child) ? child : null;

    private static List<YamlDocument> Load(string path)
    {
        var stream = new YamlStream();
        using var reader = new StreamReader(path);
        stream.Load(reader);
        return stream.Documents.ToList();
    }

    /// <summary>Every bncluster command line of the units, the compose file and the manifests, placeholders filled.</summary>
    public static List<Invocation> Invocations() => [.. SystemdInvocations(), .. ComposeInvocations(), .. KubernetesInvocations()];

    // ---- the README ----

    /// <summary>The `bncluster COMMAND …` lines of deploy/README.md's code blocks.</summary>
    public static List<Invocation> ReadmeInvocations() => Docs.DocumentedCommands.In(PathOf("README.md"));

    // ---- processes ----

    /// <summary>Runs a tool to its end (at most 2 minutes) and returns its exit code and output.</summary>
    public static (int Exit, string Out, string Error) RunTool(string file, IEnumerable<string> args, TimeSpan? limit = null,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) psi.Environment[name] = value;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(limit ?? TimeSpan.FromMinutes(2)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in time");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
