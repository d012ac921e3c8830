using System.Diagnostics;
using System.Text.RegularExpressions;

namespace BnCluster.IntegrationTests.Processes;

/// <summary>
/// Machines for a test, made of Linux network namespaces (needs root and iproute2): a bridge in a namespace of its
/// own, and one namespace per host, each joined to the bridge by a veth pair created inside the bridge's namespace,
/// with address 10.66.S.(i+1)/24. The root namespace's interfaces and routes are never touched. Names carry the test
/// process id, so concurrent test runs on one machine do not collide. Dispose kills what was started in them and
/// deletes every namespace, whatever happened.
/// </summary>
public sealed class NetworkNamespaces : IDisposable
{
    private readonly List<string> _namespaces = [];
    private readonly List<Process> _processes = [];
    private readonly string _prefix = $"bnc{Environment.ProcessId}";

    /// <summary>Creates the bridge and <paramref name="hosts"/> hosts; throws with the failing command and its output.</summary>
    public NetworkNamespaces(int hosts)
    {
        Subnet = $"10.66.{Environment.ProcessId % 250 + 1}";
        DeleteLeftovers();
        try
        {
            string bridge = Add("br");
            Ip("-n", bridge, "link", "add", "br0", "type", "bridge");
            Ip("-n", bridge, "link", "set", "br0", "up");
            for (int i = 0; i < hosts; i++)
            {
                string host = Add($"h{i}");
                string hostSide = $"v{i}", bridgeSide = $"{_prefix}b{i}"; // interface names: at most 15 characters
                Ip("-n", bridge, "link", "add", bridgeSide, "type", "veth", "peer", "name", hostSide, "netns", host);
                Ip("-n", bridge, "link", "set", bridgeSide, "master", "br0");
                Ip("-n", bridge, "link", "set", bridgeSide, "up");
                Ip("-n", host, "addr", "add", $"{Address(i)}/24", "dev", hostSide);
                Ip("-n", host, "link", "set", hostSide, "up");
                Ip("-n", host, "link", "set", "lo", "up");
                Hosts.Add(host);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The first three octets of the hosts' /24.</summary>
    public string Subnet { get; }

    /// <summary>Namespace names of the hosts, in order.</summary>
    public List<string> Hosts { get; } = [];

    public string Address(int host) => $"{Subnet}.{host + 1}";

    /// <summary>Starts `ip netns exec HOST program args…` with stdout and stderr captured into <paramref name="output"/>.</summary>
    public Process Start(int host, ProcessStartInfo program, LineTap output)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in (string[])["netns", "exec", Hosts[host], program.FileName, .. program.ArgumentList]) psi.ArgumentList.Add(a);
        var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) output.WriteLine($"[{Hosts[host]}] {e.Data}"); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) output.WriteLine($"[{Hosts[host]}] {e.Data}"); };
        lock (_processes) _processes.Add(p);
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    /// <summary>Namespaces of an earlier test process that died before its Dispose (its pid is gone) are deleted.</summary>
    private static void DeleteLeftovers()
    {
        foreach (var line in Ip("netns", "list").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var name = Regex.Match(line, @"^(bnc(\d+)-\S+)");
            if (name.Success && int.TryParse(name.Groups[2].Value, out int pid) && !Directory.Exists($"/proc/{pid}"))
                Ip("netns", "del", name.Groups[1].Value);
        }
    }

    private string Add(string suffix)
    {
        string name = $"{_prefix}-{suffix}";
        Ip("netns", "add", name);
        _namespaces.Add(name);
        return name;
    }

    /// <summary>Runs `ip args…` and returns its output; throws with the command and its error output when it fails.</summary>
    private static string Ip(params string[] args)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"cannot run `ip` ({e.Message}): install iproute2 (the network-namespace test needs it, and root)", e);
        }
        using (p)
        {
            var stdout = p.StandardOutput.ReadToEndAsync();
            string stderr = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0)
                throw new InvalidOperationException($"`ip {string.Join(' ', args)}` failed with exit code {p.ExitCode}: {stderr.Trim()}" +
                    (Environment.UserName == "root" ? "" : " (network namespaces need root; this test runs as " + Environment.UserName + ")"));
            return stdout.Result;
        }
    }

    public void Dispose()
    {
        lock (_processes)
        {
            foreach (var p in _processes)
            {
                try
                {
                    if (!p.HasExited) p.Kill(entireProcessTree: true);
                    p.WaitForExit(5000);
                }
                catch (InvalidOperationException) { /* never started or already gone */ }
                finally { p.Dispose(); }
            }
            _processes.Clear();
        }
        for (int i = _namespaces.Count - 1; i >= 0; i--) // deleting a namespace deletes the veth ends inside it
        {
            try { Ip("netns", "del", _namespaces[i]); }
            catch (InvalidOperationException) { /* reported by the test's own failure if it matters */ }
        }
        _namespaces.Clear();
    }
}
