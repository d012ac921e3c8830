using BnCluster.Core.Data;
using BnCluster.Core.Kernels;
using BnCluster.Core.Layers;
using BnCluster.Core.Training;

namespace BnCluster.Core.Model;

/// <summary>Mean loss and accuracy of a model over a dataset.</summary>
public readonly record struct EvaluationResult(double Loss, double Accuracy, int Count);

/// <summary>
/// A trained model ready for <c>bncluster eval</c> and <c>predict</c>: normalizes inputs with the training set's
/// statistics and runs the eval-mode forward (BN with running statistics).
/// </summary>
public sealed class InferenceModel : IDisposable
{
    private const int ChunkRows = 256;
    private readonly MatMul _matMul;
    private readonly Workspace _workspace;

    public InferenceModel(ModelDocument document, int threads = 1)
    {
        Document = document;
        Parameters = ModelConversion.ToParameters(document);
        Input = InputNormalizer.FromRecord(document.Input);
        Classes = document.Classes;
        _matMul = new MatMul(threads);
        _workspace = new Workspace(Parameters, ChunkRows, _matMul);
    }

    public ModelDocument Document { get; }
    public Parameters Parameters { get; }
    public InputNormalizer Input { get; }
    public IReadOnlyList<string> Classes { get; }

    /// <summary>Predicted class index of every row of <paramref name="data"/> (labels are not used).</summary>
    public int[] Predict(Dataset data)
    {
        var predicted = new int[data.Count];
        Predict(data, predicted, default);
        return predicted;
    }

    /// <summary>
    /// Predicted class index of every row and the softmax probabilities [Count × Classes], row-major in class order:
    /// the float32 softmax the loss uses (labels are not used).
    /// </summary>
    public (int[] Predicted, float[] Probabilities) PredictProbabilities(Dataset data)
    {
        var predicted = new int[data.Count];
        var probabilities = new float[(long)data.Count * Parameters.Spec.Classes];
        Predict(data, predicted, probabilities);
        return (predicted, probabilities);
    }

    private void Predict(Dataset data, Span<int> predicted, Span<float> probabilities)
    {
        var normalized = Normalize(data);
        int k = Parameters.Spec.Classes;
        Span<int> noLabels = new int[ChunkRows]; // the loss's softmax wants labels; class 0 stands in, its loss is dropped
        for (int start = 0; start < data.Count; start += ChunkRows)
        {
            int rows = Math.Min(ChunkRows, data.Count - start);
            normalized.CopyRows(start, rows, _workspace.X);
            _workspace.Rows = rows;
            TrainingStep.EvalForward(Parameters, _workspace);
            SoftmaxCrossEntropy.Predict(_workspace.Logits, predicted.Slice(start, rows), rows, k);
            if (!probabilities.IsEmpty)
                SoftmaxCrossEntropy.Forward(_workspace.Logits, noLabels[..rows], probabilities.Slice(start * k, rows * k), rows, k);
        }
    }

    /// <summary>Mean cross-entropy and accuracy over every row of <paramref name="data"/>.</summary>
    public EvaluationResult Evaluate(Dataset data)
    {
        if (data.Count == 0) throw new ArgumentException($"dataset '{data.Name}' has no rows to evaluate");
        var total = TrainingStep.Evaluate(Parameters, _workspace, Normalize(data), 0, data.Count);
        return new EvaluationResult(total.SumLoss / total.Count, (double)total.Correct / total.Count, total.Count);
    }

    private Dataset Normalize(Dataset data)
    {
        if (data.FeatureCount != Input.Features)
            throw new ArgumentException($"dataset '{data.Name}' has {data.FeatureCount} features, the model expects {Input.Features}");
        return Input.Apply(data);
    }

    public void Dispose() => _matMul.Dispose();
}
