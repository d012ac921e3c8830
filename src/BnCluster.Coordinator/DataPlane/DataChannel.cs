using System.Buffers;
using System.Collections.Frozen;
using Akka.Actor;
using BnCluster.Collectives.Tcp;
using BnCluster.Coordinator.Messages;
using BnCluster.Core.Training;
using MessagePack;

namespace BnCluster.Coordinator.DataPlane;

/// <summary>
/// The step's messages between the coordinator and one worker that shares no memory with it (another machine, or
/// --no-shared-memory), on a TCP connection of their own instead of Akka.Remote: a frame is one message, <c>[type][MessagePack
/// body]</c>, encoded straight from the message's arrays and decoded into TensorPool's arrays. Akka.Remote copies a bulk
/// message several times and shares its connection with the cluster's heartbeats; this carries megabytes a step without
/// either. Received messages are told to the local actor as if sent by the peer's actor, so the actors see one protocol
/// whatever carries it. Both ends send from any thread (sends are serialized); one loop receives.
/// </summary>
public sealed class DataChannel : IDisposable
{
    /// <summary>The first frame a worker sends: this magic, then the token of the coordinator's <see cref="DataChannelOffer"/>.</summary>
    private static ReadOnlySpan<byte> Magic => "BNDP1"u8;

    // A frame's type byte: the index of the message's type in this list (both sides run the same build: the join refuses
    // another protocol version).
    private static readonly Type[] Types = typeof(ITrainingMessage).Assembly.GetTypes()
        .Where(t => t.IsClass && !t.IsAbstract && typeof(ITrainingMessage).IsAssignableFrom(t))
        .OrderBy(t => t.Name, StringComparer.Ordinal).ToArray();
    private static readonly FrozenDictionary<Type, byte> TypeIds = Types.Select((t, i) => (t, (byte)i)).ToFrozenDictionary(x => x.t, x => x.Item2);

    private readonly FrameConnection _connection;
    private readonly CancellationTokenSource _stop = new();

    private DataChannel(FrameConnection connection) => _connection = connection;

    public string Remote => _connection.Remote;

    /// <summary>The longest frame of a network: every tensor of it (a parameter snapshot; gradients are fewer) plus room for the rest.</summary>
    public static int FrameLimit(Parameters shape) =>
        checked(shape.AllTensors.Sum(t => t.Values.Length * sizeof(float) + 8) + 1024 * 1024);

    public static byte[] Hello(ReadOnlySpan<byte> token) => [.. Magic, .. token];

    /// <summary>The token a hello carries, or null when it is not a hello.</summary>
    public static ReadOnlySpan<byte> TokenOf(ReadOnlySpan<byte> hello) =>
        hello.StartsWith(Magic) ? hello[Magic.Length..] : default;

    /// <summary>Takes over an authenticated connection: its frames are told to <paramref name="receiver"/> as sent by <paramref name="peer"/>.</summary>
    public static DataChannel Open(FrameConnection connection, int frameLimit, IActorRef receiver, IActorRef peer, Action<DataChannel, string> closed)
    {
        connection.MaxFrameBytes = frameLimit;
        var channel = new DataChannel(connection);
        _ = channel.ReceiveAsync(receiver, peer, closed);
        return channel;
    }

    /// <summary>The worker's side: connects to the coordinator's data plane and says hello with the offer's token.</summary>
    public static async Task<DataChannel> ConnectAsync(DataChannelOffer offer, int frameLimit, IActorRef receiver, IActorRef peer,
        Action<DataChannel, string> closed, CancellationToken cancel)
    {
        var connection = await FrameConnection.ConnectAsync(offer.Host, offer.Port, frameLimit, cancel).ConfigureAwait(false);
        try
        {
            connection.Send(Hello(offer.Token));
            return Open(connection, frameLimit, receiver, peer, closed);
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    /// <summary>Sends <paramref name="message"/>; its pooled arrays go back to the pool once encoded (it was sent).</summary>
    /// <summary>
    /// Sends <paramref name="message"/>, in order with the others of this channel. A message with tensors (megabytes) is
    /// encoded and written by the channel's writer, so that the coordinator hands the next worker its parameters at once
    /// instead of after this worker's; a small one (a BN partial, which a step waits for) is written here, unless
    /// messages wait before it. Its pooled arrays go back to the pool once encoded (it was sent).
    /// False when the connection is gone and the message was not taken: it is intact (nothing released) and the caller
    /// sends it another way; the receive loop reports the broken connection too.
    /// </summary>
    public bool TrySend(ITrainingMessage message)
    {
        try
        {
            Send(message);
            return true;
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or ObjectDisposedException)
        {
            return false;
        }
    }

    private void Send(ITrainingMessage message)
    {
        lock (_queue)
        {
            if (_writing || CarriesTensors(message))
            {
                _queue.Enqueue(message);
                if (!_writing)
                {
                    _writing = true;
                    _ = Task.Run(WriteQueued);
                }
                return;
            }
            Write(message); // (under the queue's lock: nothing can overtake it)
        }
    }

    private readonly Queue<ITrainingMessage> _queue = new();
    private bool _writing; // the writer runs (guarded by _queue)

    private static bool CarriesTensors(ITrainingMessage message) => message switch
    {
        StartStep { Parameters: not null } or Evaluate { Parameters: not null } => true,
        StepGradients m => m.Tensors.Length > 0,
        _ => false,
    };

    private void WriteQueued()
    {
        while (true)
        {
            ITrainingMessage message;
            lock (_queue)
            {
                if (!_queue.TryDequeue(out message!))
                {
                    _writing = false;
                    return;
                }
            }
            try { Write(message); }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or ObjectDisposedException)
            {
                // The connection broke: its receive loop reports it, and both sides go back to Akka. What was queued is lost
                // like a message to a dead node (the step is re-run once the worker is found gone or silent).
                lock (_queue)
                {
                    _queue.Clear();
                    _writing = false;
                }
                _connection.Dispose();
                return;
            }
        }
    }

    private void Write(ITrainingMessage message)
    {
        _connection.Send(message, static (writer, m) =>
        {
            var span = writer.GetSpan(1);
            span[0] = TypeIds[m.GetType()];
            writer.Advance(1);
            MessagePackSerializer.Serialize(m.GetType(), writer, m, TrainingMessageSerializer.Options);
        });
        TrainingMessageSerializer.ReleaseSent(message);
    }

    private async Task ReceiveAsync(IActorRef receiver, IActorRef peer, Action<DataChannel, string> closed)
    {
        string reason = "closed by the peer";
        try
        {
            await _connection.ReceiveLoopAsync(frame =>
            {
                int type = frame.Span[0];
                if (type >= Types.Length) throw new FrameException($"a frame of unknown message type {type} from {Remote}");
                receiver.Tell(TrainingMessageSerializer.Deserialize(frame[1..], Types[type]), peer);
            }, _stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested) { reason = "closed here"; }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or MessagePackSerializationException or ObjectDisposedException)
        {
            reason = e.Message;
        }
        _connection.Dispose();
        closed(this, reason);
    }

    public void Dispose()
    {
        _stop.Cancel();
        _connection.Dispose();
    }
}
