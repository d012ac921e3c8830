using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Tests.Training;
using BnCluster.Core.Training;
using Xunit;
using Xunit.Abstractions;

namespace BnCluster.Core.Tests.Numerics;

/// <summary>Production float32 analytic gradients against float64 central differences of an independent reference forward.</summary>
public sealed class GradientCheckTests(ITestOutputHelper output)
{
    public static TheoryData<BatchNormPlacement, Activation> Cases()
    {
        var data = new TheoryData<BatchNormPlacement, Activation>();
        foreach (var placement in new[] { BatchNormPlacement.Before, BatchNormPlacement.After, BatchNormPlacement.None })
            foreach (var activation in new[] { Activation.Relu, Activation.Tanh, Activation.Sigmoid })
                data.Add(placement, activation);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task AnalyticGradientsMatchFiniteDifferences(BatchNormPlacement placement, Activation activation)
    {
        var spec = new NetworkSpec(5, [6, 4], 3, activation, placement);
        var data = TestNetworks.RandomDataset(10, 5, 3, seed: 21);
        var p = TestNetworks.RandomParameters(spec, seed: 17);
        using var matMul = new MatMul();
        var ws = new Workspace(p, data.Count, matMul);
        var rows = Enumerable.Range(0, data.Count).ToArray();
        var loss = await TrainingStep.ForwardBackwardAsync(p, ws, data, rows, data.Count, LocalCollective.Instance);

        var tensors = p.Trainable.ToDictionary(t => t.Name, t => t.Values.Select(v => (double)v).ToArray());
        double referenceLoss = ReferenceLoss(spec, tensors, data);
        Assert.InRange(Math.Abs(loss.SumLoss / loss.Count - referenceLoss) / referenceLoss, 0, 1e-5);

        double worst = 0;
        const double h = 1e-5;
        foreach (var grad in ws.Gradients.Tensors)
        {
            var values = tensors[grad.Name];
            var numeric = new double[values.Length];
            for (int i = 0; i < values.Length; i++)
            {
                double saved = values[i];
                values[i] = saved + h;
                double plus = ReferenceLoss(spec, tensors, data);
                values[i] = saved - h;
                double minus = ReferenceLoss(spec, tensors, data);
                values[i] = saved;
                numeric[i] = (plus - minus) / (2 * h);
            }
            worst = Math.Max(worst, NumericAssert.Close($"{placement}/{activation} d{grad.Name}", grad.Values, numeric, 1e-3));
        }
        output.WriteLine($"{placement}/{activation}: worst relative gradient error {worst:E3}");
    }

    /// <summary>Float64 training-mode forward and mean cross-entropy, written independently of the production layers.</summary>
    private static double ReferenceLoss(NetworkSpec spec, Dictionary<string, double[]> t, Dataset data)
    {
        int n = data.Count;
        int width = spec.Inputs;
        var a = new double[n, width];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < width; j++) a[i, j] = data.Features[i * width + j];
        for (int l = 0; l < spec.Hidden.Count; l++)
        {
            int outputs = spec.Hidden[l];
            var w = t[$"layer{l}.weight"];
            t.TryGetValue($"layer{l}.bias", out var b);
            var z = Linear(a, w, b, n, width, outputs);
            switch (spec.BatchNorm)
            {
                case BatchNormPlacement.Before:
                    a = Apply(Norm(z, t[$"layer{l}.gamma"], t[$"layer{l}.beta"], n, outputs, spec.BnEpsilon), spec.Activation);
                    break;
                case BatchNormPlacement.After:
                    a = Norm(Apply(z, spec.Activation), t[$"layer{l}.gamma"], t[$"layer{l}.beta"], n, outputs, spec.BnEpsilon);
                    break;
                default:
                    a = Apply(z, spec.Activation);
                    break;
            }
            width = outputs;
        }
        var logits = Linear(a, t["output.weight"], t["output.bias"], n, width, spec.Classes);
        double loss = 0;
        for (int i = 0; i < n; i++)
        {
            double max = double.NegativeInfinity;
            for (int k = 0; k < spec.Classes; k++) max = Math.Max(max, logits[i, k]);
            double sum = 0;
            for (int k = 0; k < spec.Classes; k++) sum += Math.Exp(logits[i, k] - max);
            loss += max + Math.Log(sum) - logits[i, data.Labels[i]];
        }
        return loss / n;
    }

    private static double[,] Linear(double[,] a, double[] w, double[]? b, int n, int inputs, int outputs)
    {
        var z = new double[n, outputs];
        for (int i = 0; i < n; i++)
            for (int o = 0; o < outputs; o++)
            {
                double s = b?[o] ?? 0;
                for (int j = 0; j < inputs; j++) s += a[i, j] * w[o * inputs + j];
                z[i, o] = s;
            }
        return z;
    }

    private static double[,] Norm(double[,] z, double[] gamma, double[] beta, int n, int c, double eps)
    {
        var y = new double[n, c];
        for (int j = 0; j < c; j++)
        {
            double mean = 0, variance = 0;
            for (int i = 0; i < n; i++) mean += z[i, j];
            mean /= n;
            for (int i = 0; i < n; i++) variance += (z[i, j] - mean) * (z[i, j] - mean);
            variance /= n;
            for (int i = 0; i < n; i++) y[i, j] = gamma[j] * (z[i, j] - mean) / Math.Sqrt(variance + eps) + beta[j];
        }
        return y;
    }

    private static double[,] Apply(double[,] z, Activation kind)
    {
        var a = (double[,])z.Clone();
        for (int i = 0; i < a.GetLength(0); i++)
            for (int j = 0; j < a.GetLength(1); j++)
                a[i, j] = kind switch
                {
                    Activation.Relu => Math.Max(z[i, j], 0),
                    Activation.Tanh => Math.Tanh(z[i, j]),
                    _ => 1 / (1 + Math.Exp(-z[i, j])),
                };
        return a;
    }
}
