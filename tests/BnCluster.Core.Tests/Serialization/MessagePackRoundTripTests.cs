using BnCluster.Core.Serialization;
using Xunit;

namespace BnCluster.Core.Tests.Serialization;

/// <summary>Seeded random value trees written with the writer and read back with the dynamic reader.</summary>
public class MessagePackRoundTripTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void Random_value_trees_round_trip(int seed)
    {
        var random = new Random(seed);
        for (int i = 0; i < 200; i++)
        {
            object? value = RandomValue(random, depth: 0);
            byte[] bytes = MessagePackWriterTests.Encode(w => MessagePackDynamic.Write(w, value));
            var reader = new MessagePackReader(bytes);
            object? back = MessagePackDynamic.Read(ref reader);
            Assert.True(reader.End);
            AssertSameValue(value, back, "$");

            // Skip agrees with the reader on where the value ends.
            var skipper = new MessagePackReader(bytes);
            skipper.Skip();
            Assert.True(skipper.End);

            // Re-encoding the decoded tree gives the same bytes (the writer is canonical), except that
            // float32 scalars come back as double and so re-encode as float64.
            if (!ContainsFloat32(value))
                Assert.Equal(bytes, MessagePackWriterTests.Encode(w => MessagePackDynamic.Write(w, back)));
        }
    }

    private static object? RandomValue(Random random, int depth)
    {
        int kind = random.Next(depth >= 5 ? 12 : 14);
        return kind switch
        {
            0 => null,
            1 => random.Next(2) == 1,
            2 => (long)random.Next(-40, 140),
            3 => RandomInteger(random),
            4 => random.NextSingle() * 1e6f - 5e5f,
            5 => random.NextDouble() * Math.Pow(10, random.Next(-300, 300)) * (random.Next(2) == 0 ? -1 : 1),
            6 => RandomString(random),
            7 => RandomBytes(random),
            8 => new MessagePackExtensionValue((sbyte)random.Next(0, 128), RandomBytes(random)),
            9 => DateTimeOffset.UnixEpoch.AddTicks(random.NextInt64(-DateTimeOffset.UnixEpoch.UtcTicks, DateTimeOffset.MaxValue.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks)),
            10 => new[] { double.NaN, double.PositiveInfinity, double.NegativeInfinity, -0.0, double.Epsilon, double.MaxValue }[random.Next(6)],
            11 => ulong.MaxValue - (ulong)random.Next(1000),
            12 => Enumerable.Range(0, RandomCount(random)).Select(_ => RandomValue(random, depth + 1)).ToList(),
            _ => Enumerable.Range(0, RandomCount(random)).ToDictionary(k => $"k{k}_{RandomString(random)}", _ => RandomValue(random, depth + 1)),
        };
    }

    private static int RandomCount(Random random) => random.Next(10) == 0 ? random.Next(16, 40) : random.Next(0, 6);

    private static long RandomInteger(Random random)
    {
        int bits = random.Next(1, 64);
        long magnitude = random.NextInt64(0, long.MaxValue) >> (63 - bits);
        return random.Next(2) == 0 ? magnitude : -magnitude - 1;
    }

    private static string RandomString(Random random)
    {
        int length = random.Next(20) == 0 ? random.Next(200, 400) : random.Next(0, 40);
        var chars = new char[length];
        for (int i = 0; i < length; i++)
            chars[i] = random.Next(4) == 0 ? (char)random.Next(0x80, 0xd7ff) : (char)random.Next(0x20, 0x7f);
        return new string(chars);
    }

    private static byte[] RandomBytes(Random random)
    {
        var bytes = new byte[random.Next(20) == 0 ? random.Next(256, 300) : random.Next(0, 20)];
        random.NextBytes(bytes);
        return bytes;
    }

    private static bool ContainsFloat32(object? value) => value switch
    {
        float => true,
        List<object?> list => list.Any(ContainsFloat32),
        Dictionary<string, object?> map => map.Values.Any(ContainsFloat32),
        _ => false,
    };

    private static void AssertSameValue(object? expected, object? actual, string path)
    {
        switch (expected)
        {
            case null: Assert.Null(actual); break;
            case float f: Assert.Equal((double)f, Assert.IsType<double>(actual)); break;
            case double d: Assert.Equal(BitConverter.DoubleToInt64Bits(d), BitConverter.DoubleToInt64Bits(Assert.IsType<double>(actual))); break;
            case long l: Assert.Equal(l, Assert.IsType<long>(actual)); break;
            case ulong u: Assert.Equal(u, Assert.IsType<ulong>(actual)); break;
            case byte[] b: Assert.Equal(b, Assert.IsType<byte[]>(actual)); break;
            case MessagePackExtensionValue ext:
                var e2 = Assert.IsType<MessagePackExtensionValue>(actual);
                Assert.Equal(ext.Type, e2.Type);
                Assert.Equal(ext.Data, e2.Data);
                break;
            case DateTimeOffset t: Assert.Equal(t.UtcTicks, Assert.IsType<DateTimeOffset>(actual).UtcTicks); break;
            case List<object?> list:
                var l2 = Assert.IsType<List<object?>>(actual);
                Assert.Equal(list.Count, l2.Count);
                for (int i = 0; i < list.Count; i++) AssertSameValue(list[i], l2[i], $"{path}[{i}]");
                break;
            case Dictionary<string, object?> map:
                var m2 = Assert.IsType<Dictionary<string, object?>>(actual);
                Assert.Equal(map.Keys.Order(StringComparer.Ordinal), m2.Keys.Order(StringComparer.Ordinal));
                foreach ((string k, object? v) in map) AssertSameValue(v, m2[k], $"{path}.{k}");
                break;
            default: Assert.Equal(expected, actual); break;
        }
    }
}
