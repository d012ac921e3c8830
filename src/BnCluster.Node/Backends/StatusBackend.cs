using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Akka.Actor;
using BnCluster.Coordinator;
using BnCluster.Coordinator.Messages;
using BnCluster.Node.Cluster;
using BnCluster.Node.Commands;

namespace BnCluster.Node.Backends;

/// <summary>
/// `bncluster status HOST:PORT [--watch [SECONDS]] [--json]`: asks the status actor on the coordinator's node
/// (<see cref="StatusActor"/>) and prints the members and the training state.
///
/// It does not join the cluster. A member, even of a role the coordinator ignores, would take part in the cluster's
/// gossip and failure detection: an observer killed, paused or behind a one-way firewall would be unreachable, which
/// holds up every membership change (a worker joining again) until the split-brain resolver downs it. A remote
/// actor system of another name that only sends a message and gets the answer on the same connection is seen by no
/// cluster mechanism at all; the coordinator's node reports its own view of the members, which is the one that
/// counts (it is the oldest node, the one the resolver keeps).
///
/// Before any of that a plain TCP connection checks that something listens, so a wrong address fails in
/// milliseconds; whatever does not answer within --timeout is reported the same way: one line, exit 1.
/// </summary>
public static class StatusBackend
{
    public static async Task<int> RunAsync(StatusOptions options, CliContext context, CancellationToken cancel)
    {
        var target = options.Coordinator;
        string local;
        try { local = await LocalAddressTo(target, options.Timeout, cancel).ConfigureAwait(false); }
        catch (StatusUnavailableException e)
        {
            context.Error.WriteLine($"bncluster: status: {e.Message}");
            return Cli.ExitFailure;
        }

        var system = ActorSystem.Create(ClusterConfig.ObserverSystemName, ClusterConfig.Observer(local));
        try
        {
            var status = system.ActorSelection(RemoteCluster.StatusPath(RemoteCluster.NodeAddress(target.Host, target.Port)));
            bool clear = options.Watch is not null && !options.Json && ReferenceEquals(context.Out, Console.Out) && !Console.IsOutputRedirected;
            string? lastState = null;
            for (bool first = true; ; first = false)
            {
                ClusterStatus answer;
                try
                {
                    // Watching: a coordinator that has gone is seen at once (nothing listens), not after --timeout.
                    if (!first) await LocalAddressTo(target, options.Timeout, cancel).ConfigureAwait(false);
                    answer = await status.Ask<ClusterStatus>(new StatusQuery(ProtocolInfo.Version), options.Timeout, cancel).ConfigureAwait(false);
                }
                catch (Exception e) when (e is AskTimeoutException or StatusUnavailableException)
                {
                    if (lastState == "done")
                    {
                        context.Error.WriteLine($"bncluster: status: the run at {target} is over (its coordinator has stopped)");
                        return Cli.ExitOk;
                    }
                    context.Error.WriteLine(e is StatusUnavailableException ? $"bncluster: status: {e.Message}"
                        : $"bncluster: status: {target} did not answer within {Seconds(options.Timeout)} s "
                          + "(not a bncluster coordinator, one of another version, or the host differs from the one given to its --listen)");
                    return Cli.ExitFailure;
                }
                lastState = answer.Training?.State;
                if (clear) context.Out.Write("\u001b[H\u001b[2J");
                context.Out.Write(options.Json ? FormatJson(answer) + "\n" : FormatText(answer));
                context.Out.Flush();
                if (options.Watch is not { } every) return Cli.ExitOk;
                if (!options.Json && !clear) context.Out.WriteLine();
                // Ctrl+C ends the watch like any command: exit 130 (143 for SIGTERM), as the CLI's contract says.
                await Task.Delay(every, cancel).ConfigureAwait(false);
            }
        }
        finally
        {
            // No cluster to leave: the remote connection closes with the system.
            await system.Terminate().WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>What makes a status unavailable before any Akka message: the host, or nothing listening.</summary>
    private sealed class StatusUnavailableException(string message) : Exception(message);

    /// <summary>
    /// Connects to <paramref name="target"/> once (and closes at once) to learn that something listens there, and returns
    /// the local address that reaches it (this system's address, as the coordinator would see it).
    /// </summary>
    private static async Task<string> LocalAddressTo(HostPort target, TimeSpan timeout, CancellationToken cancel)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        limit.CancelAfter(timeout);
        try
        {
            IPAddress[] addresses;
            try { addresses = await Dns.GetHostAddressesAsync(target.Host, limit.Token).ConfigureAwait(false); }
            catch (SocketException e) { throw new StatusUnavailableException($"cannot resolve {target.Host} ({e.Message})"); }
            using var probe = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try { await probe.ConnectAsync(addresses, target.Port, limit.Token).ConfigureAwait(false); }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused)
            {
                throw new StatusUnavailableException($"nothing listens at {target} (connection refused); is the coordinator running, and is this its --listen address?");
            }
            catch (SocketException e) { throw new StatusUnavailableException($"cannot connect to {target} ({e.Message})"); }
            var local = ((IPEndPoint)probe.LocalEndPoint!).Address;
            return (local.IsIPv4MappedToIPv6 ? local.MapToIPv4() : local).ToString();
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            throw new StatusUnavailableException($"no connection to {target} within {Seconds(timeout)} s");
        }
    }

    private static string Seconds(TimeSpan t) => t.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture);

    /// <summary>The status as a person reads it: one line for the run, then one per member.</summary>
    public static string FormatText(ClusterStatus s)
    {
        var text = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        text.Append(inv, $"coordinator {s.Node}\n");
        if (s.Training is { } t)
        {
            string steps = t.MaxSteps > 0 ? $"step {t.Step}/{t.MaxSteps}" : $"step {t.Step}";
            text.Append(inv, $"  {t.State}: epoch {t.Epoch}/{t.Epochs}, {steps} (batch {t.Batch}/{t.BatchesInEpoch} of the epoch), ");
            text.Append(inv, $"{t.SamplesPerSecond:F0} samples/s, last loss {Number(t.LastLoss, "F4")}, accuracy {Number(t.LastAccuracy, "F4")}, ");
            text.Append(inv, $"{t.Workers.Length} worker(s) of {t.WorkersNeeded} needed, {t.Seconds:F1} s since the coordinator started\n");
        }
        else text.Append("  (the coordinator actor did not answer: it is busy or has stopped)\n");
        var rows = s.Members.Select(m => (m.Address, Roles: string.Join(',', m.Roles), m.Status, Reach: m.Reachable ? "reachable" : "UNREACHABLE",
            Worker: s.Training?.Workers.FirstOrDefault(w => w.Node == m.Address) is { } w ? $"worker {w.Id}" : "")).ToList();
        text.Append(inv, $"  {rows.Count} member(s):\n");
        int width = rows.Count > 0 ? rows.Max(r => r.Address.Length) : 0, roles = rows.Count > 0 ? rows.Max(r => r.Roles.Length) : 0;
        foreach (var r in rows)
            text.Append(string.Create(inv, $"    {r.Address.PadRight(width)}  {r.Roles.PadRight(roles)}  {r.Status,-8}  {r.Reach,-11}  {r.Worker}").TrimEnd()).Append('\n');
        return text.ToString();
    }

    private static string Number(double v, string format) => double.IsFinite(v) ? v.ToString(format, CultureInfo.InvariantCulture) : "-";

    /// <summary>One JSON object: node, members, training (null when the coordinator actor did not answer); NaN as null.</summary>
    public static string FormatJson(ClusterStatus s) =>
        JsonText.Write(json =>
        {
            json.WriteStartObject();
            json.WriteString("node", s.Node);
            json.WriteStartArray("members");
            foreach (var m in s.Members)
            {
                json.WriteStartObject();
                json.WriteString("address", m.Address);
                json.WriteStartArray("roles");
                foreach (var r in m.Roles) json.WriteStringValue(r);
                json.WriteEndArray();
                json.WriteString("status", m.Status);
                json.WriteBoolean("reachable", m.Reachable);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            if (s.Training is not { } t) json.WriteNull("training");
            else
            {
                json.WriteStartObject("training");
                json.WriteString("state", t.State);
                json.WriteNumber("epoch", t.Epoch);
                json.WriteNumber("epochs", t.Epochs);
                json.WriteNumber("step", t.Step);
                json.WriteNumber("max_steps", t.MaxSteps);
                json.WriteNumber("batch", t.Batch);
                json.WriteNumber("batches_in_epoch", t.BatchesInEpoch);
                json.WriteFiniteOrNull("samples_per_second", t.SamplesPerSecond);
                json.WriteFiniteOrNull("last_loss", t.LastLoss);
                json.WriteFiniteOrNull("last_accuracy", t.LastAccuracy);
                json.WriteNumber("workers_needed", t.WorkersNeeded);
                json.WriteStartArray("workers");
                foreach (var w in t.Workers)
                {
                    json.WriteStartObject();
                    json.WriteNumber("id", w.Id);
                    json.WriteString("node", w.Node);
                    json.WriteEndObject();
                }
                json.WriteEndArray();
                json.WriteFiniteOrNull("seconds", t.Seconds);
                json.WriteEndObject();
            }
            json.WriteEndObject();
        });
}
