using System.Text.RegularExpressions;
using BnCluster.Node.Commands;

namespace BnCluster.Node.Tests;

/// <summary>
/// Every `bncluster …` command line in the README's code blocks names a command and options that exist, so the
/// manual cannot rot when a flag is renamed. Files it names (models, CSVs) need not exist here.
/// </summary>
public sealed class ReadmeCommandTests
{
    [Fact]
    public void Every_command_in_the_readme_parses()
    {
        var lines = CommandLines(File.ReadAllLines(Path.Combine(RepositoryRoot(), "README.md"))).ToList();
        Assert.True(lines.Count >= 10, $"only {lines.Count} bncluster command lines found in README.md");
        var root = Cli.BuildRoot(new CliBackends(), new CliContext(TextWriter.Null, TextWriter.Null));
        var commands = root.Subcommands.Select(c => c.Name).ToHashSet();
        foreach (var (line, fromEnvironment) in lines)
        {
            var args = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            Assert.True(commands.Contains(args[0]), $"README: \"bncluster {line}\": no command {args[0]}");
            var parse = root.Parse(args);
            Assert.True(parse.UnmatchedTokens.Count == 0, $"README: \"bncluster {line}\": unknown {string.Join(", ", parse.UnmatchedTokens)}");
            // A line that sets BNCLUSTER_* variables may leave a required option to them.
            var wrong = parse.Errors.Where(e => !NamesAMissingFile(e.Message)
                && !(fromEnvironment && e.Message.Contains("is required", StringComparison.Ordinal))).ToList();
            Assert.True(wrong.Count == 0, $"README: \"bncluster {line}\": {string.Join("; ", wrong.Select(e => e.Message))}");
        }
    }

    /// <summary>
    /// The arguments after `bncluster` on each line of a fenced code block that runs it (prompts, `&amp;`, pipes and comments
    /// cut off), and whether the line sets BNCLUSTER_* variables before it.
    /// </summary>
    private static IEnumerable<(string Line, bool FromEnvironment)> CommandLines(IEnumerable<string> readme)
    {
        bool inBlock = false;
        foreach (var raw in readme)
        {
            if (raw.TrimStart().StartsWith("```", StringComparison.Ordinal)) { inBlock = !inBlock; continue; }
            if (!inBlock) continue;
            var match = Regex.Match(raw, @"(?:^|[\s$#'])bncluster\s+([a-z][^|&#;`']*)");
            if (!match.Success || raw.TrimStart().StartsWith("alias ", StringComparison.Ordinal)) continue;
            string line = match.Groups[1].Value.Trim();
            bool fromEnvironment = raw[..match.Index].Contains("BNCLUSTER_", StringComparison.Ordinal);
            if (line.Length > 0 && !line.StartsWith("--", StringComparison.Ordinal)) yield return (line, fromEnvironment);
        }
    }

    private static bool NamesAMissingFile(string error) =>
        error.Contains("does not exist", StringComparison.Ordinal) || error.Contains("is neither", StringComparison.Ordinal);

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "BnCluster.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no BnCluster.sln above {AppContext.BaseDirectory}");
    }
}
