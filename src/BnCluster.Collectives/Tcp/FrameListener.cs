using System.Net;
using System.Net.Sockets;

namespace BnCluster.Collectives.Tcp;

/// <summary>
/// The data plane's listening side. A peer must open with a hello frame of at most <see cref="HelloLimit"/> bytes that
/// <c>accept</c> recognizes (a token the coordinator handed out in an Akka message); anything else, or nothing within
/// <see cref="HelloTimeout"/>, closes the connection. Only then is the frame limit raised to the one for tensors.
/// </summary>
public sealed class FrameListener : IDisposable
{
    public const int HelloLimit = 256;
    public static readonly TimeSpan HelloTimeout = TimeSpan.FromSeconds(10);

    private readonly Socket _socket;
    private readonly CancellationTokenSource _stop = new();
    private readonly Func<ReadOnlyMemory<byte>, FrameConnection, bool> _accept;
    private readonly Action<string> _refused;

    /// <param name="accept">Given a peer's hello and its connection: true takes the connection over (the caller owns it from then on).</param>
    /// <param name="refused">Told why a connection was closed (a bad hello, a frame too long, a timeout).</param>
    public FrameListener(string host, int port, Func<ReadOnlyMemory<byte>, FrameConnection, bool> accept, Action<string> refused)
    {
        _accept = accept;
        _refused = refused;
        var address = IPAddress.TryParse(host, out var ip) ? ip : Dns.GetHostAddresses(host).First(a => a.AddressFamily == AddressFamily.InterNetwork);
        _socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        _socket.Bind(new IPEndPoint(address, port));
        _socket.Listen(64);
        Port = ((IPEndPoint)_socket.LocalEndPoint!).Port;
        _ = AcceptLoopAsync();
    }

    public int Port { get; }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket peer;
            try { peer = await _socket.AcceptAsync(_stop.Token).ConfigureAwait(false); }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException) { return; }
            _ = GreetAsync(new FrameConnection(peer, HelloLimit));
        }
    }

    private async Task GreetAsync(FrameConnection connection)
    {
        string? why;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        timeout.CancelAfter(HelloTimeout);
        try
        {
            var hello = await connection.ReceiveAsync(timeout.Token).ConfigureAwait(false);
            if (hello is not var (buffer, length)) why = "closed before its hello";
            else
            {
                try
                {
                    if (_accept(buffer.AsMemory(0, length), connection)) return;
                    why = "an unknown hello";
                }
                finally { System.Buffers.ArrayPool<byte>.Shared.Return(buffer); }
            }
        }
        catch (OperationCanceledException) { why = "no hello in time"; }
        catch (Exception e) when (e is IOException or SocketException) { why = e.Message; }
        connection.Dispose();
        if (!_stop.IsCancellationRequested) _refused($"data-plane connection from {connection.Remote} closed: {why}");
    }

    public void Dispose()
    {
        _stop.Cancel();
        _socket.Dispose();
    }
}
