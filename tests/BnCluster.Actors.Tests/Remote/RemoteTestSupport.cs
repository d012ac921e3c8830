using System.Collections.Concurrent;
using BnCluster.Actors.Remote;
using BnCluster.Core.Serialization;
using BnCluster.TestKit;
using Serilog;
using Serilog.Core;
using Serilog.Events;

namespace BnCluster.Actors.Tests.Remote;

public sealed record Ping(int N);
public sealed record Pong(int N);

/// <summary>Test protocol: Ping = [1, n], Pong = [2, n].</summary>
public sealed class PingCodec : IMessageCodec
{
    public bool Handles(int typeId) => typeId is 1 or 2;

    public bool TryWrite(object message, MessagePackWriter writer)
    {
        switch (message)
        {
            case Ping p: writer.WriteArrayHeader(2); writer.WriteInt32(1); writer.WriteInt32(p.N); return true;
            case Pong p: writer.WriteArrayHeader(2); writer.WriteInt32(2); writer.WriteInt32(p.N); return true;
            default: return false;
        }
    }

    public object Read(ref MessagePackReader reader)
    {
        if (reader.ReadArrayHeader() != 2) throw new MessagePackException("Ping/Pong has 2 elements.");
        var type = reader.ReadInt32();
        var n = reader.ReadInt32();
        return type == 1 ? new Ping(n) : new Pong(n);
    }
}

/// <summary>Replies Pong(n) to Ping(n) and echoes anything else to its sender.</summary>
public sealed class EchoActor : ReceiveActor
{
    public EchoActor()
    {
        Receive<Ping>(p => Sender.Tell(new Pong(p.N)));
        ReceiveAny(m => Sender.Tell(m));
    }
}

public sealed class CapturingSink : ILogEventSink
{
    public ConcurrentQueue<string> Lines { get; } = new();
    public void Emit(LogEvent logEvent) => Lines.Enqueue(logEvent.RenderMessage().Replace("\"", ""));
    public bool Contains(string text) => Lines.Any(l => l.Contains(text, StringComparison.Ordinal));
}

/// <summary>One remoting-enabled ActorSystem on 127.0.0.1, an ephemeral port, with its log captured.</summary>
public sealed class RemoteNode : ActorTestKit
{
    public RemoteNode(string name, RemoteSettings? remote = null, CapturingSink? sink = null, int port = 0)
        : this(name, remote, sink ?? new CapturingSink(), port, true) { }

    private RemoteNode(string name, RemoteSettings? remote, CapturingSink sink, int port, bool _)
        : base(name, new ActorSystemOptions
        {
            Host = "127.0.0.1",
            Port = port,
            Codecs = [new PingCodec()],
            Remote = remote ?? new RemoteSettings { JobId = "job-1" },
            Logger = new LoggerConfiguration().MinimumLevel.Debug().WriteTo.Sink(sink).CreateLogger(),
            ShutdownTimeout = TimeSpan.FromSeconds(3),
        })
    {
        Log = sink;
    }

    public CapturingSink Log { get; }

    public IActorRef RefOn(RemoteNode other, string path) =>
        Sys.ResolveRemote(ActorPath.Parse(other.Sys.Address + path));

    public void AwaitLog(string text, TimeSpan? timeout = null) =>
        AwaitCondition(() => Log.Contains(text), timeout ?? TimeSpan.FromSeconds(5), $"log line containing '{text}' in {Sys.Name}: [{string.Join(" | ", Log.Lines)}]");
}
