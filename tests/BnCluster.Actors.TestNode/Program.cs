// Usage: BnCluster.Actors.TestNode --name NAME [--port 0] [--seed ADDRESS] [--job ID] [--role worker]
//        [--heartbeat-ms 100] [--pause-ms 300] [--down-ms 500]
// Prints one line per event on stdout, so tests wait on lines, never on sleeps:
//   LISTENING <address>, UP <address>, UNREACHABLE <address>, REACHABLE <address>, REMOVED <address>,
//   LEFT <address>, LOG <level> <message> (warnings and errors of the runtime).
// /user/echo replies to any message with the message itself. SIGTERM/Ctrl+C leave gracefully.
using BnCluster.Actors;
using BnCluster.Actors.Cluster;
using BnCluster.Actors.Remote;
using Serilog;
using Serilog.Core;
using Serilog.Events;

var options = new Dictionary<string, string>(StringComparer.Ordinal);
for (var i = 0; i + 1 < args.Length; i += 2)
{
    if (!args[i].StartsWith("--", StringComparison.Ordinal))
    {
        Console.Error.WriteLine($"Unexpected argument '{args[i]}'; expected --option value pairs.");
        return 2;
    }
    options[args[i][2..]] = args[i + 1];
}
string Opt(string name, string fallback) => options.TryGetValue(name, out var v) ? v : fallback;
int Ms(string name, int fallback) => int.Parse(Opt(name, fallback.ToString(System.Globalization.CultureInfo.InvariantCulture)), System.Globalization.CultureInfo.InvariantCulture);

var logger = new LoggerConfiguration().MinimumLevel.Information().WriteTo.Sink(new StdoutSink()).CreateLogger();
var system = ActorSystem.Create(Opt("name", "node"), new ActorSystemOptions
{
    Host = "127.0.0.1",
    Port = int.Parse(Opt("port", "0"), System.Globalization.CultureInfo.InvariantCulture),
    Remote = new RemoteSettings { JobId = Opt("job", "job-1"), Roles = [Opt("role", MemberRoles.Worker)] },
    Logger = logger,
    ShutdownTimeout = TimeSpan.FromSeconds(3),
});
StdoutSink.WriteLine($"LISTENING {system.Address}");
system.ActorOf(Props.Create(() => new Echo()), "echo");
system.ActorOf(Props.Create(() => new EventPrinter()), "events");
var seed = options.TryGetValue("seed", out var seedText) ? Address.Parse(seedText) : null;
var cluster = ClusterNode.Start(system, new ClusterSettings
{
    SeedNodes = seed is null ? [] : [seed],
    Membership = new MembershipSettings
    {
        HeartbeatInterval = TimeSpan.FromMilliseconds(Ms("heartbeat-ms", 100)),
        AcceptableHeartbeatPause = TimeSpan.FromMilliseconds(Ms("pause-ms", 300)),
        MinStdDeviation = TimeSpan.FromMilliseconds(50),
        DownUnreachableAfter = TimeSpan.FromMilliseconds(Ms("down-ms", 500)),
    },
});
using var signals = cluster.LeaveAndTerminateOnShutdownSignals();
await system.WhenTerminated;
return 0;

sealed class Echo : ReceiveActor
{
    public Echo() => ReceiveAny(m => Sender.Tell(m));
}

sealed class EventPrinter : ReceiveActor
{
    public EventPrinter()
    {
        Receive<MemberUp>(e => StdoutSink.WriteLine($"UP {e.Member.Address}"));
        Receive<MemberUnreachable>(e => StdoutSink.WriteLine($"UNREACHABLE {e.Member.Address}"));
        Receive<MemberReachable>(e => StdoutSink.WriteLine($"REACHABLE {e.Member.Address}"));
        Receive<MemberLeft>(e => StdoutSink.WriteLine($"LEFT {e.Member.Address}"));
        Receive<MemberRemoved>(e => StdoutSink.WriteLine($"REMOVED {e.Member.Address}"));
        ReceiveAny(_ => { });
    }

    protected override void PreStart() => Context.System.EventStream.Subscribe(Self, typeof(MemberEvent));
}

sealed class StdoutSink : ILogEventSink
{
    private static readonly object Gate = new();

    public static void WriteLine(string line)
    {
        lock (Gate)
        {
            Console.Out.WriteLine(line);
            Console.Out.Flush();
        }
    }

    public void Emit(LogEvent logEvent)
    {
        if (logEvent.Level >= LogEventLevel.Warning)
            WriteLine($"LOG {logEvent.Level} {logEvent.RenderMessage().Replace("\"", "").ReplaceLineEndings(" ")}");
    }
}
