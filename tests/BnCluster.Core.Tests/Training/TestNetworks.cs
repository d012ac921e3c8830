using BnCluster.Core.Data;
using BnCluster.Core.Model;
using BnCluster.Core.Tests.Numerics;
using BnCluster.Core.Training;

namespace BnCluster.Core.Tests.Training;

internal static class TestNetworks
{
    /// <summary>A random dataset with labels from a random linear map (so it is learnable), features ~ N(0, 1)·scale + shift.</summary>
    public static Dataset RandomDataset(int rows, int features, int classes, ulong seed, float shift = 0, float scale = 1)
    {
        var rng = new Rng(seed);
        var x = new float[rows * features];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextGaussian() * scale + shift);
        var map = new double[classes * features];
        for (int i = 0; i < map.Length; i++) map[i] = rng.NextGaussian();
        var y = new int[rows];
        for (int i = 0; i < rows; i++)
        {
            int best = 0;
            double bestScore = double.NegativeInfinity;
            for (int k = 0; k < classes; k++)
            {
                double s = 0;
                for (int j = 0; j < features; j++) s += map[k * features + j] * (x[i * features + j] - shift);
                if (s > bestScore) { bestScore = s; best = k; }
            }
            y[i] = best;
        }
        return NumericAssert.MakeDataset(x, y, features, classes);
    }

    /// <summary>Initialized parameters with γ, β, biases perturbed away from 1/0 so their gradients are exercised.</summary>
    public static Parameters RandomParameters(NetworkSpec spec, ulong seed)
    {
        var p = Parameters.Initialize(spec, seed);
        var rng = new Rng(seed ^ 0xABCDEF);
        for (int l = 0; l < p.HiddenLayers; l++)
        {
            Perturb(p.B[l], rng, 0, 0.3);
            Perturb(p.Gamma[l], rng, 1, 0.3);
            Perturb(p.Beta[l], rng, 0, 0.3);
        }
        Perturb(p.BOut, rng, 0, 0.3);
        return p;
    }

    private static void Perturb(float[]? values, Rng rng, double center, double std)
    {
        if (values is null) return;
        for (int i = 0; i < values.Length; i++) values[i] = (float)(center + std * rng.NextGaussian());
    }
}
