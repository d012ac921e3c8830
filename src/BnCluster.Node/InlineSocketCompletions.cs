namespace BnCluster.Node;

/// <summary>
/// .NET runs a socket operation's continuation on a thread-pool thread unless DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS
/// is "1"; then it runs on the thread that saw the socket ready. The data plane's continuations only decode a frame and
/// tell an actor (they never block), so inline they save a thread wake-up per message, which a worker process pinned to
/// one CPU pays at every BN reduction. .NET reads the variable once, when the process's first socket is used.
/// </summary>
internal static class InlineSocketCompletions
{
    public const string Variable = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";

    /// <summary>Turns them on for this process and the processes it starts, unless the variable is set already (the user's choice wins).</summary>
    public static void Prefer()
    {
        if (Environment.GetEnvironmentVariable(Variable) is null) Environment.SetEnvironmentVariable(Variable, "1");
    }
}
