using System.Runtime.CompilerServices;
using BnCluster.Actors.Remote;

namespace BnCluster.Actors.Tests;

internal static class SocketCompletions
{
    /// <summary>The bncluster command runs socket continuations inline; so do these tests, before this process's first socket.</summary>
    [ModuleInitializer]
    internal static void Inline() => InlineSocketCompletions.Prefer();
}
