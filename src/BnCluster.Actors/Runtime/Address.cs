using System.Globalization;
using System.Text;

namespace BnCluster.Actors;

/// <summary>Node identity: <c>bncluster://system@host:port</c>, or <c>bncluster://system</c> for a purely local system.</summary>
public sealed record Address(string System, string? Host = null, int? Port = null)
{
    public const string Scheme = "bncluster";

    public static Address Local(string system) => new(system);

    public bool HasLocalScope => Host is null;

    public override string ToString() =>
        Host is null ? $"{Scheme}://{System}" : $"{Scheme}://{System}@{FormatHost(Host)}:{Port}";

    private static string FormatHost(string host) => host.Contains(':') ? $"[{host}]" : host;

    /// <summary>Parses an address; a trailing path is refused (use <see cref="ActorPath.Parse"/> for that).</summary>
    public static Address Parse(string text)
    {
        var path = ActorPath.Parse(text);
        if (path.Elements.Count > 0)
            throw new FormatException($"Address '{text}' must not contain a path ('{path.ToStringWithoutAddress()}'); use ActorPath.Parse.");
        return path.Address;
    }

    internal static void ValidateSystemName(string name, string text)
    {
        if (name.Length == 0)
            throw new FormatException($"Address '{text}' has an empty actor system name.");
        foreach (var c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c == '-' || c == '_'))
                throw new FormatException($"Address '{text}' has an invalid character '{c}' in the actor system name '{name}' (allowed: letters, digits, '-', '_').");
    }
}

/// <summary>Location of an actor: address plus elements, printed <c>bncluster://sys@host:port/user/a/b</c>.</summary>
public sealed class ActorPath : IEquatable<ActorPath>
{
    private readonly string[] _elements;
    private string? _text; // the path is immutable: its text is made once (remoting names every sender by it)

    private ActorPath(Address address, string[] elements)
    {
        Address = address;
        _elements = elements;
    }

    public Address Address { get; }
    public IReadOnlyList<string> Elements => _elements;
    public string Name => _elements.Length == 0 ? "/" : _elements[^1];

    public static ActorPath Root(Address address) => new(address, []);

    public ActorPath Child(string name) => new(Address, [.. _elements, name]);

    public string ToStringWithoutAddress() => _elements.Length == 0 ? "/" : "/" + string.Join('/', _elements);

    public override string ToString() => _text ??= Address + ToStringWithoutAddress();

    public bool Equals(ActorPath? other) =>
        other is not null && Address.Equals(other.Address) && _elements.AsSpan().SequenceEqual(other._elements);

    public override bool Equals(object? obj) => obj is ActorPath other && Equals(other);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(Address);
        foreach (var e in _elements) hash.Add(e, StringComparer.Ordinal);
        return hash.ToHashCode();
    }

    /// <summary>Parses <c>bncluster://system[@host:port][/path/elements]</c>; errors name the part that is wrong.</summary>
    public static ActorPath Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        const string prefix = Address.Scheme + "://";
        var schemeEnd = text.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd < 0)
            throw new FormatException($"Address '{text}' has no scheme; expected '{prefix}system@host:port'.");
        var scheme = text[..schemeEnd];
        if (scheme != Address.Scheme)
            throw new FormatException($"Address '{text}' has scheme '{scheme}'; expected '{Address.Scheme}'.");
        var rest = text[prefix.Length..];
        var slash = rest.IndexOf('/');
        var authority = slash < 0 ? rest : rest[..slash];
        var pathPart = slash < 0 ? "" : rest[slash..];

        Address address;
        var at = authority.IndexOf('@');
        if (at < 0)
        {
            Address.ValidateSystemName(authority, text);
            address = Address.Local(authority);
        }
        else
        {
            var system = authority[..at];
            Address.ValidateSystemName(system, text);
            var hostPort = authority[(at + 1)..];
            string host;
            string portText;
            if (hostPort.StartsWith('['))
            {
                var close = hostPort.IndexOf(']');
                if (close < 0)
                    throw new FormatException($"Address '{text}' has an IPv6 host without a closing ']'.");
                host = hostPort[1..close];
                var afterHost = hostPort[(close + 1)..];
                if (!afterHost.StartsWith(':'))
                    throw new FormatException($"Address '{text}' has no port after host '{host}'.");
                portText = afterHost[1..];
            }
            else
            {
                var colon = hostPort.LastIndexOf(':');
                if (colon < 0)
                    throw new FormatException($"Address '{text}' has no port after host '{hostPort}'.");
                host = hostPort[..colon];
                portText = hostPort[(colon + 1)..];
            }
            if (host.Length == 0)
                throw new FormatException($"Address '{text}' has an empty host.");
            if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 0 or > 65535)
                throw new FormatException($"Address '{text}' has an invalid port '{portText}' (expected 0..65535).");
            address = new Address(system, host, port);
        }

        var elements = pathPart.Split('/', StringSplitOptions.None);
        var list = new List<string>();
        for (var i = 1; i < elements.Length; i++)
        {
            var element = elements[i];
            if (element.Length == 0)
            {
                if (i == elements.Length - 1) break; // a trailing slash is tolerated
                throw new FormatException($"Address '{text}' has an empty path element at position {i}.");
            }
            var problem = ActorNames.Problem(element, allowSystemPrefix: true);
            if (problem is not null)
                throw new FormatException($"Address '{text}' has an invalid path element '{element}': {problem}.");
            list.Add(Uri.UnescapeDataString(element));
        }
        return new ActorPath(address, [.. list]);
    }
}

internal static class ActorNames
{
    /// <summary>Null if <paramref name="name"/> is a valid actor name, otherwise what is wrong with it.</summary>
    public static string? Problem(string name, bool allowSystemPrefix)
    {
        if (string.IsNullOrEmpty(name)) return "the name is empty";
        if (!allowSystemPrefix && name[0] == '$') return "names starting with '$' are reserved for generated names";
        foreach (var c in name)
        {
            if (char.IsAsciiLetterOrDigit(c)) continue;
            if ("-_.*$+:@&=,!~';%()".Contains(c)) continue;
            return $"character '{c}' is not allowed";
        }
        return null;
    }

    public static string Describe(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (var c in text) sb.Append(char.IsControl(c) ? '?' : c);
        return sb.ToString();
    }
}
