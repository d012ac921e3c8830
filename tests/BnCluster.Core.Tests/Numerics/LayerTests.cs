using BnCluster.Core.Layers;
using BnCluster.Core.Model;
using Xunit;

namespace BnCluster.Core.Tests.Numerics;

public sealed class LayerTests
{
    [Fact]
    public void SoftmaxCrossEntropyIsStableForHugeLogits()
    {
        float[] logits = [1000f, -1000f, 0f, 0f, 500f, 499f];
        int[] labels = [0, 2];
        var probs = new float[6];
        var (sumLoss, correct) = SoftmaxCrossEntropy.Forward(logits, labels, probs, 2, 3);
        // Row 0: −log ŷ of the label ≈ 0; row 1: logsumexp(0, 500, 499) − 499 = 1 + log(1 + e^−1) (+ e^−500, lost).
        double row1 = 1 + Math.Log(1 + Math.Exp(-1));
        Assert.Equal(row1, sumLoss, 1e-5);
        Assert.Equal(1, correct);
        Assert.All(probs, v => Assert.True(float.IsFinite(v)));

        var dz = new float[6];
        SoftmaxCrossEntropy.Backward(probs, labels, dz, 2, 3, globalBatchSize: 4);
        Assert.Equal((probs[0] - 1) / 4, dz[0], 1e-7);
        Assert.Equal(probs[1] / 4, dz[1], 1e-7);
        Assert.Equal((probs[5] - 1) / 4, dz[5], 1e-7);
    }

    [Fact]
    public void SoftmaxCrossEntropyMatchesAFloat64Reference()
    {
        // 37 rows (the exponentials run over the whole block: not a multiple of any vector width) of 10 classes.
        const int rows = 37, classes = 10;
        var rng = new Random(7);
        var logits = new float[rows * classes];
        for (int i = 0; i < logits.Length; i++) logits[i] = (float)(rng.NextDouble() * 30 - 15);
        var labels = new int[rows];
        for (int i = 0; i < rows; i++) labels[i] = rng.Next(classes);
        labels[0] = 3; // row 0's argmax, below
        logits[3] = 40f;
        var probs = new float[rows * classes];
        var (sumLoss, correct) = SoftmaxCrossEntropy.Forward(logits, labels, probs, rows, classes);

        double expectedLoss = 0;
        int expectedCorrect = 0;
        for (int i = 0; i < rows; i++)
        {
            var z = logits.AsSpan(i * classes, classes).ToArray().Select(v => (double)v).ToArray();
            double max = z.Max(), sum = z.Sum(v => Math.Exp(v - max));
            for (int k = 0; k < classes; k++) Assert.Equal(Math.Exp(z[k] - max) / sum, probs[i * classes + k], 1e-6);
            expectedLoss += Math.Log(sum) - (z[labels[i]] - max);
            if (Array.IndexOf(z, max) == labels[i]) expectedCorrect++;
        }
        Assert.Equal(expectedLoss, sumLoss, expectedLoss * 1e-6);
        Assert.Equal(expectedCorrect, correct);
        Assert.True(correct >= 1);
    }

    [Theory]
    [InlineData(Activation.Relu)]
    [InlineData(Activation.Tanh)]
    [InlineData(Activation.Sigmoid)]
    public void ActivationBackwardIsTheDerivative(Activation kind)
    {
        float[] z = [-2f, -0.3f, 0.2f, 1.5f];
        var a = new float[4];
        ActivationLayer.Forward(kind, z, a);
        var dz = new float[4];
        ActivationLayer.Backward(kind, a, [1f, 1f, 1f, 1f], dz);
        for (int i = 0; i < 4; i++)
        {
            double h = 1e-3;
            double f(double x) => kind switch { Activation.Relu => Math.Max(x, 0), Activation.Tanh => Math.Tanh(x), _ => 1 / (1 + Math.Exp(-x)) };
            Assert.Equal((f(z[i] + h) - f(z[i] - h)) / (2 * h), dz[i], 1e-4);
        }
        Assert.Equal(kind, ActivationLayer.Parse(ActivationLayer.Name(kind)));
    }
}
