using System.Text;
using System.Text.Json;

namespace BnCluster.Node.Commands;

/// <summary>The JSON the commands print and the run folder's JSON lines: one value written by a callback, as compact UTF-8 text.</summary>
public static class JsonText
{
    public static string Write(Action<Utf8JsonWriter> write)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer)) write(json);
        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    /// <summary>A number, or null when it is not finite (not measured): JSON has no NaN.</summary>
    public static void WriteFiniteOrNull(this Utf8JsonWriter json, string name, double value)
    {
        if (double.IsFinite(value)) json.WriteNumber(name, value);
        else json.WriteNull(name);
    }
}
