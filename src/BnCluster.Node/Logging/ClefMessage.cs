using System.Globalization;
using System.Text;
using System.Text.Json;

namespace BnCluster.Node.Logging;

/// <summary>
/// The message of one CLEF event (a log.jsonl line), for the notes `bncluster logs` prints. CLEF carries the template
/// (<c>@mt</c>), not the text, and Serilog's CLEF reader is not a dependency here, so the text is rendered simply:
/// each <c>{Name}</c> / <c>{Name,align:format}</c> is replaced by the top-level property Name — by the writer's own
/// rendering in <c>@r</c> when the token has a format (CompactJsonFormatter writes one per formatted token, in order),
/// otherwise by the JSON value (strings quoted, as Serilog renders them). <c>{{</c> and <c>}}</c> are single braces;
/// a token whose property is absent stays as written. An <c>@m</c> (an already rendered message) wins.
/// </summary>
internal static class ClefMessage
{
    public static string Render(JsonElement clefEvent)
    {
        if (clefEvent.TryGetProperty("@m", out var m) && m.ValueKind == JsonValueKind.String) return m.GetString()!;
        if (!clefEvent.TryGetProperty("@mt", out var mt) || mt.ValueKind != JsonValueKind.String) return "";
        string template = mt.GetString()!;
        JsonElement renderings = clefEvent.TryGetProperty("@r", out var r) && r.ValueKind == JsonValueKind.Array ? r : default;
        int formattedTokens = 0;
        var text = new StringBuilder(template.Length + 32);
        for (int i = 0; i < template.Length; i++)
        {
            char c = template[i];
            bool doubled = i + 1 < template.Length && template[i + 1] == c;
            if (c is '{' or '}' && doubled) { text.Append(c); i++; continue; }
            int close = c == '{' ? template.IndexOf('}', i + 1) : -1;
            if (close < 0 || !TryParseToken(template.AsSpan(i + 1, close - i - 1), out var token))
            {
                text.Append(c);
                continue;
            }
            string raw = template.Substring(i, close - i + 1);
            i = close;
            string? value = token.Format is not null && renderings.ValueKind == JsonValueKind.Array
                && formattedTokens < renderings.GetArrayLength() && renderings[formattedTokens].ValueKind == JsonValueKind.String
                ? renderings[formattedTokens].GetString()
                : clefEvent.TryGetProperty(token.Name, out var property) ? Value(property, token.Format) : null;
            if (token.Format is not null) formattedTokens++;
            if (value is null) { text.Append(raw); continue; }
            text.Append(token.Alignment switch
            {
                > 0 and var a => value.PadLeft(a),
                < 0 and var a => value.PadRight(-a),
                _ => value,
            });
        }
        return text.ToString();
    }

    private readonly record struct Token(string Name, int Alignment, string? Format);

    /// <summary>The inside of a <c>{…}</c>: [@|$]Name[,alignment][:format], with Serilog's name characters.</summary>
    private static bool TryParseToken(ReadOnlySpan<char> inside, out Token token)
    {
        token = default;
        if (inside.Length > 0 && inside[0] is '@' or '$') inside = inside[1..];
        int end = inside.IndexOfAny(',', ':');
        var name = end < 0 ? inside : inside[..end];
        if (name.IsEmpty) return false;
        foreach (char ch in name)
            if (!char.IsLetterOrDigit(ch) && ch != '_') return false;
        int alignment = 0;
        string? format = null;
        ReadOnlySpan<char> rest = end < 0 ? default : inside[end..];
        if (rest.Length > 0 && rest[0] == ',')
        {
            int colon = rest.IndexOf(':');
            var digits = colon < 0 ? rest[1..] : rest[1..colon];
            if (!int.TryParse(digits, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out alignment)) return false;
            rest = colon < 0 ? default : rest[colon..];
        }
        if (rest.Length > 0) format = rest[1..].ToString(); // rest[0] is ':'
        token = new Token(name.ToString(), alignment, format);
        return true;
    }

    private static string Value(JsonElement value, string? format) => value.ValueKind switch
    {
        JsonValueKind.String when format?.Contains('l') == true => value.GetString()!,
        JsonValueKind.String => "\"" + value.GetString()!.Replace("\"", "\\\"", StringComparison.Ordinal) + "\"",
        JsonValueKind.True => "True",
        JsonValueKind.False => "False",
        JsonValueKind.Null => "null",
        _ => value.GetRawText(), // numbers, and structured values as their JSON
    };
}
