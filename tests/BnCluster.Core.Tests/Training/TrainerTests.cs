using BnCluster.Core.Data;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Tests.Numerics;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Core.Tests.Training;

public sealed class TrainerTests
{
    private sealed class ListProgress<T> : IProgress<T>
    {
        public List<T> Items { get; } = [];
        public void Report(T value) => Items.Add(value);
    }

    private static (Dataset Train, Dataset Test) Data()
    {
        var all = TestNetworks.RandomDataset(500, 6, 3, seed: 31, shift: 50f, scale: 4f);
        Dataset Slice(int start, int count) => NumericAssert.MakeDataset(
            all.Features.AsSpan(start * 6, count * 6).ToArray(), all.Labels.AsSpan(start, count).ToArray(), 6, 3);
        return (Slice(0, 400), Slice(400, 100));
    }

    private static TrainerOptions Options(BatchNormPlacement placement = BatchNormPlacement.Before, long? maxSteps = null) =>
        new(new NetworkSpec(6, [16, 8], 3, Activation.Relu, placement), new OptimizerSettings(OptimizerKind.Adam, 0.01f),
            BatchSize: 32, Epochs: 4, MaxSteps: maxSteps, Seed: 5);

    [Theory]
    [InlineData(BatchNormPlacement.Before)]
    [InlineData(BatchNormPlacement.After)]
    [InlineData(BatchNormPlacement.None)]
    public async Task TrainerLearnsAndReportsProgress(BatchNormPlacement placement)
    {
        var (train, test) = Data();
        var batches = new ListProgress<BatchProgress>();
        var epochs = new ListProgress<EpochMetrics>();
        var trainer = new Trainer(Options(placement)) { BatchProgress = batches, EpochProgress = epochs };
        var result = await trainer.RunAsync(train, test);

        Assert.Equal(4, result.Epochs.Count);
        Assert.Equal(result.Epochs, epochs.Items);
        Assert.Equal(4 * 13, result.Steps); // ⌈400/32⌉ batches per epoch, last one smaller
        Assert.Equal(result.Steps, batches.Items.Count);
        Assert.Equal(Enumerable.Range(1, 52).Select(i => (long)i), batches.Items.Select(b => b.Step));
        var last = result.Epochs[^1];
        Assert.Equal(4, last.Epoch);
        Assert.Equal(52, last.Step);
        Assert.True(last.TrainLoss < result.Epochs[0].TrainLoss, "train loss falls");
        Assert.True(last.TestAccuracy > 0.85, $"test accuracy {last.TestAccuracy}");
        Assert.True(last.SamplesPerSecond > 0);
        Assert.True(last.Seconds > 0);
    }

    [Fact]
    public async Task SameSeedGivesBitIdenticalParametersAndMaxStepsStopsEarly()
    {
        var (train, test) = Data();
        var a = await new Trainer(Options(maxSteps: 20)).RunAsync(train, test);
        var b = await new Trainer(Options(maxSteps: 20)).RunAsync(train, test);
        Assert.Equal(20, a.Steps);
        Assert.Equal(2, a.Epochs.Count); // 13 steps, then 7 of the second epoch
        for (int i = 0; i < a.Parameters.Trainable.Count; i++)
            Assert.Equal(a.Parameters.Trainable[i].Values, b.Parameters.Trainable[i].Values);
        Assert.Equal(a.Parameters.RunningVar[0], b.Parameters.RunningVar[0]);
    }

    [Theory]
    [InlineData(BatchNormPlacement.Before, Activation.Relu)]
    [InlineData(BatchNormPlacement.After, Activation.Tanh)]
    [InlineData(BatchNormPlacement.None, Activation.Sigmoid)]
    public async Task ModelDocumentRoundTripsAndInferenceMatchesTrainerMetrics(BatchNormPlacement placement, Activation activation)
    {
        var (train, test) = Data();
        var options = Options(placement) with { Spec = new NetworkSpec(6, [16, 8], 3, activation, placement), Epochs = 2 };
        var trainer = new Trainer(options);
        var result = await trainer.RunAsync(train, test);
        var doc = result.ToDocument(train.ClassNames, trainer.Metadata(result, "synthetic"));

        var expectedTypes = placement switch
        {
            BatchNormPlacement.Before => new[] { "dense", "batchnorm", "act", "dense", "batchnorm", "act", "dense" },
            BatchNormPlacement.After => new[] { "dense", "act", "batchnorm", "dense", "act", "batchnorm", "dense" },
            _ => new[] { "dense", "act", "dense", "act", "dense" },
        };
        Assert.Equal(expectedTypes, doc.Layers.Select(l => l switch { DenseLayerRecord => "dense", BatchNormLayerRecord => "batchnorm", _ => "act" }));
        Assert.Equal(result.Steps, Assert.IsType<long>(doc.Training["steps"]));
        Assert.Equal(6, doc.Input.Features);

        var back = ModelConversion.ToParameters(doc);
        Assert.Equal(result.Parameters.Spec.Hidden, back.Spec.Hidden);
        Assert.Equal(result.Parameters.Spec with { Hidden = back.Spec.Hidden }, back.Spec);
        for (int i = 0; i < back.Trainable.Count; i++) Assert.Equal(result.Parameters.Trainable[i].Values, back.Trainable[i].Values);

        using var model = new InferenceModel(doc);
        var eval = model.Evaluate(test);
        Assert.Equal(result.Epochs[^1].TestLoss, eval.Loss, 1e-6);
        Assert.Equal(result.Epochs[^1].TestAccuracy, eval.Accuracy, 1e-9);
        var predicted = model.Predict(test);
        Assert.Equal(eval.Accuracy, predicted.Zip(test.Labels).Count(t => t.First == t.Second) / (double)test.Count, 1e-9);
    }

    [Fact]
    public void MalformedDocumentsAreRefusedWithTheLayerNamed()
    {
        var p = Parameters.Initialize(new NetworkSpec(4, [5], 2), 1);
        var doc = ModelConversion.ToDocument(p, new InputNormalizer(new float[4], [1, 1, 1, 1]), ["a", "b"]);
        var noActivation = doc with { Layers = [doc.Layers[0], doc.Layers[1], doc.Layers[3]] };
        Assert.Contains("layer", Assert.Throws<FormatException>(() => ModelConversion.ToParameters(noActivation)).Message);
        var badWeight = doc with { Layers = [new DenseLayerRecord(4, 5, new float[7], null), .. doc.Layers.Skip(1)] };
        Assert.Contains("model layer 0", Assert.Throws<FormatException>(() => ModelConversion.ToParameters(badWeight)).Message);
        var badActivation = doc with { Layers = [doc.Layers[0], doc.Layers[1], new ActivationLayerRecord("gelu"), doc.Layers[3]] };
        Assert.Contains("gelu", Assert.Throws<FormatException>(() => ModelConversion.ToParameters(badActivation)).Message);
        var wrongClasses = doc with { Classes = ["a"] };
        Assert.Throws<FormatException>(() => ModelConversion.ToParameters(wrongClasses));
    }
}
