using BnCluster.IntegrationTests.Deploy;
using Xunit;

namespace BnCluster.IntegrationTests.Docs;

/// <summary>
/// Every `bncluster …` command line in the README's code blocks names a command and options that exist, so the
/// manual cannot rot when a flag is renamed. Files it names (models, CSVs) need not exist here.
/// </summary>
public sealed class ReadmeCommandTests
{
    [Fact]
    public void Every_command_in_the_readme_parses()
    {
        var invocations = DocumentedCommands.In(Path.Combine(DocumentedCommands.RepositoryRoot, "README.md"));
        Assert.True(invocations.Count >= 10, $"only {invocations.Count} bncluster command lines found in README.md");
        var root = DeployFiles.Root();
        foreach (var invocation in invocations)
        {
            var problems = DocumentedCommands.Problems(root, invocation);
            Assert.True(problems.Count == 0, $"{invocation}: {string.Join("; ", problems)}");
        }
    }
}
