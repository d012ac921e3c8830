using System.Numerics.Tensors;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Core.Tests.Data;
using BnCluster.Core.Tests.Training;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Collectives.Tests;

/// <summary>
/// The optimizer update made by the worker processes, each on its slice, in the coordinator's shared-memory file: each
/// worker's mapping is opened here in one process (separate mappings of one file behave as in separate processes).
/// </summary>
public sealed class SharedShardedUpdateTests
{
    // A 300×37 weight (not a multiple of 16 elements: tensors are padded), BN vectors, an output layer.
    private static readonly NetworkSpec Spec = new(37, [300, 13], 3, Activation.Relu, BatchNormPlacement.Before);

    private sealed class UpdateFile : IDisposable
    {
        private readonly TempDirectory _dir = new();

        public UpdateFile(Parameters p, int ranks, OptimizerSettings settings)
        {
            Path = System.IO.Path.Combine(_dir.Path, "update.shm");
            Coordinator = SharedShardedUpdate.Create(Path, p, ranks, settings);
            Workers = Enumerable.Range(0, ranks).Select(_ => SharedShardedUpdate.Open(Path, Coordinator.Token, p, ranks)).ToArray();
        }

        public string Path { get; }
        public SharedShardedUpdate Coordinator { get; }
        public SharedShardedUpdate[] Workers { get; }

        public void Dispose()
        {
            foreach (var w in Workers) w.Dispose();
            Coordinator.Dispose();
            _dir.Dispose();
        }
    }

    private static Gradients RandomGradients(Parameters shape, Random rng)
    {
        var g = new Gradients(shape);
        foreach (var t in g.Tensors)
            for (int j = 0; j < t.Values.Length; j++) t.Values[j] = rng.Next(12) == 0 ? -0f : (float)(rng.NextDouble() * 2 - 1);
        return g;
    }

    private static void AssertState(Parameters expected, Optimizer expectedOptimizer, Parameters actual, Optimizer actualOptimizer)
    {
        for (int i = 0; i < expected.Trainable.Count; i++)
        {
            Assert.Equal(expected.Trainable[i].Values, actual.Trainable[i].Values);
            Assert.Equal(expectedOptimizer.FirstMoments[i], actualOptimizer.FirstMoments[i]);
            Assert.Equal(expectedOptimizer.SecondMoments[i], actualOptimizer.SecondMoments[i]);
        }
    }

    /// <summary>
    /// Three steps of every optimizer with 2 and 3 ranks, each on a thread of its own: the next version holds, bit for bit,
    /// what the coordinator's update of the rank-order sum gives; the committed version is not written.
    /// </summary>
    [Theory]
    [InlineData(OptimizerKind.Adam, 2)]
    [InlineData(OptimizerKind.Adam, 3)]
    [InlineData(OptimizerKind.Momentum, 2)]
    [InlineData(OptimizerKind.RmsProp, 3)]
    [InlineData(OptimizerKind.Gd, 2)]
    public async Task The_workers_slices_make_the_coordinators_update_of_the_rank_order_sum(OptimizerKind kind, int ranks)
    {
        var settings = new OptimizerSettings(kind, 0.01f);
        var expected = TestNetworks.RandomParameters(Spec, 5);
        var expectedOptimizer = new Optimizer(settings, expected);
        using var file = new UpdateFile(expected, ranks, settings);
        Assert.Equal(settings, file.Workers[0].Settings); // from the header
        file.Coordinator.WriteState(0, expected, expectedOptimizer);
        var rng = new Random(3);
        for (long committed = 0; committed < 3; committed++)
        {
            var gradients = Enumerable.Range(0, ranks).Select(_ => RandomGradients(expected, rng)).ToArray();
            var before = expected.Clone();
            var sum = new Gradients(expected);
            for (int i = 0; i < sum.Tensors.Count; i++)
            {
                TensorPrimitives.Add(gradients[0].Tensors[i].Values, 0f, sum.Tensors[i].Values);
                for (int r = 1; r < ranks; r++) TensorPrimitives.Add(sum.Tensors[i].Values, gradients[r].Tensors[i].Values, sum.Tensors[i].Values);
            }
            expectedOptimizer.Apply(expected, sum);

            long step = committed + 1;
            var workers = Enumerable.Range(0, ranks).Select(rank => Task.Run(() =>
            {
                var update = file.Workers[rank];
                int flags = update.WriteGradients(rank, ranks, step, 1, gradients[rank].Tensors) ? 0 : SharedShardedUpdate.OwnNonFinite;
                update.WaitForGradients(ranks, step, 1, CancellationToken.None);
                flags |= update.UpdateSlice(rank, ranks, step, 1, committed, step, gradients[rank].Tensors);
                update.PublishUpdate(rank, step, 1, flags);
            })).ToArray();
            await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(30));

            for (int r = 0; r < ranks; r++)
            {
                Assert.True(file.Coordinator.TryReadUpdate(r, step, 1, out int flags));
                Assert.Equal(0, flags);
            }
            var next = Parameters.Initialize(Spec, 9);
            var nextOptimizer = new Optimizer(settings, next);
            file.Coordinator.ReadState(committed + 1, next, nextOptimizer);
            AssertState(expected, expectedOptimizer, next, nextOptimizer);
            var worker = Parameters.Initialize(Spec, 9);
            file.Workers[ranks - 1].ReadParameters(committed + 1, worker);
            for (int i = 0; i < worker.Trainable.Count; i++) Assert.Equal(expected.Trainable[i].Values, worker.Trainable[i].Values);
            // The committed version still holds the state the step started from.
            var old = Parameters.Initialize(Spec, 9);
            file.Coordinator.ReadState(committed, old, new Optimizer(settings, old));
            for (int i = 0; i < old.Trainable.Count; i++) Assert.Equal(before.Trainable[i].Values, old.Trainable[i].Values);
        }
    }

    /// <summary>
    /// A step run ahead (StartStep.NextRows): once every rank has reported a clean slice of step 1, the workers make step 2
    /// from version 1 into version 2 before the coordinator has counted step 1. The third version keeps the committed
    /// state (version 0) and step 1's (version 1) intact, and the report slots of step 1 stay readable.
    /// </summary>
    [Fact]
    public async Task A_step_run_ahead_writes_a_third_version_and_leaves_the_committed_and_running_ones()
    {
        const int ranks = 2;
        var settings = new OptimizerSettings(OptimizerKind.Adam, 0.01f);
        var expected = TestNetworks.RandomParameters(Spec, 5);
        var expectedOptimizer = new Optimizer(settings, expected);
        using var file = new UpdateFile(expected, ranks, settings);
        file.Coordinator.WriteState(0, expected, expectedOptimizer);
        var versions = new List<Parameters> { expected.Clone() };
        var rng = new Random(8);
        var gradients = Enumerable.Range(0, 2).Select(_ => Enumerable.Range(0, ranks).Select(_ => RandomGradients(expected, rng)).ToArray()).ToArray();
        foreach (var step in gradients)
        {
            var sum = new Gradients(expected);
            for (int i = 0; i < sum.Tensors.Count; i++)
            {
                TensorPrimitives.Add(step[0].Tensors[i].Values, 0f, sum.Tensors[i].Values);
                TensorPrimitives.Add(sum.Tensors[i].Values, step[1].Tensors[i].Values, sum.Tensors[i].Values);
            }
            expectedOptimizer.Apply(expected, sum);
            versions.Add(expected.Clone());
        }

        var workers = Enumerable.Range(0, ranks).Select(rank => Task.Run(() =>
        {
            var update = file.Workers[rank];
            for (long step = 1; step <= 2; step++)
            {
                if (step > 1) Assert.True(update.WaitForUpdates(ranks, step - 1, 1, CancellationToken.None));
                update.WriteGradients(rank, ranks, step, 1, gradients[step - 1][rank].Tensors);
                update.WaitForGradients(ranks, step, 1, CancellationToken.None);
                update.PublishUpdate(rank, step, 1, update.UpdateSlice(rank, ranks, step, 1, step - 1, step, gradients[step - 1][rank].Tensors));
            }
        })).ToArray();
        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(30));

        for (int r = 0; r < ranks; r++)
            for (long step = 1; step <= 2; step++)
            {
                Assert.True(file.Coordinator.TryReadUpdate(r, step, 1, out int flags), $"rank {r}'s report of step {step}");
                Assert.Equal(0, flags);
            }
        for (long version = 0; version <= 2; version++)
        {
            var read = Parameters.Initialize(Spec, 9);
            file.Coordinator.ReadState(version, read, new Optimizer(settings, read));
            for (int i = 0; i < read.Trainable.Count; i++) Assert.Equal(versions[(int)version].Trainable[i].Values, read.Trainable[i].Values);
        }
        // The last step's moments too: the file's version 2 is the coordinator's state after two steps.
        var last = Parameters.Initialize(Spec, 9);
        var lastOptimizer = new Optimizer(settings, last);
        file.Coordinator.ReadState(2, last, lastOptimizer);
        AssertState(expected, expectedOptimizer, last, lastOptimizer);
    }

    /// <summary>A worker waiting to run ahead goes on only when every report is clean; a flagged one stops it, and the wait can be cancelled.</summary>
    [Fact]
    public void Waiting_for_the_slices_sees_a_flagged_report_and_can_be_cancelled()
    {
        var settings = new OptimizerSettings(OptimizerKind.Gd, 0.01f);
        var p = Parameters.Initialize(Spec, 5);
        using var file = new UpdateFile(p, 2, settings);
        file.Workers[0].PublishUpdate(0, 6, 1, 0);
        Assert.ThrowsAny<OperationCanceledException>(() => file.Workers[0].WaitForUpdates(2, 6, 1, new CancellationToken(canceled: true)));
        file.Workers[1].PublishUpdate(1, 6, 1, SharedShardedUpdate.SliceNonFinite);
        Assert.False(file.Workers[0].WaitForUpdates(2, 6, 1, CancellationToken.None));
        file.Workers[1].PublishUpdate(1, 6, 2, 0); // another attempt's clean report is not this one's
        file.Workers[0].PublishUpdate(0, 6, 2, 0);
        Assert.True(file.Workers[1].WaitForUpdates(2, 6, 2, CancellationToken.None));
        Assert.False(file.Coordinator.TryReadUpdate(1, 6, 1, out _)); // overwritten by attempt 2: one slot per step parity
    }

    [Fact]
    public void Slices_cover_the_parameters_once_on_cache_lines()
    {
        var p = Parameters.Initialize(Spec, 5);
        using var file = new UpdateFile(p, 5, new OptimizerSettings(OptimizerKind.Adam, 0.01f));
        for (int ranks = 1; ranks <= 5; ranks++)
        {
            long at = 0;
            for (int r = 0; r < ranks; r++)
            {
                var (start, end) = file.Coordinator.Slice(r, ranks);
                Assert.Equal(at, start);
                Assert.True(end >= start);
                Assert.Equal(0, start % 16);
                at = end;
            }
            Assert.True(at >= p.Trainable.Sum(t => t.Values.Length), "the slices end before the parameters do");
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => file.Coordinator.Slice(2, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => file.Coordinator.Slice(0, 6));
    }

    [Fact]
    public void Non_finite_gradients_and_missing_ranks_are_reported()
    {
        var settings = new OptimizerSettings(OptimizerKind.Adam, 0.01f);
        var p = TestNetworks.RandomParameters(Spec, 5);
        using var file = new UpdateFile(p, 2, settings);
        file.Coordinator.WriteState(0, p, new Optimizer(settings, p));
        var rng = new Random(1);
        var good = RandomGradients(p, rng);
        var bad = RandomGradients(p, rng);
        bad.Tensors[^1].Values[1] = float.PositiveInfinity; // the output bias: the last slice's
        Assert.True(file.Workers[0].WriteGradients(0, 2, 4, 2, good.Tensors));
        Assert.False(file.Workers[1].WriteGradients(1, 2, 4, 2, bad.Tensors));
        Assert.Equal(0, file.Workers[0].UpdateSlice(0, 2, 4, 2, 3, 4, good.Tensors));
        Assert.Equal(SharedShardedUpdate.SliceNonFinite, file.Workers[1].UpdateSlice(1, 2, 4, 2, 3, 4, bad.Tensors));
        // Gradients of another attempt are not used: the slice is refused as a whole.
        Assert.Equal(SharedShardedUpdate.GradientsChanged, file.Workers[0].UpdateSlice(0, 2, 4, 3, 3, 4, good.Tensors));
        Assert.ThrowsAny<OperationCanceledException>(() => file.Workers[0].WaitForGradients(2, 4, 3, new CancellationToken(canceled: true)));
        file.Workers[1].PublishUpdate(1, 4, 2, SharedShardedUpdate.OwnNonFinite);
        Assert.True(file.Coordinator.TryReadUpdate(1, 4, 2, out int flags));
        Assert.Equal(SharedShardedUpdate.OwnNonFinite, flags);
        Assert.False(file.Coordinator.TryReadUpdate(0, 4, 2, out _)); // rank 0 has published nothing
        Assert.False(file.Coordinator.TryReadUpdate(1, 4, 3, out _)); // nor rank 1 for attempt 3
    }

    [Fact]
    public void Opening_names_what_differs()
    {
        var settings = new OptimizerSettings(OptimizerKind.Momentum, 0.5f, 0.8f);
        var p = Parameters.Initialize(Spec, 5);
        using var file = new UpdateFile(p, 2, settings);
        var wrongToken = (byte[])file.Coordinator.Token.Clone();
        wrongToken[3] ^= 1;
        Assert.Contains("another token", Assert.Throws<InvalidDataException>(() => SharedShardedUpdate.Open(file.Path, wrongToken, p, 2)).Message);
        Assert.Contains("bytes", Assert.Throws<InvalidDataException>(() => SharedShardedUpdate.Open(file.Path, file.Coordinator.Token, p, 3)).Message);
        var other = Parameters.Initialize(new NetworkSpec(37, [13, 300], 3, Activation.Relu, BatchNormPlacement.Before), 5);
        Assert.Throws<InvalidDataException>(() => SharedShardedUpdate.Open(file.Path, file.Coordinator.Token, other, 2));
        using var dir = new TempDirectory();
        string notOurs = Path.Combine(dir.Path, "other.shm");
        File.WriteAllBytes(notOurs, new byte[4096]);
        Assert.Contains("magic", Assert.Throws<InvalidDataException>(() => SharedShardedUpdate.Open(notOurs, file.Coordinator.Token, p, 2)).Message);
        Assert.Throws<ArgumentException>(() => file.Coordinator.WriteState(0, p, new Optimizer(new OptimizerSettings(OptimizerKind.Adam, 0.1f), p)));
    }
}
