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
        int k = Parameters.Spec.Classes;
        ForwardChunks(data, (start, rows) => SoftmaxCrossEntropy.Predict(_workspace.Logits, predicted.AsSpan(start, rows), rows, k));
        return predicted;
    }

    /// <summary>[rows × classes] the softmax probabilities of every row of <paramref name="data"/> (labels are not used).</summary>
    public float[] PredictProbabilities(Dataset data)
    {
        int k = Parameters.Spec.Classes;
        var probabilities = new float[(long)data.Count * k];
        ForwardChunks(data, (start, rows) => SoftmaxCrossEntropy.Softmax(_workspace.Logits, probabilities.AsSpan(start * k, rows * k), rows, k));
        return probabilities;
    }

    /// <summary>The eval-mode forward of the normalized rows, <see cref="ChunkRows"/> at a time; <paramref name="useLogits"/>(start, rows) reads the chunk's logits.</summary>
    private void ForwardChunks(Dataset data, Action<int, int> useLogits)
    {
        var normalized = Normalize(data);
        for (int start = 0; start < data.Count; start += ChunkRows)
        {
            int rows = Math.Min(ChunkRows, data.Count - start);
            normalized.CopyRows(start, rows, _workspace.X);
            _workspace.Rows = rows;
            TrainingStep.EvalForward(Parameters, _workspace);
            useLogits(start, rows);
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
