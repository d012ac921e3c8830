using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using BnCluster.Core.Model;

namespace BnCluster.Node.Commands;

/// <summary>
/// Option factories whose parsers validate the value and, when it is wrong, add ONE error that names the
/// option and says what is wrong (Cli prints it as one line, exit code 2).
/// </summary>
internal static class OptionParsers
{
    public static Option<int> Int(string name, int defaultValue, int min, string description, string helpName = "N", int max = int.MaxValue) =>
        new(name)
        {
            Description = description,
            HelpName = helpName,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r => ParseInt(r, name, min, max, defaultValue),
        };

    /// <summary>
    /// Upper bound of --threads: more compute threads than this only adds switching (the kernels split a batch's rows
    /// between them); a fixed number, so that a command line means the same on every machine.
    /// </summary>
    public const int MaxThreads = 256;

    /// <summary>Upper bound of --workers: every worker holds a copy of the network and a shard of each batch.</summary>
    public const int MaxWorkers = 1024;

    public static Option<long> Long(string name, long defaultValue, long min, string description) =>
        new(name)
        {
            Description = description,
            HelpName = "N",
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r =>
            {
                if (!TryToken(r, out var text)) return defaultValue;
                if (!long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v))
                    return Fail(r, defaultValue, $"{name}: \"{text}\" is not an integer");
                if (v < min) return Fail(r, defaultValue, $"{name}: {v} is less than {min}");
                return v;
            },
        };

    /// <summary>
    /// A finite double in [min, max]; minExclusive/maxExclusive make that end open. Training computes in float32, so the
    /// value must also be finite, not flushed to 0 (nor subnormal) and still inside the bounds once rounded to float32
    /// (--lr 1e-50 is 0 there, --beta1 0.99999999999 is 1).
    /// </summary>
    public static Option<double> Double(string name, double defaultValue, double min, bool minExclusive,
        double max, bool maxExclusive, string description) =>
        new(name)
        {
            Description = description,
            HelpName = "X",
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r =>
            {
                if (!TryToken(r, out var text)) return defaultValue;
                if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v))
                    return Fail(r, defaultValue, $"{name}: \"{text}\" is not a finite number");
                bool belowMin = minExclusive ? v <= min : v < min;
                bool aboveMax = maxExclusive ? v >= max : v > max;
                if (belowMin || aboveMax)
                    return Fail(r, defaultValue, $"{name}: {text} is not in {Interval(min, minExclusive, max, maxExclusive)}");
                if (Float32Problem(v, min, minExclusive, max, maxExclusive) is { } problem)
                    return Fail(r, defaultValue, $"{name}: {text} {problem}");
                return v;
            },
        };

    /// <summary>One of a fixed set of names (case-insensitive), e.g. relu|tanh|sigmoid; the value is the lower-case name (see <see cref="Pick"/>).</summary>
    public static Option<string> Choice<T>(string name, string defaultValue, IReadOnlyList<(string Name, T Value)> choices, string description) =>
        new(name)
        {
            Description = description,
            HelpName = string.Join('|', choices.Select(c => c.Name)),
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r =>
            {
                if (!TryToken(r, out var text)) return defaultValue;
                foreach (var (n, _) in choices)
                    if (string.Equals(n, text, StringComparison.OrdinalIgnoreCase)) return n;
                return Fail(r, defaultValue, $"{name}: \"{text}\" is not one of {string.Join(", ", choices.Select(c => c.Name))}");
            },
        };

    /// <summary>The value of a name accepted by <see cref="Choice"/>.</summary>
    public static T Pick<T>(IReadOnlyList<(string Name, T Value)> choices, string name) => choices.First(c => c.Name == name).Value;

    /// <summary>A comma-separated list of positive integers such as "512,256" (kept as text so help shows it as typed; see <see cref="ParseSizes"/>).</summary>
    public static Option<string> PositiveList(string name, string defaultValue, string description) =>
        new(name)
        {
            Description = description,
            HelpName = "N,N,…",
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r =>
            {
                if (!TryToken(r, out var text)) return defaultValue;
                return ParseSizes(text) is null
                    ? Fail(r, defaultValue, $"{name}: \"{text}\" is not a list of positive integers")
                    : text;
            },
        };

    /// <summary>"512,256" → [512, 256]; null when any entry is not a positive integer.</summary>
    public static int[]? ParseSizes(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var sizes = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out sizes[i]) || sizes[i] < 1)
                return null;
        return sizes;
    }

    /// <summary>HOST:PORT or [IPv6]:PORT; the port must be in [minPort, 65535].</summary>
    public static Option<HostPort?> Endpoint(string name, HostPort? defaultValue, int minPort, string description)
    {
        var option = new Option<HostPort?>(name)
        {
            Description = description,
            HelpName = "HOST:PORT",
            CustomParser = r =>
            {
                if (!TryToken(r, out var text)) return defaultValue;
                var hp = ParseHostPort(text, minPort);
                return hp ?? Fail(r, defaultValue, $"{name}: \"{text}\" is not HOST:PORT with a port in {minPort}..65535");
            },
        };
        // A default (even null) would satisfy Required, so only options that have one get a factory.
        if (defaultValue is not null) option.DefaultValueFactory = _ => defaultValue;
        return option;
    }

    /// <summary>
    /// A host name or address another node can reach (no port, no wildcard): the host in this node's Akka address, which
    /// is also its identity, when it cannot be the --listen host (bound to 0.0.0.0 in a container, say).
    /// </summary>
    public static Option<string?> AdvertisedHost(string name, string description) =>
        new(name)
        {
            Description = description,
            HelpName = "HOST",
            CustomParser = r =>
            {
                if (!TryToken(r, out var text)) return null;
                if (IsWildcard(text)) return Fail<string?>(r, null, $"{name}: {text} is a wildcard; give the name or address the other nodes reach this one by");
                if (text.Length == 0 || text.Any(c => char.IsWhiteSpace(c) || c is '/' or '@' or '[' or ']')
                    || (text.Contains(':') && !System.Net.IPAddress.TryParse(text, out _)))
                    return Fail<string?>(r, null, $"{name}: \"{text}\" is not a host name or address (the port is --listen's)");
                return text;
            },
        };

    /// <summary>An address that means "every interface": fine to bind, but not a node's address (which is its identity).</summary>
    public static bool IsWildcard(string host) => host is "0.0.0.0" or "::" or "[::]" or "*";

    /// <summary>"fashion-mnist", "digits" or an existing file.</summary>
    public static Option<string> Dataset(string name, string? defaultValue, string description)
    {
        var option = new Option<string>(name)
        {
            Description = description,
            HelpName = "fashion-mnist|mnist|digits|PATH",
            CustomParser = r =>
            {
                if (!TryToken(r, out var text)) return defaultValue!;
                if (KnownDatasets.Contains(text, StringComparer.OrdinalIgnoreCase)) return text.ToLowerInvariant();
                if (File.Exists(text) || Directory.Exists(text)) return text;
                return Fail(r, defaultValue!, $"{name}: \"{text}\" is neither fashion-mnist, mnist, digits, an existing CSV file nor a folder of IDX files");
            },
        };
        if (defaultValue is null) option.Required = true;
        else option.DefaultValueFactory = _ => defaultValue;
        return option;
    }

    /// <summary>A path to a file that must exist.</summary>
    public static Option<string> ExistingFile(string name, string description, string helpName = "FILE") =>
        new(name)
        {
            Description = description,
            HelpName = helpName,
            Required = true,
            CustomParser = r =>
            {
                if (!TryToken(r, out var text)) return "";
                if (!File.Exists(text)) return Fail(r, "", $"{name}: file \"{text}\" does not exist");
                return text;
            },
        };

    public static readonly string[] KnownDatasets = ["fashion-mnist", "mnist", "digits"];

    public static HostPort? ParseHostPort(string text, int minPort)
    {
        string host, portText;
        if (text.StartsWith('['))
        {
            int close = text.IndexOf(']');
            if (close < 0 || close + 1 >= text.Length || text[close + 1] != ':') return null;
            host = text[1..close];
            portText = text[(close + 2)..];
        }
        else
        {
            int colon = text.LastIndexOf(':');
            if (colon < 0 || text.IndexOf(':') != colon) return null;
            host = text[..colon];
            portText = text[(colon + 1)..];
        }
        if (host.Length == 0) return null;
        if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out int port)) return null;
        if (port < minPort || port > 65535) return null;
        return new HostPort(host, port);
    }

    private static int ParseInt(ArgumentResult r, string name, int min, int max, int defaultValue)
    {
        if (!TryToken(r, out var text)) return defaultValue;
        if (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v))
        {
            // An integer too large for the option is "more than", not "not an integer".
            bool isInteger = System.Numerics.BigInteger.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var big);
            if (isInteger && big > max) return Fail(r, defaultValue, $"{name}: {text} is more than {max}");
            if (isInteger && big < min) return Fail(r, defaultValue, $"{name}: {text} is less than {min}");
            return Fail(r, defaultValue, $"{name}: \"{text}\" is not an integer");
        }
        if (v < min) return Fail(r, defaultValue, $"{name}: {v} is less than {min}");
        if (v > max) return Fail(r, defaultValue, $"{name}: {v} is more than {max}");
        return v;
    }

    /// <summary>Why <paramref name="v"/> (already inside its bounds as a double) is not usable in float32, or null.</summary>
    private static string? Float32Problem(double v, double min, bool minExclusive, double max, bool maxExclusive)
    {
        float f = (float)v;
        if (!float.IsFinite(f)) return "is too large for float32 (the precision training computes in)";
        if (v != 0 && !float.IsNormal(f)) return "is too small for float32 (the precision training computes in; the smallest is 1.2e-38)";
        bool belowMin = minExclusive ? f <= min : f < min;
        bool aboveMax = maxExclusive ? f >= max : f > max;
        if (belowMin || aboveMax)
            return $"is {f.ToString("R", CultureInfo.InvariantCulture)} in float32 (the precision training computes in), not in {Interval(min, minExclusive, max, maxExclusive)}";
        return null;
    }

    private static bool TryToken(ArgumentResult r, out string text)
    {
        text = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
        return r.Tokens.Count > 0;
    }

    private static T Fail<T>(ArgumentResult r, T fallback, string message)
    {
        r.AddError(message);
        return fallback;
    }

    private static string Interval(double min, bool minExclusive, double max, bool maxExclusive)
    {
        string lo = double.IsNegativeInfinity(min) ? "(-inf" : (minExclusive ? "(" : "[") + min.ToString(CultureInfo.InvariantCulture);
        string hi = double.IsPositiveInfinity(max) ? "+inf)" : max.ToString(CultureInfo.InvariantCulture) + (maxExclusive ? ")" : "]");
        return lo + ", " + hi;
    }

    public static readonly (string, Activation)[] Activations =
        [("relu", Activation.Relu), ("tanh", Activation.Tanh), ("sigmoid", Activation.Sigmoid)];

    public static readonly (string, BatchNormPlacement)[] BnPlacements =
        [("before", BatchNormPlacement.Before), ("after", BatchNormPlacement.After), ("none", BatchNormPlacement.None)];

    public static readonly (string, Serilog.Events.LogEventLevel)[] LogLevels =
    [
        ("verbose", Serilog.Events.LogEventLevel.Verbose), ("debug", Serilog.Events.LogEventLevel.Debug),
        ("information", Serilog.Events.LogEventLevel.Information), ("warning", Serilog.Events.LogEventLevel.Warning),
        ("error", Serilog.Events.LogEventLevel.Error),
    ];

    public static readonly (string, OptimizerChoice)[] Optimizers =
        [("gd", OptimizerChoice.Gd), ("momentum", OptimizerChoice.Momentum), ("rmsprop", OptimizerChoice.RmsProp), ("adam", OptimizerChoice.Adam)];

    public static readonly (string, BnCluster.Core.Export.ExportFormat)[] ExportFormats =
        [("onnx", BnCluster.Core.Export.ExportFormat.Onnx), ("safetensors", BnCluster.Core.Export.ExportFormat.Safetensors)];
}
