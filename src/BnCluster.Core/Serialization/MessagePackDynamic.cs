using System.Collections;

namespace BnCluster.Core.Serialization;

/// <summary>An extension value other than a timestamp, as read by <see cref="MessagePackDynamic"/>.</summary>
public sealed record MessagePackExtensionValue(sbyte Type, byte[] Data);

/// <summary>
/// Plain-object view of MessagePack for metadata, tests and diagnostics (not for tensors on the hot path).
/// Reading gives: null, bool, long (ulong above long.MaxValue), double (float32 widened exactly), string,
/// byte[] (bin), DateTimeOffset (timestamp ext), <see cref="MessagePackExtensionValue"/>,
/// List&lt;object?&gt; (array), Dictionary&lt;string, object?&gt; (map; keys must be strings).
/// Writing accepts those plus int/short/sbyte/byte/ushort/uint, float (written as float32),
/// any IReadOnlyDictionary&lt;string, object?&gt; / IDictionary with string keys, and any IEnumerable as an array.
/// </summary>
public static class MessagePackDynamic
{
    public static void Write(MessagePackWriter writer, object? value)
    {
        switch (value)
        {
            case null: writer.WriteNil(); break;
            case bool b: writer.WriteBoolean(b); break;
            case long l: writer.WriteInt64(l); break;
            case int i: writer.WriteInt64(i); break;
            case short s: writer.WriteInt64(s); break;
            case sbyte sb: writer.WriteInt64(sb); break;
            case byte by: writer.WriteUInt64(by); break;
            case ushort us: writer.WriteUInt64(us); break;
            case uint ui: writer.WriteUInt64(ui); break;
            case ulong ul: writer.WriteUInt64(ul); break;
            case float f: writer.WriteSingle(f); break;
            case double d: writer.WriteDouble(d); break;
            case string str: writer.WriteString(str); break;
            case byte[] bytes: writer.WriteBinary(bytes); break;
            case DateTimeOffset t: writer.WriteTimestamp(t); break;
            case MessagePackExtensionValue ext: writer.WriteExtension(ext.Type, ext.Data); break;
            case IReadOnlyDictionary<string, object?> map:
                writer.WriteMapHeader(map.Count);
                foreach (KeyValuePair<string, object?> entry in map)
                {
                    writer.WriteString(entry.Key);
                    Write(writer, entry.Value);
                }
                break;
            case IDictionary dictionary:
                writer.WriteMapHeader(dictionary.Count);
                foreach (DictionaryEntry entry in dictionary)
                {
                    if (entry.Key is not string key)
                        throw new ArgumentException($"map keys must be strings, found {entry.Key?.GetType().Name ?? "null"}");
                    writer.WriteString(key);
                    Write(writer, entry.Value);
                }
                break;
            case IEnumerable sequence:
                var items = sequence as IReadOnlyList<object?> ?? sequence.Cast<object?>().ToList();
                writer.WriteArrayHeader(items.Count);
                foreach (object? item in items) Write(writer, item);
                break;
            default:
                throw new ArgumentException($"cannot write a {value.GetType().Name} as MessagePack");
        }
    }

    public static object? Read(ref MessagePackReader reader) => Read(ref reader, 0);

    private static object? Read(ref MessagePackReader reader, int depth)
    {
        int start = reader.Position;
        switch (reader.PeekType())
        {
            case MessagePackType.Nil: reader.ReadNil(); return null;
            case MessagePackType.Boolean: return reader.ReadBoolean();
            case MessagePackType.Integer:
                (long signed, ulong unsigned, bool isUnsigned) = reader.ReadIntegerAny();
                return isUnsigned ? unsigned : signed;
            case MessagePackType.Float: return reader.ReadDouble();
            case MessagePackType.String: return reader.ReadString();
            case MessagePackType.Binary: return reader.ReadBinary().ToArray();
            case MessagePackType.Extension:
            {
                MessagePackReader lookahead = reader;
                MessagePackExtension ext = lookahead.ReadExtension();
                if (ext.Type == MessagePackCode.TimestampExtType) return reader.ReadTimestamp();
                reader = lookahead;
                return new MessagePackExtensionValue(ext.Type, ext.Data.ToArray());
            }
            case MessagePackType.Array:
            {
                reader.CheckDepth(start, depth + 1);
                int count = reader.ReadArrayHeader();
                var list = new List<object?>(count); // count ≤ bytes left: checked by ReadArrayHeader
                for (int i = 0; i < count; i++) list.Add(Read(ref reader, depth + 1));
                return list;
            }
            case MessagePackType.Map:
            {
                reader.CheckDepth(start, depth + 1);
                int count = reader.ReadMapHeader();
                var map = new Dictionary<string, object?>(count, StringComparer.Ordinal);
                for (int i = 0; i < count; i++)
                {
                    int keyOffset = reader.Position;
                    if (reader.PeekType() != MessagePackType.String)
                        throw reader.Error(keyOffset, "string map key", reader.PeekType().ToString().ToLowerInvariant());
                    string key = reader.ReadString();
                    if (!map.TryAdd(key, Read(ref reader, depth + 1)))
                        throw reader.Error(keyOffset, "unique map key", $"duplicate key \"{key}\"");
                }
                return map;
            }
            default:
                throw reader.Error(start, "any value", "unknown type");
        }
    }
}
