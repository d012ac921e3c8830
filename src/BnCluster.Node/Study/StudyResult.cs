using System.Text.Json;
using System.Text.Json.Serialization;

namespace BnCluster.Node.Study;

/// <summary>The mean and variance drift of a layer's inputs at one checkpoint, relative to the first (see <see cref="CovariateShiftProbe"/>).</summary>
public sealed record ShiftPoint(long Step, double MeanDrift, double VarianceDrift);

/// <summary>Test accuracy (on a slice of the test set) at one step of training.</summary>
public sealed record CurvePoint(long Step, double TestAccuracy);

/// <summary>
/// One line of results.jsonl: the run's settings and what it measured. Accuracies are fractions; a run whose loss
/// became non-finite is <see cref="Diverged"/> with NaN accuracies. Probe results are null when the run had no such probe.
/// </summary>
public sealed record StudyResult
{
    public required string Experiment { get; init; }
    public required string Variant { get; init; }
    /// <summary>"before", "after" or "none".</summary>
    public required string Bn { get; init; }
    /// <summary>"gd" or "adam".</summary>
    public required string Optimizer { get; init; }
    public required double Lr { get; init; }
    public required int HiddenLayers { get; init; }
    public int Width { get; init; }
    public required int Batch { get; init; }
    public long Steps { get; init; }
    public double Momentum { get; init; } = 0.1;
    public required ulong Seed { get; init; }
    /// <summary>Training rows the run trained on.</summary>
    public int TrainRows { get; init; }
    public bool Diverged { get; init; }
    /// <summary>Eval-mode accuracy on the training subset the run trained on.</summary>
    public double TrainAccuracy { get; init; } = double.NaN;
    public required double TestAccuracy { get; init; }
    public double TestLoss { get; init; } = double.NaN;
    public double Seconds { get; init; }

    /// <summary>Batch to batch: mean over features of sd(μ_j)/√mean(σ²_j) of the probed BN layer's mini-batch moments.</summary>
    public double? NoiseMean { get; init; }
    /// <summary>Batch to batch: mean over features of sd(σ²_j)/mean(σ²_j).</summary>
    public double? NoiseVariance { get; init; }

    /// <summary>Covariate shift at the end of training (the last point of <see cref="Shift"/>).</summary>
    public double? MeanDrift { get; init; }
    public double? VarianceDrift { get; init; }
    public IReadOnlyList<ShiftPoint>? Shift { get; init; }

    /// <summary>Test accuracy with every BN layer's whole-training-set mean and variance in place of the running averages.</summary>
    public double? WholeSetTestAccuracy { get; init; }
    /// <summary>Mean over BN features of |r_μ − μ_whole| / √σ²_whole: how far the running averages are from the whole-set statistics.</summary>
    public double? RunningMeanDistance { get; init; }

    public IReadOnlyList<CurvePoint>? Curve { get; init; }

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public string ToJsonLine() => JsonSerializer.Serialize(this, Json);

    public static StudyResult FromJsonLine(string line) =>
        JsonSerializer.Deserialize<StudyResult>(line, Json) ?? throw new JsonException("results line is null");
}
