namespace BnCluster.Core.Layers;

/// <summary>
/// Softmax + cross-entropy, mean over the GLOBAL batch of N rows (DESIGN §1):
/// L = −(1/N) Σ_i log ŷ_{i,y_i}; dz = (ŷ − onehot(y)) / N on every worker.
/// </summary>
public static class SoftmaxCrossEntropy
{
    /// <summary>
    /// logits[n×C], labels[n] → probs[n×C] (ŷ), returns this shard's Σ_i −log ŷ_{i,y_i} (not divided by N)
    /// and the number of rows whose argmax equals the label. Stable log-softmax: subtract the row max.
    /// </summary>
    public static (double SumLoss, int Correct) Forward(ReadOnlySpan<float> logits, ReadOnlySpan<int> labels, Span<float> probs, int rows, int classes)
    {
        double sumLoss = 0;
        int correct = 0;
        for (int i = 0; i < rows; i++)
        {
            var z = logits.Slice(i * classes, classes);
            var p = probs.Slice(i * classes, classes);
            int argmax = 0;
            float max = z[0];
            for (int k = 1; k < classes; k++) if (z[k] > max) { max = z[k]; argmax = k; }
            double sum = 0;
            for (int k = 0; k < classes; k++) sum += Math.Exp(z[k] - max);
            double logSum = Math.Log(sum);
            for (int k = 0; k < classes; k++) p[k] = (float)Math.Exp(z[k] - max - logSum);
            int label = labels[i];
            sumLoss += logSum - (z[label] - max);
            if (argmax == label) correct++;
        }
        return (sumLoss, correct);
    }

    /// <summary>dz[n×C] = (ŷ − onehot(y)) / N with N the global batch size.</summary>
    public static void Backward(ReadOnlySpan<float> probs, ReadOnlySpan<int> labels, Span<float> dz, int rows, int classes, int globalBatchSize)
    {
        float invN = 1f / globalBatchSize;
        for (int i = 0; i < rows; i++)
        {
            var p = probs.Slice(i * classes, classes);
            var d = dz.Slice(i * classes, classes);
            for (int k = 0; k < classes; k++) d[k] = p[k] * invN;
            d[labels[i]] -= invN;
        }
    }

    /// <summary>Index of the largest logit of each row.</summary>
    public static void Predict(ReadOnlySpan<float> logits, Span<int> predicted, int rows, int classes)
    {
        for (int i = 0; i < rows; i++)
        {
            var z = logits.Slice(i * classes, classes);
            int argmax = 0;
            for (int k = 1; k < classes; k++) if (z[k] > z[argmax]) argmax = k;
            predicted[i] = argmax;
        }
    }
}
