using System.Runtime.CompilerServices;

namespace BnCluster.Actors.Tests;

internal static class SocketCompletions
{
    /// <summary>
    /// The bncluster command runs socket continuations inline (Program.InlineSocketCompletions); so do these tests, before
    /// the first socket of this test process reads the setting.
    /// </summary>
    [ModuleInitializer]
    internal static void Inline()
    {
        const string name = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";
        if (Environment.GetEnvironmentVariable(name) is null) Environment.SetEnvironmentVariable(name, "1");
    }
}
