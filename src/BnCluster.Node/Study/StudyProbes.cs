using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Training;

namespace BnCluster.Node.Study;

/// <summary>
/// Covariate shift of the inputs of hidden layer <c>layer</c> (the outputs of the layer below, what it sees): over each
/// window of <c>interval</c> steps, the per-feature mean and variance of those inputs in the mini-batches, averaged;
/// then per window, against the first: mean drift = RMS_j(μ_j − μ_j⁰) / √mean_j σ²_j⁰ (in units of the first window's
/// spread) and variance drift = mean_j |ln((σ²_j + e)/(σ²_j⁰ + e))| (e = 10⁻³·mean σ²⁰, for units ReLU switched off).
/// </summary>
public sealed class CovariateShiftProbe(int layer, int features, long interval) : ITrainingObserver
{
    private readonly BatchNormStats _batch = new(features);
    private readonly double[] _sumMean = new double[features], _sumVar = new double[features];
    private int _inWindow;
    private double[]? _firstMean, _firstVar;
    private readonly List<ShiftPoint> _points = [];

    public IReadOnlyList<ShiftPoint> Points => _points;

    public void StepCommitted(long step, Parameters p, Workspace ws)
    {
        _batch.ComputeFrom(TrainingStep.HiddenLayerOutput(p, ws, layer - 1), ws.Rows);
        for (int j = 0; j < features; j++)
        {
            _sumMean[j] += _batch.Mean[j];
            _sumVar[j] += _batch.Variance(j);
        }
        if (++_inWindow < interval) return;
        var mean = _sumMean.Select(s => s / _inWindow).ToArray();
        var variance = _sumVar.Select(s => s / _inWindow).ToArray();
        Array.Clear(_sumMean);
        Array.Clear(_sumVar);
        _inWindow = 0;
        if (_firstMean is null)
        {
            _firstMean = mean;
            _firstVar = variance;
        }
        _points.Add(new ShiftPoint(step, MeanDrift(_firstMean, _firstVar!, mean), VarianceDrift(_firstVar!, variance)));
    }

    public static double MeanDrift(double[] firstMean, double[] firstVar, double[] mean)
    {
        double sq = 0;
        for (int j = 0; j < mean.Length; j++) sq += (mean[j] - firstMean[j]) * (mean[j] - firstMean[j]);
        double scale = Math.Sqrt(firstVar.Average());
        return scale > 0 ? Math.Sqrt(sq / mean.Length) / scale : 0;
    }

    public static double VarianceDrift(double[] firstVar, double[] variance)
    {
        double e = 1e-3 * firstVar.Average() + 1e-12, sum = 0;
        for (int j = 0; j < variance.Length; j++) sum += Math.Abs(Math.Log((variance[j] + e) / (firstVar[j] + e)));
        return sum / variance.Length;
    }
}

/// <summary>
/// The noise batch norm adds: from step <c>fromStep</c> on, per feature of BN layer <c>layer</c>, the spread over steps of
/// the mini-batch μ_j and σ²_j (Welford), relative to the feature's scale, averaged over features.
/// </summary>
public sealed class BatchNoiseProbe(int layer, int features, long fromStep) : ITrainingObserver
{
    private long _count;
    private readonly double[] _muMean = new double[features], _muM2 = new double[features];
    private readonly double[] _varMean = new double[features], _varM2 = new double[features];

    public void StepCommitted(long step, Parameters p, Workspace ws)
    {
        if (step < fromStep) return;
        var stats = ws.GlobalStats[layer] ?? throw new InvalidOperationException($"hidden layer {layer} has no batch norm");
        _count++;
        for (int j = 0; j < features; j++)
        {
            Welford(ref _muMean[j], ref _muM2[j], stats.Mean[j], _count);
            Welford(ref _varMean[j], ref _varM2[j], stats.Variance(j), _count);
        }
    }

    private static void Welford(ref double mean, ref double m2, double x, long n)
    {
        double d = x - mean;
        mean += d / n;
        m2 += d * (x - mean);
    }

    /// <summary>Mean over features of sd(μ_j)/√mean(σ²_j); NaN before two steps.</summary>
    public double MeanNoise => Average(j => Math.Sqrt(_muM2[j] / (_count - 1)) / Math.Sqrt(_varMean[j]));

    /// <summary>Mean over features of sd(σ²_j)/mean(σ²_j); NaN before two steps.</summary>
    public double VarianceNoise => Average(j => Math.Sqrt(_varM2[j] / (_count - 1)) / _varMean[j]);

    // Features whose variance is (numerically) zero carry no scale to compare with and are left out.
    private double Average(Func<int, double> perFeature)
    {
        if (_count < 2) return double.NaN;
        double sum = 0;
        int used = 0;
        for (int j = 0; j < features; j++)
        {
            if (!(_varMean[j] > 1e-12)) continue;
            sum += perFeature(j);
            used++;
        }
        return used > 0 ? sum / used : double.NaN;
    }
}

/// <summary>Every <c>interval</c> steps, the eval-mode accuracy on <c>test</c> (normalized), in a workspace of its own.</summary>
public sealed class LearningCurveProbe(Dataset test, long interval) : ITrainingObserver, IDisposable
{
    private readonly MatMul _matMul = new(1);
    private Workspace? _ws;
    private readonly List<CurvePoint> _points = [];

    public IReadOnlyList<CurvePoint> Points => _points;

    public void StepCommitted(long step, Parameters p, Workspace ws)
    {
        if (step % interval != 0) return;
        _ws ??= new Workspace(p, Math.Min(512, test.Count), _matMul);
        var result = TrainingStep.Evaluate(p, _ws, test, 0, test.Count);
        _points.Add(new CurvePoint(step, (double)result.Correct / result.Count));
    }

    public void Dispose() => _matMul.Dispose();
}
