using System.Globalization;

namespace BnCluster.Node.Diagnostics;

/// <summary>Peak resident set size of a process, from Linux's /proc/&lt;pid&gt;/status.</summary>
public static class ProcessMemory
{
    /// <summary>
    /// VmHWM ("high water mark" of the resident set) of <paramref name="pid"/> in MiB, or null when the process is
    /// gone or /proc is not there (not Linux). Read it before the process exits: the kernel forgets it afterwards.
    /// </summary>
    public static double? PeakRssMb(int pid)
    {
        string path = $"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/status";
        string[] lines;
        try { lines = File.ReadAllLines(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        return ParseVmHwmKb(lines, path) is long kb ? kb / 1024.0 : null;
    }

    /// <summary>
    /// The VmHWM line's value in kB ("VmHWM:    123456 kB"); null without such a line (a zombie has none);
    /// <paramref name="source"/> names the file when the line is malformed.
    /// </summary>
    public static long? ParseVmHwmKb(IEnumerable<string> statusLines, string source)
    {
        foreach (var line in statusLines)
        {
            if (!line.StartsWith("VmHWM:", StringComparison.Ordinal)) continue;
            var fields = line["VmHWM:".Length..].Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length == 2 && fields[1] == "kB" && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
                return kb;
            throw new FormatException($"{source}: VmHWM line '{line}' is not '<number> kB'");
        }
        return null;
    }
}
