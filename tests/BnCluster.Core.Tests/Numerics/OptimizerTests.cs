using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;
using BnCluster.Core.Tests.Training;
using Xunit;

namespace BnCluster.Core.Tests.Numerics;

public sealed class OptimizerTests
{
    /// <summary>
    /// The vectorized Adam must equal the scalar course formula bit for bit, on full vectors and on the tail
    /// (a 13-feature layer and a 3-class bias leave remainders for both Vector512 and Vector256).
    /// </summary>
    [Fact]
    public void Adam_is_bit_identical_to_the_scalar_formula()
    {
        var spec = new NetworkSpec(37, new[] { 13 }, 3);
        var p = TestNetworks.RandomParameters(spec, 5);
        var reference = p.Trainable.Select(t => (float[])t.Values.Clone()).ToArray();
        var v = reference.Select(r => new float[r.Length]).ToArray();
        var s = reference.Select(r => new float[r.Length]).ToArray();
        var settings = new OptimizerSettings(OptimizerKind.Adam, 0.01f, 0.9f, 0.999f, 1e-8f);
        var optimizer = new Optimizer(settings, p);
        var g = new Gradients(p);
        var rng = new Random(3);
        for (int t = 1; t <= 4; t++)
        {
            foreach (var tensor in g.Tensors)
                for (int j = 0; j < tensor.Values.Length; j++) tensor.Values[j] = (float)(rng.NextDouble() * 2 - 1) * (j % 5 == 0 ? 1e-6f : 1f);
            optimizer.Apply(p, g);
            float b1 = settings.Beta1, b2 = settings.Beta2, lr = settings.LearningRate, eps = settings.Epsilon;
            float c1 = (float)(1 - Math.Pow(b1, t)), c2 = (float)(1 - Math.Pow(b2, t));
            for (int i = 0; i < reference.Length; i++)
            {
                var gr = g.Tensors[i].Values;
                for (int j = 0; j < reference[i].Length; j++)
                {
                    v[i][j] = b1 * v[i][j] + (1 - b1) * gr[j];
                    s[i][j] = b2 * s[i][j] + (1 - b2) * gr[j] * gr[j];
                    reference[i][j] -= lr * (v[i][j] / c1) / (MathF.Sqrt(s[i][j] / c2) + eps);
                }
                Assert.Equal(reference[i], p.Trainable[i].Values);
                Assert.Equal(v[i], optimizer.FirstMoments[i]);
                Assert.Equal(s[i], optimizer.SecondMoments[i]);
            }
        }
    }
}
