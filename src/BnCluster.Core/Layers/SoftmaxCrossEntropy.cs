using System.Numerics.Tensors;

namespace BnCluster.Core.Layers;

/// <summary>
/// Softmax + cross-entropy, mean over the GLOBAL batch of N rows (docs/design.md, "The math"):
/// L = −(1/N) Σ_i log ŷ_{i,y_i}; dz = (ŷ − onehot(y)) / N on every worker.
/// </summary>
public static class SoftmaxCrossEntropy
{
    /// <summary>
    /// logits[n×C], labels[n] → probs[n×C] (ŷ), returns this shard's Σ_i −log ŷ_{i,y_i} (not divided by N)
    /// and the number of rows whose argmax equals the label. Stable: with m_i the row max,
    /// ŷ_ik = e^(z_ik − m_i) / S_i, S_i = Σ_k e^(z_ik − m_i), −log ŷ_{i,y_i} = log S_i − (z_{i,y_i} − m_i).
    /// The exponentials run as one vectorized pass over the whole n×C block (float32, as torch computes them):
    /// per-row scalar exps cost more than the output layer's products.
    /// </summary>
    public static (double SumLoss, int Correct) Forward(ReadOnlySpan<float> logits, ReadOnlySpan<int> labels, Span<float> probs, int rows, int classes)
    {
        int n = rows * classes;
        var e = probs[..n];
        double sumLoss = 0;
        int correct = 0;
        for (int i = 0; i < rows; i++)
        {
            var z = logits.Slice(i * classes, classes);
            var shifted = e.Slice(i * classes, classes);
            int argmax = 0;
            float max = z[0];
            for (int k = 1; k < classes; k++) if (z[k] > max) { max = z[k]; argmax = k; }
            for (int k = 0; k < classes; k++) shifted[k] = z[k] - max;
            int label = labels[i];
            sumLoss -= shifted[label];
            if (argmax == label) correct++;
        }
        TensorPrimitives.Exp(e, e);
        for (int i = 0; i < rows; i++)
        {
            var p = e.Slice(i * classes, classes);
            float sum = 0;
            for (int k = 0; k < classes; k++) sum += p[k];
            sumLoss += Math.Log(sum);
            for (int k = 0; k < classes; k++) p[k] /= sum;
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
