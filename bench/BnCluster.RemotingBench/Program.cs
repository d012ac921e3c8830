// Remoting benchmark: starts a second process (this program with --serve) and measures, over TCP on
// loopback, the request/response round trip of small Asks (p50/p99 over 20k after warm-up) and the
// throughput of 1 MiB bin messages. Usage: dotnet run -c Release --project bench/BnCluster.RemotingBench
//   [--asks 20000] [--blobs 1024]
using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using BnCluster.Actors;
using BnCluster.Actors.Remote;
using BnCluster.Core.Serialization;
using Serilog;

InlineSocketCompletions.Prefer(); // as the bncluster command does
var inv = CultureInfo.InvariantCulture;
int Arg(string name, int fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], inv) : fallback;
}

var quiet = new LoggerConfiguration().MinimumLevel.Warning().WriteTo.Sink(new StderrSink()).CreateLogger();
ActorSystem CreateSystem(string name) => ActorSystem.Create(name, new ActorSystemOptions
{
    Host = "127.0.0.1",
    Port = 0,
    Codecs = [new BlobCodec()],
    Remote = new RemoteSettings { JobId = "bench", MaxFrameSize = 8 * 1024 * 1024 },
    Logger = quiet,
});

if (args.Contains("--serve"))
{
    await using var server = CreateSystem("server");
    server.ActorOf(Props.Create(() => new EchoActor()), "echo");
    server.ActorOf(Props.Create(() => new SinkActor()), "sink");
    Console.Out.WriteLine($"LISTENING {server.Address}");
    Console.Out.Flush();
    while (Console.In.ReadLine() is not null) { } // the parent closes stdin to stop us
    return 0;
}

var asks = Arg("--asks", 20_000);
var blobs = Arg("--blobs", 1024);
var self = Environment.ProcessPath!;
var start = Path.GetFileNameWithoutExtension(self) == "dotnet"
    ? new ProcessStartInfo(self) { ArgumentList = { Assembly.GetEntryAssembly()!.Location, "--serve" } }
    : new ProcessStartInfo(self) { ArgumentList = { "--serve" } };
start.RedirectStandardInput = true;
start.RedirectStandardOutput = true;
start.UseShellExecute = false;
using var child = Process.Start(start)!;
try
{
    var line = child.StandardOutput.ReadLine() ?? throw new InvalidOperationException("The --serve process exited before listening.");
    var serverAddress = line["LISTENING ".Length..];
    await using var client = CreateSystem("client");
    var echo = client.ActorSelection(serverAddress + "/user/echo");
    var sink = client.ActorSelection(serverAddress + "/user/sink");
    var timeout = TimeSpan.FromSeconds(10);

    // ---- round trip ----
    for (var i = 0; i < 5000; i++) await echo.Ask<Pong>(new Ping(i), timeout);
    var samples = new double[asks];
    var clock = new Stopwatch();
    for (var i = 0; i < asks; i++)
    {
        clock.Restart();
        await echo.Ask<Pong>(new Ping(i), timeout);
        samples[i] = clock.Elapsed.TotalMicroseconds;
    }
    Array.Sort(samples);
    Console.WriteLine($"round trip over {asks} asks: p50 {samples[asks / 2]:0.0} µs, p90 {samples[asks * 9 / 10]:0.0} µs, p99 {samples[asks * 99 / 100]:0.0} µs, max {samples[^1]:0} µs (goal p50 <= 100 µs)");

    // ---- throughput of 1 MiB messages ----
    var payload = new byte[1024 * 1024];
    Random.Shared.NextBytes(payload);
    var blob = new Blob(payload); // the same array every time: the sender never touches it again
    for (var i = 0; i < 64; i++) sink.Tell(blob);
    await sink.Ask<Pong>(new Ping(-1), TimeSpan.FromSeconds(60)); // ordered after the blobs: all delivered
    var wall = Stopwatch.StartNew();
    for (var i = 0; i < blobs; i++) sink.Tell(blob);
    var received = await sink.Ask<Pong>(new Ping(-2), TimeSpan.FromSeconds(120));
    wall.Stop();
    var mib = (double)received.N / (1024 * 1024);
    Console.WriteLine($"throughput: {blobs} x 1 MiB in {wall.Elapsed.TotalMilliseconds:0} ms = {mib / wall.Elapsed.TotalSeconds:0} MiB/s (received {mib:0} MiB; goal >= 1024 MiB/s)");
    return 0;
}
finally
{
    child.StandardInput.Close();
    if (!child.WaitForExit(5000)) child.Kill(entireProcessTree: true);
}

sealed record Ping(long N);
sealed record Pong(long N);
sealed record Blob(byte[] Data);
sealed record BlobReceived(int Length);

/// <summary>Ping [10, n], Pong [11, n], Blob [12, bin]; a received blob is only measured, not copied.</summary>
sealed class BlobCodec : IMessageCodec
{
    public bool Handles(int typeId) => typeId is 10 or 11 or 12;

    public bool TryWrite(object message, MessagePackWriter w)
    {
        switch (message)
        {
            case Ping p: w.WriteArrayHeader(2); w.WriteInt32(10); w.WriteInt64(p.N); return true;
            case Pong p: w.WriteArrayHeader(2); w.WriteInt32(11); w.WriteInt64(p.N); return true;
            case Blob b: w.WriteArrayHeader(2); w.WriteInt32(12); w.WriteBinary(b.Data); return true;
            default: return false;
        }
    }

    public object Read(ref MessagePackReader r)
    {
        if (r.ReadArrayHeader() != 2) throw new MessagePackException("Bench messages have 2 elements.");
        return r.ReadInt32() switch
        {
            10 => new Ping(r.ReadInt64()),
            11 => new Pong(r.ReadInt64()),
            12 => new BlobReceived(r.ReadBinary().Length),
            var t => throw new MessagePackException($"Unknown bench message {t}."),
        };
    }
}

sealed class EchoActor : ReceiveActor
{
    public EchoActor() => Receive<Ping>(p => Sender.Tell(new Pong(p.N)));
}

/// <summary>Counts received bytes; a Ping answers with the bytes counted since the previous Ping.</summary>
sealed class SinkActor : ReceiveActor
{
    private long _bytes;

    public SinkActor()
    {
        Receive<BlobReceived>(b => _bytes += b.Length);
        Receive<Ping>(_ =>
        {
            Sender.Tell(new Pong(_bytes));
            _bytes = 0;
        });
    }
}

sealed class StderrSink : Serilog.Core.ILogEventSink
{
    public void Emit(Serilog.Events.LogEvent logEvent) => Console.Error.WriteLine($"[{logEvent.Level}] {logEvent.RenderMessage()}");
}
