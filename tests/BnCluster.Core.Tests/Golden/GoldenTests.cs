using System.Text.Json;
using BnCluster.Core.Kernels;
using BnCluster.Core.Layers;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Tests.Numerics;
using BnCluster.Core.Training;
using Xunit;
using Xunit.Abstractions;
using static BnCluster.Core.Tests.Golden.GoldenFiles;

namespace BnCluster.Core.Tests.Golden;

/// <summary>The float32 code path against PyTorch float64 values of the formulas in docs/design.md, "The math".</summary>
public sealed class GoldenTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-4;

    public static TheoryData<string> BnCases() => new(Cases("bn_"));
    public static TheoryData<string> MlpCases() => new(Cases("mlp_"));

    [Fact]
    public void GoldenFolderHoldsCases()
    {
        var dir = GoldenFiles.Directory();
        Assert.True(System.IO.Directory.Exists(dir), $"golden folder {dir} does not exist");
        Assert.True(Cases("bn_").Length + Cases("mlp_").Length > 0, $"golden folder {dir} holds no bn_*/mlp_* case");
        var unknown = Cases("").Where(f => !f.StartsWith("bn_", StringComparison.Ordinal) && !f.StartsWith("mlp_", StringComparison.Ordinal)).ToArray();
        Assert.True(unknown.Length == 0, $"golden folder {dir} holds cases of no known schema (bn_*, mlp_*): {string.Join(", ", unknown)}");
    }

    [Theory]
    [MemberData(nameof(BnCases))]
    public void BatchNormMatchesGolden(string file)
    {
        var g = Load(file);
        int n = g.GetProperty("N").GetInt32(), c = g.GetProperty("C").GetInt32();
        var bn = new BatchNormLayer(c, (float)g.GetProperty("eps").GetDouble(), (float)g.GetProperty("momentum").GetDouble());
        var x = Floats(g.GetProperty("x"));
        var gamma = Floats(g.GetProperty("gamma"));
        var beta = Floats(g.GetProperty("beta"));
        var dy = Floats(g.GetProperty("dy"));
        var evalX = Floats(g.GetProperty("eval_x"));
        int evalRows = evalX.Length / c;
        var shards = Ints(g.GetProperty("shards"));
        Assert.Equal(n, shards.Sum());

        double worst = 0;
        void Check(string what, ReadOnlySpan<float> actual, string key) =>
            worst = Math.Max(worst, NumericAssert.Close($"{file} {what}", actual, Doubles(g.GetProperty(key)), Tolerance));

        // Whole batch as one shard, then the file's shard split merged in rank order.
        foreach (var split in new[] { new[] { n }, shards })
        {
            string tag = split.Length == 1 ? "whole" : $"shards[{string.Join(',', split)}]";
            var global = new BatchNormStats(c);
            var local = new BatchNormStats(c);
            int offset = 0;
            foreach (int rows in split)
            {
                bn.LocalStats(x.AsSpan(offset * c, rows * c), rows, local);
                global.Merge(local);
                offset += rows;
            }
            var mean = new float[c];
            var invStd = new float[c];
            var meanD = new double[c];
            var invStdD = new double[c];
            bn.PrepareNormalize(global, meanD, invStdD, mean, invStd);
            var y = new float[n * c];
            var sums = new BatchNormGradSums(c);
            var localSums = new BatchNormGradSums(c);
            offset = 0;
            foreach (int rows in split)
            {
                var range = new Range(offset * c, (offset + rows) * c);
                bn.Normalize(x.AsSpan(range), mean, invStd, gamma, beta, y.AsSpan(range), rows);
                bn.LocalGradSums(dy.AsSpan(range), x.AsSpan(range), meanD, invStdD, rows, localSums);
                sums.Add(localSums);
                offset += rows;
            }
            var dx = new float[n * c];
            var scratch = new double[3 * c];
            offset = 0;
            foreach (int rows in split)
            {
                var range = new Range(offset * c, (offset + rows) * c);
                bn.InputGradient(dy.AsSpan(range), x.AsSpan(range), meanD, invStdD, sums, global.Count, gamma, dx.AsSpan(range), rows, scratch);
                offset += rows;
            }
            var dGamma = new float[c];
            var dBeta = new float[c];
            BatchNormLayer.ParameterGradients(sums, dGamma, dBeta);
            var runningMean = new float[c];
            var runningVar = Enumerable.Repeat(1f, c).ToArray();
            bn.UpdateRunning(runningMean, runningVar, global);
            var evalY = new float[evalRows * c];
            bn.EvalForward(evalX, gamma, beta, runningMean, runningVar, evalY, evalRows, new float[c]);

            Assert.Equal(n, global.Count);
            Check($"{tag} y", y, "y");
            Check($"{tag} batch_mean", global.Mean.Select(v => (float)v).ToArray(), "batch_mean");
            Check($"{tag} batch_var_biased", Enumerable.Range(0, c).Select(j => (float)global.Variance(j)).ToArray(), "batch_var_biased");
            Check($"{tag} running_mean", runningMean, "running_mean");
            Check($"{tag} running_var", runningVar, "running_var");
            Check($"{tag} dx", dx, "dx");
            Check($"{tag} dgamma", dGamma, "dgamma");
            Check($"{tag} dbeta", dBeta, "dbeta");
            Check($"{tag} eval_y", evalY, "eval_y");
        }
        output.WriteLine($"{file}: worst relative error {worst:E3}");
    }

    [Theory]
    [MemberData(nameof(MlpCases))]
    public async Task MlpStepsMatchGolden(string file)
    {
        var g = Load(file);
        var dims = Ints(g.GetProperty("dims"));
        int inputs = dims[0], classes = dims[^1];
        var hidden = dims[1..^1];
        var spec = new NetworkSpec(inputs, hidden, classes, Activation.Relu, BatchNormPlacement.Before,
            (float)g.GetProperty("bn_eps").GetDouble(), (float)g.GetProperty("bn_momentum").GetDouble());
        var p = new Parameters(spec);
        var init = g.GetProperty("init");
        var initW = init.GetProperty("W").EnumerateArray().ToArray();
        Assert.Equal(hidden.Length, initW.Length);
        for (int l = 0; l < hidden.Length; l++) CopyInto(Floats(initW[l]), p.W[l], $"init.W[{l}]");
        CopyInto(Floats(init.GetProperty("W_out")), p.WOut, "init.W_out");
        CopyInto(Floats(init.GetProperty("b_out")), p.BOut, "init.b_out");

        var settings = new OptimizerSettings(OptimizerSettings.ParseKind(g.GetProperty("optimizer").GetString()!),
            (float)g.GetProperty("lr").GetDouble(), (float)g.GetProperty("beta1").GetDouble(),
            (float)g.GetProperty("beta2").GetDouble(), (float)g.GetProperty("opt_eps").GetDouble());
        var optimizer = new Optimizer(settings, p);
        var batches = g.GetProperty("batches").EnumerateArray().ToArray();
        var steps = g.GetProperty("steps").EnumerateArray().ToArray();
        Assert.Equal(batches.Length, steps.Length);
        int maxRows = batches.Max(b => b.GetProperty("y").GetArrayLength());
        using var matMul = new MatMul();
        var ws = new Workspace(p, maxRows, matMul);

        double worst = 0;
        void Check(string what, ReadOnlySpan<float> actual, JsonElement expected) =>
            worst = Math.Max(worst, NumericAssert.Close($"{file} {what}", actual, Doubles(expected), Tolerance));

        for (int t = 0; t < steps.Length; t++)
        {
            var labels = Ints(batches[t].GetProperty("y"));
            var data = NumericAssert.MakeDataset(Floats(batches[t].GetProperty("x")), labels, inputs, classes);
            var rows = Enumerable.Range(0, labels.Length).ToArray();
            var loss = await TrainingStep.ForwardBackwardAsync(p, ws, data, rows, labels.Length, LocalCollective.Instance);
            optimizer.Apply(p, ws.Gradients);
            TrainingStep.UpdateRunningStats(p, ws);

            var s = steps[t];
            Check($"step {t} loss", [(float)(loss.SumLoss / loss.Count)], s.GetProperty("loss"));
            var w = s.GetProperty("W").EnumerateArray().ToArray();
            var gamma = s.GetProperty("gamma").EnumerateArray().ToArray();
            var beta = s.GetProperty("beta").EnumerateArray().ToArray();
            var rMean = s.GetProperty("running_mean").EnumerateArray().ToArray();
            var rVar = s.GetProperty("running_var").EnumerateArray().ToArray();
            for (int l = 0; l < hidden.Length; l++)
            {
                Check($"step {t} W[{l}]", p.W[l], w[l]);
                Check($"step {t} gamma[{l}]", p.Gamma[l], gamma[l]);
                Check($"step {t} beta[{l}]", p.Beta[l], beta[l]);
                Check($"step {t} running_mean[{l}]", p.RunningMean[l], rMean[l]);
                Check($"step {t} running_var[{l}]", p.RunningVar[l], rVar[l]);
            }
            Check($"step {t} W_out", p.WOut, s.GetProperty("W_out"));
            Check($"step {t} b_out", p.BOut, s.GetProperty("b_out"));
        }

        var x0 = Floats(batches[0].GetProperty("x"));
        ws.LoadRows(x0, x0.Length / inputs);
        TrainingStep.EvalForward(p, ws);
        Check("eval_logits_batch0", ws.Logits.AsSpan(0, ws.Rows * classes), g.GetProperty("eval_logits_batch0"));
        output.WriteLine($"{file}: {steps.Length} steps of {settings.Kind}, worst relative error {worst:E3}");
    }

    private static void CopyInto(float[] source, float[] target, string what)
    {
        Assert.True(source.Length == target.Length, $"{what} has {source.Length} values, network expects {target.Length}");
        source.CopyTo(target, 0);
    }
}
