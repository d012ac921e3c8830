using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Training;
using BnCluster.Core.Tests.Training;
using Xunit;

namespace BnCluster.Core.Tests.Numerics;

public sealed class OptimizerTests
{
    /// <summary>
    /// The vectorized Adam must equal the scalar formula bit for bit, on full vectors and on the tail
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
            // The course form α (v/(1−β1^t)) / (sqrt(s/(1−β2^t)) + ε) with its bias corrections folded into two scalars.
            float k1 = (float)(lr / (1 - Math.Pow(b1, t))), k2 = (float)(1 / Math.Sqrt(1 - Math.Pow(b2, t)));
            for (int i = 0; i < reference.Length; i++)
            {
                var gr = g.Tensors[i].Values;
                for (int j = 0; j < reference[i].Length; j++)
                {
                    v[i][j] = b1 * v[i][j] + (1 - b1) * gr[j];
                    s[i][j] = b2 * s[i][j] + (1 - b2) * gr[j] * gr[j];
                    reference[i][j] -= k1 * v[i][j] / (MathF.Sqrt(s[i][j]) * k2 + eps);
                }
                Assert.Equal(reference[i], p.Trainable[i].Values);
                Assert.Equal(v[i], optimizer.FirstMoments[i]);
                Assert.Equal(s[i], optimizer.SecondMoments[i]);
            }
        }
    }

    /// <summary>A mirror backed by native arrays: what the update wrote into it; as an addend, what it reads.</summary>
    private sealed unsafe class ArrayMirror : IParameterMirror, IGradientAddend, IDisposable
    {
        private readonly nint[] _tensors;

        public ArrayMirror(Parameters shape)
        {
            _tensors = shape.Trainable.Select(t =>
            {
                var memory = (float*)System.Runtime.InteropServices.NativeMemory.Alloc((nuint)t.Values.Length, sizeof(float));
                new Span<float>(memory, t.Values.Length).Fill(float.NaN);
                return (nint)memory;
            }).ToArray();
            Lengths = shape.Trainable.Select(t => t.Values.Length).ToArray();
        }

        public int[] Lengths { get; }

        public float* Trainable(int index, int length) =>
            length == Lengths[index] ? (float*)_tensors[index] : throw new ArgumentException($"tensor {index}: {length} values asked, {Lengths[index]} held");

        public float[] Values(int index) => new ReadOnlySpan<float>((float*)_tensors[index], Lengths[index]).ToArray();

        public float* Gradient(int index, int length) => Trainable(index, length);

        public void Fill(int index, ReadOnlySpan<float> values) => values.CopyTo(new Span<float>((float*)_tensors[index], Lengths[index]));

        public void Dispose()
        {
            foreach (var t in _tensors) System.Runtime.InteropServices.NativeMemory.Free((void*)t);
        }
    }

    /// <summary>
    /// An update that also writes into mirrors (the coordinator's shared-memory files) changes nothing of the update,
    /// and leaves each mirror holding exactly the new parameters, for every optimizer, on one thread and on two (a
    /// 300×200 weight is split over both, and Adam copies it out block by block).
    /// </summary>
    [Theory]
    [InlineData(OptimizerKind.Adam, 1)]
    [InlineData(OptimizerKind.Adam, 2)]
    [InlineData(OptimizerKind.Gd, 2)]
    [InlineData(OptimizerKind.Momentum, 1)]
    [InlineData(OptimizerKind.RmsProp, 2)]
    public void An_update_that_mirrors_its_parameters_is_the_same_update_and_the_mirrors_hold_its_result(OptimizerKind kind, int threads)
    {
        var spec = new NetworkSpec(300, new[] { 200 }, 3);
        var mirrored = TestNetworks.RandomParameters(spec, 5);
        var plain = TestNetworks.RandomParameters(spec, 5);
        var settings = new OptimizerSettings(kind, 0.01f);
        var withMirrors = new Optimizer(settings, mirrored);
        var without = new Optimizer(settings, plain);
        var g = new Gradients(plain);
        var rng = new Random(7);
        using var mm = new MatMul(threads);
        using var first = new ArrayMirror(mirrored);
        using var second = new ArrayMirror(mirrored);
        for (int t = 1; t <= 3; t++)
        {
            foreach (var tensor in g.Tensors)
                for (int j = 0; j < tensor.Values.Length; j++) tensor.Values[j] = (float)(rng.NextDouble() * 2 - 1);
            without.Apply(plain, g, mm);
            withMirrors.Apply(mirrored, g, mm, [first, second]);
            for (int i = 0; i < plain.Trainable.Count; i++)
            {
                Assert.Equal(plain.Trainable[i].Values, mirrored.Trainable[i].Values);
                Assert.Equal(plain.Trainable[i].Values, first.Values(i));
                Assert.Equal(plain.Trainable[i].Values, second.Values(i));
            }
        }
        var tooMany = Enumerable.Repeat<IParameterMirror>(first, Optimizer.MaxMirrors + 1).ToArray();
        var e = Assert.Throws<ArgumentException>(() => withMirrors.Apply(mirrored, g, mm, tooMany));
        Assert.Contains($"at most {Optimizer.MaxMirrors}", e.Message);
    }

    /// <summary>
    /// Adam reading the last ranks' gradients as addends completes each block's gradient with the additions of the
    /// multi-file sum ((g + a₀) + a₁, or (a₀ + 0) + a₁ when a₀ is rank 0) and so gives the bits of summing first, then
    /// updating, on one thread and on two, mirrors included; g is left as it was; a NaN in an addend is reported.
    /// </summary>
    [Theory]
    [InlineData(false, 1)]
    [InlineData(false, 2)]
    [InlineData(true, 1)]
    [InlineData(true, 2)]
    public void Adam_that_adds_the_last_gradients_as_it_reads_them_is_the_update_of_their_sum(bool overwrite, int threads)
    {
        var spec = new NetworkSpec(300, new[] { 200 }, 3);
        var fused = TestNetworks.RandomParameters(spec, 5);
        var plain = TestNetworks.RandomParameters(spec, 5);
        var settings = new OptimizerSettings(OptimizerKind.Adam, 0.01f);
        var fusedAdam = new Optimizer(settings, fused);
        var plainAdam = new Optimizer(settings, plain);
        var partial = new Gradients(plain);
        var sum = new Gradients(plain);
        var rng = new Random(11);
        using var mm = new MatMul(threads);
        using var a0 = new ArrayMirror(fused);
        using var a1 = new ArrayMirror(fused);
        using var mirror = new ArrayMirror(fused);
        float Next() => rng.Next(10) == 0 ? -0f : (float)(rng.NextDouble() * 2 - 1);
        for (int t = 1; t <= 3; t++)
        {
            for (int i = 0; i < partial.Tensors.Count; i++)
            {
                int n = partial.Tensors[i].Values.Length;
                float[] g = new float[n].Select(_ => Next()).ToArray(), x0 = g.Select(_ => Next()).ToArray(), x1 = g.Select(_ => Next()).ToArray();
                g.CopyTo(partial.Tensors[i].Values);
                a0.Fill(i, x0);
                a1.Fill(i, x1);
                var into = sum.Tensors[i].Values;
                if (overwrite) System.Numerics.Tensors.TensorPrimitives.Add(x0, 0f, into);
                else System.Numerics.Tensors.TensorPrimitives.Add(g, x0, into);
                System.Numerics.Tensors.TensorPrimitives.Add(into, x1, into);
            }
            var before = partial.Tensors.Select(x => (float[])x.Values.Clone()).ToArray();
            plainAdam.Apply(plain, sum, mm);
            fusedAdam.Apply(fused, partial, mm, [mirror], [a0, a1], overwrite, out bool finite);
            Assert.True(finite);
            for (int i = 0; i < plain.Trainable.Count; i++)
            {
                Assert.Equal(plain.Trainable[i].Values, fused.Trainable[i].Values);
                Assert.Equal(plain.Trainable[i].Values, mirror.Values(i));
                Assert.Equal(before[i], partial.Tensors[i].Values);
            }
        }
        var poisoned = a1.Values(0);
        poisoned[poisoned.Length / 2] = float.NaN;
        a1.Fill(0, poisoned);
        fusedAdam.Apply(fused, partial, mm, [], [a0, a1], overwrite, out bool stillFinite);
        Assert.False(stillFinite);
        var momentum = new Optimizer(new OptimizerSettings(OptimizerKind.Momentum, 0.01f), plain);
        Assert.Contains("Adam only", Assert.Throws<ArgumentException>(() => momentum.Apply(plain, partial, mm, [], [a0], overwrite, out _)).Message);
    }
}
