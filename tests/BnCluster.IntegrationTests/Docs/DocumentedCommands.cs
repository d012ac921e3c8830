using System.CommandLine;
using System.Text.RegularExpressions;
using BnCluster.IntegrationTests.Deploy;

namespace BnCluster.IntegrationTests.Docs;

/// <summary>
/// The `bncluster …` command lines a Markdown file shows in its code blocks, and what is wrong with one when the real
/// command line parses it: so that the README and deploy/README.md cannot rot when a flag is renamed.
/// </summary>
public static class DocumentedCommands
{
    public static string RepositoryRoot { get; } = Path.GetDirectoryName(DeployFiles.Folder)!;

    /// <summary>The command lines of <paramref name="markdownPath"/>'s code blocks (prompts, comments, pipes and `&amp;` cut off).</summary>
    public static List<Invocation> In(string markdownPath)
    {
        var found = new List<Invocation>();
        bool inCode = false;
        int number = 0;
        foreach (var line in File.ReadLines(markdownPath))
        {
            number++;
            if (line.TrimStart().StartsWith("```", StringComparison.Ordinal)) { inCode = !inCode; continue; }
            if (!inCode || line.TrimStart().StartsWith("alias ", StringComparison.Ordinal)) continue;
            var m = Regex.Match(line, @"(?:^|[\s/$#'])bncluster\s+([a-z]+)([^#|&;`']*)");
            if (!m.Success) continue;
            // A line that sets BNCLUSTER_* variables first may leave a required option to them.
            bool fromEnvironment = line[..m.Index].Contains("BNCLUSTER_", StringComparison.Ordinal);
            found.Add(new Invocation($"{Path.GetFileName(markdownPath)} line {number}",
                [m.Groups[1].Value, .. m.Groups[2].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries)], fromEnvironment));
        }
        return found;
    }

    /// <summary>What the real command line finds wrong with <paramref name="invocation"/>; files it names need not exist here.</summary>
    public static List<string> Problems(RootCommand root, Invocation invocation)
    {
        if (root.Subcommands.All(c => c.Name != invocation.Args[0])) return [$"no command {invocation.Args[0]}"];
        var parse = root.Parse(invocation.Args);
        var problems = parse.UnmatchedTokens.Select(t => $"unknown {t}").ToList();
        problems.AddRange(parse.Errors.Select(e => e.Message).Where(m =>
            !m.Contains("does not exist", StringComparison.Ordinal) && !m.Contains("is neither", StringComparison.Ordinal)
            && !(invocation.FromEnvironment && m.Contains("is required", StringComparison.Ordinal))).Distinct());
        return problems;
    }
}
