using System.Diagnostics;
using Xunit;

namespace BnCluster.Core.Tests.Model;

/// <summary>
/// Runs Debian's /usr/bin/python3 (with python3-msgpack, python3-numpy, python3-torch) for interop tests. The python3 on PATH may be a
/// pyenv without msgpack, so the path is fixed. Missing interpreter or module is a test failure, not a skip.
/// </summary>
internal static class SystemPython
{
    public const string Interpreter = "/usr/bin/python3";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60); // importing torch takes seconds on a busy machine

    public sealed record Result(int ExitCode, byte[] Stdout, string Stderr)
    {
        public string StdoutText => System.Text.Encoding.UTF8.GetString(Stdout);
    }

    /// <summary>Fails the test with install instructions unless /usr/bin/python3 can import msgpack.</summary>
    public static void RequireMsgpack() => RequireModule("msgpack", "python3-msgpack");

    /// <summary>Fails the test with install instructions unless /usr/bin/python3 can import <paramref name="module"/>.</summary>
    public static void RequireModule(string module, string debianPackage)
    {
        string install = $"install Debian's {debianPackage} (apt-get install python3 {debianPackage}); the interop tests need /usr/bin/python3 with the {module} module";
        if (!File.Exists(Interpreter)) Assert.Fail($"{Interpreter} not found: {install}");
        Result probe = RunRaw($"import {module}", []);
        if (probe.ExitCode != 0) Assert.Fail($"{Interpreter} cannot import {module} ({probe.Stderr.Trim()}): {install}");
    }

    /// <summary>Runs <paramref name="script"/> with <c>-c</c>; fails the test on a non-zero exit, showing stderr.</summary>
    public static Result Run(string script, params string[] args)
    {
        RequireMsgpack();
        return RunChecked(script, args);
    }

    /// <summary>As <see cref="Run"/>, for a script that needs no msgpack (call <see cref="RequireModule"/> for what it does need).</summary>
    public static Result RunChecked(string script, params string[] args)
    {
        Result result = RunRaw(script, args);
        if (result.ExitCode != 0)
            Assert.Fail($"python exited with {result.ExitCode}:\n{result.Stderr}\nstdout: {result.StdoutText}");
        return result;
    }

    private static Result RunRaw(string script, string[] args)
    {
        var info = new ProcessStartInfo(Interpreter)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add("-I"); // isolated: ignore PYTHON* variables and user site-packages
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add(script);
        foreach (string a in args) info.ArgumentList.Add(a);

        using var process = Process.Start(info) ?? throw new InvalidOperationException($"cannot start {Interpreter}");
        try
        {
            process.StandardInput.Close();
            var stdout = new MemoryStream();
            Task copyOut = process.StandardOutput.BaseStream.CopyToAsync(stdout);
            Task<string> readErr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(Timeout))
                Assert.Fail($"python did not finish within {Timeout.TotalSeconds} s");
            if (!Task.WaitAll([copyOut, readErr], Timeout))
                Assert.Fail("python output streams did not close");
            return new Result(process.ExitCode, stdout.ToArray(), readErr.Result);
        }
        finally
        {
            if (!process.HasExited)
            {
                try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                process.WaitForExit(5000);
            }
        }
    }
}
