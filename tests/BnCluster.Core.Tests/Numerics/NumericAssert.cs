using BnCluster.Core.Data;
using Xunit;

namespace BnCluster.Core.Tests.Numerics;

internal static class NumericAssert
{
    /// <summary>‖a − b‖ / ‖b‖ (absolute ‖a − b‖ when b is zero).</summary>
    public static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected)
    {
        Assert.Equal(expected.Length, actual.Length);
        double diff = 0, norm = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = actual[i] - expected[i];
            diff += d * d;
            norm += expected[i] * expected[i];
        }
        return norm == 0 ? Math.Sqrt(diff) : Math.Sqrt(diff / norm);
    }

    public static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        var e = new double[expected.Length];
        for (int i = 0; i < e.Length; i++) e[i] = expected[i];
        return RelativeError(actual, e);
    }

    /// <summary>Asserts the relative error is within <paramref name="tolerance"/>, naming the tensor; returns the error.</summary>
    public static double Close(string what, ReadOnlySpan<float> actual, ReadOnlySpan<double> expected, double tolerance)
    {
        double err = RelativeError(actual, expected);
        Assert.True(err <= tolerance, $"{what}: relative error {err:E3} > {tolerance:E1}");
        Assert.False(double.IsNaN(err), $"{what}: NaN");
        return err;
    }

    public static double Close(string what, ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double tolerance)
    {
        var e = new double[expected.Length];
        for (int i = 0; i < e.Length; i++) e[i] = expected[i];
        return Close(what, actual, e, tolerance);
    }

    public static Dataset MakeDataset(float[] features, int[] labels, int featureCount, int classes) =>
        new("test", features, labels, featureCount, Enumerable.Range(0, classes).Select(c => $"c{c}").ToArray());
}
