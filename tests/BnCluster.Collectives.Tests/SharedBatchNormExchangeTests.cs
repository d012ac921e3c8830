using BnCluster.Core.Model;
using BnCluster.Core.Tests.Data;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Collectives.Tests;

/// <summary>
/// The batch-norm exchange file of the worker processes on the coordinator's machine: the coordinator's and each
/// worker's mapping are opened here in one process (separate mappings of one file behave as in separate processes).
/// </summary>
public sealed class SharedBatchNormExchangeTests
{
    // Two BN layers of different widths (11 and 7 features) and a third hidden layer of 5.
    private static readonly NetworkSpec Spec = new(13, [11, 7, 5], 3, Activation.Relu, BatchNormPlacement.Before);
    private static readonly Parameters P = Parameters.Initialize(Spec, 5);

    /// <summary>The coordinator's exchange for <paramref name="ranks"/> workers and each worker's own mapping of it.</summary>
    private sealed class ExchangeFile : IDisposable
    {
        private readonly TempDirectory _dir = new();

        public ExchangeFile(int ranks)
        {
            Path = System.IO.Path.Combine(_dir.Path, "bn.shm");
            Coordinator = SharedBatchNormExchange.Create(Path, P, ranks);
            Workers = Enumerable.Range(0, ranks).Select(_ => SharedBatchNormExchange.Open(Path, Coordinator.Token, P, ranks)).ToArray();
        }

        public string Path { get; }
        public SharedBatchNormExchange Coordinator { get; }
        public SharedBatchNormExchange[] Workers { get; }

        public void Dispose()
        {
            foreach (var w in Workers) w.Dispose();
            Coordinator.Dispose();
            _dir.Dispose();
        }
    }

    // Rank r's partial moments: uneven counts and a mean far from 0 (where Σz² − (Σz)²/N would cancel).
    private static BatchNormStats Stats(int features, int rank)
    {
        var s = new BatchNormStats(features) { Count = 3 + 2 * rank };
        for (int j = 0; j < features; j++)
        {
            s.Mean[j] = 1e4 + j * 0.37 - rank * 1.3;
            s.M2[j] = 0.25 + j * rank * 0.11;
        }
        return s;
    }

    private static BatchNormGradSums GradSums(int features, int rank)
    {
        var s = new BatchNormGradSums(features);
        for (int j = 0; j < features; j++)
        {
            s.SumDy[j] = 0.1 * j - rank * 1e-3;
            s.SumDyXhat[j] = 1.0 / (1 + j + rank);
        }
        return s;
    }

    [Fact]
    public async Task Every_worker_merges_all_ranks_in_rank_order_into_the_coordinators_bits()
    {
        const int ranks = 3;
        using var file = new ExchangeFile(ranks);
        int[] bnLayers = [0, 1, 2];
        // What the coordinator computes from BnStats / BnGradStats messages: Chan's merge, then sums, in rank order.
        var expectedStats = bnLayers.Select(l =>
        {
            var m = new BatchNormStats(Spec.Hidden[l]);
            for (int r = 0; r < ranks; r++) m.Merge(Stats(Spec.Hidden[l], r));
            return m;
        }).ToArray();
        var expectedSums = bnLayers.Select(l =>
        {
            var m = new BatchNormGradSums(Spec.Hidden[l]);
            for (int r = 0; r < ranks; r++) m.Add(GradSums(Spec.Hidden[l], r));
            return m;
        }).ToArray();

        // Each worker on a thread of its own, publishing and waiting as a step does (forward, then backward).
        var results = Enumerable.Range(0, ranks).Select(rank => Task.Run(() =>
        {
            var exchange = file.Workers[rank];
            var stats = new List<BatchNormStats>();
            var sums = new List<BatchNormGradSums>();
            foreach (int l in bnLayers)
            {
                exchange.PublishStats(l, rank, 17, 2, Stats(Spec.Hidden[l], rank));
                var merged = new BatchNormStats(Spec.Hidden[l]) { Count = 99 }; // old content is discarded
                exchange.WaitAndMergeStats(l, ranks, 17, 2, merged, CancellationToken.None);
                stats.Add(merged);
            }
            foreach (int l in bnLayers.Reverse())
            {
                exchange.PublishGradSums(l, rank, 17, 2, GradSums(Spec.Hidden[l], rank));
                var sum = new BatchNormGradSums(Spec.Hidden[l]);
                exchange.WaitAndAddGradSums(l, ranks, 17, 2, sum, CancellationToken.None);
                sums.Insert(0, sum);
            }
            return (stats, sums);
        })).ToArray();
        var all = await Task.WhenAll(results).WaitAsync(TimeSpan.FromSeconds(30));

        foreach (var (stats, sums) in all)
            foreach (int l in bnLayers)
            {
                Assert.Equal(expectedStats[l].Count, stats[l].Count);
                Assert.Equal(expectedStats[l].Mean, stats[l].Mean); // exact: the same operations in the same order
                Assert.Equal(expectedStats[l].M2, stats[l].M2);
                Assert.Equal(expectedSums[l].SumDy, sums[l].SumDy);
                Assert.Equal(expectedSums[l].SumDyXhat, sums[l].SumDyXhat);
            }
        // The coordinator merges the same slots again for the running averages, and checks every rank's.
        foreach (int l in bnLayers)
        {
            var again = new BatchNormStats(Spec.Hidden[l]);
            Assert.True(file.Coordinator.TryMergeStats(l, ranks, 17, 2, again, out _));
            Assert.Equal(expectedStats[l].Mean, again.Mean);
        }
        for (int r = 0; r < ranks; r++) Assert.Equal(SharedBatchNormExchange.SlotState.Complete, file.Coordinator.Check(r, 17, 2, out _));
    }

    [Fact]
    public async Task A_worker_waits_for_a_rank_that_publishes_later_and_a_cancelled_wait_ends()
    {
        using var file = new ExchangeFile(2);
        file.Workers[0].PublishStats(0, 0, 5, 1, Stats(11, 0));
        var merged = new BatchNormStats(11);
        var waiting = Task.Run(() => file.Workers[0].WaitAndMergeStats(0, 2, 5, 1, merged, CancellationToken.None));
        await Task.Delay(20);
        Assert.False(waiting.IsCompleted, "merged before rank 1 published");
        file.Workers[1].PublishStats(0, 1, 5, 1, Stats(11, 1));
        await waiting.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(3 + 5, merged.Count);

        // Rank 1 never publishes the backward sums: the abort (cancellation) ends the wait, also after the spinning phase.
        using var abort = new CancellationTokenSource(TimeSpan.FromMilliseconds(120));
        file.Workers[0].PublishGradSums(0, 0, 5, 1, GradSums(11, 0));
        Assert.ThrowsAny<OperationCanceledException>(() => file.Workers[0].WaitAndAddGradSums(0, 2, 5, 1, new BatchNormGradSums(11), abort.Token));
    }

    [Fact]
    public void Partials_of_another_step_or_attempt_are_never_merged()
    {
        using var file = new ExchangeFile(2);
        file.Workers[0].PublishStats(1, 0, 8, 2, Stats(7, 0));
        file.Workers[1].PublishStats(1, 1, 8, 1, Stats(7, 1)); // rank 1 still on the aborted attempt 1
        var merged = new BatchNormStats(7);
        Assert.False(file.Coordinator.TryMergeStats(1, 2, 8, 2, merged, out int failed));
        Assert.Equal(1, failed);
        Assert.False(file.Coordinator.TryMergeStats(1, 2, 9, 2, merged, out failed)); // a later step: nobody yet
        Assert.Equal(0, failed);
        Assert.ThrowsAny<OperationCanceledException>(() => file.Workers[0].WaitAndMergeStats(1, 2, 8, 2, merged, new CancellationToken(canceled: true)));
        // A fresh file holds nothing, not even for step 0.
        Assert.False(file.Coordinator.TryMergeStats(0, 1, 0, 0, merged = new BatchNormStats(11), out _));
    }

    /// <summary>
    /// A step run ahead (StartStep.NextRows) publishes into the other step parity's slots: the coordinator still merges
    /// this step's partials for the running averages, bit for bit, after the next step's have been published; the step
    /// after that writes over them.
    /// </summary>
    [Fact]
    public void The_next_steps_partials_leave_this_steps_slots_for_the_coordinator()
    {
        using var file = new ExchangeFile(2);
        for (int rank = 0; rank < 2; rank++)
        {
            file.Workers[rank].PublishStats(0, rank, 8, 1, Stats(11, rank));
            file.Workers[rank].PublishGradSums(0, rank, 8, 1, GradSums(11, rank));
        }
        var expected = new BatchNormStats(11);
        Assert.True(file.Coordinator.TryMergeStats(0, 2, 8, 1, expected, out _));
        for (int rank = 0; rank < 2; rank++)
        {
            var next = Stats(11, rank);
            next.Mean[3] = -7; // (other numbers)
            file.Workers[rank].PublishStats(0, rank, 9, 1, next);
            file.Workers[rank].PublishGradSums(0, rank, 9, 1, GradSums(11, 1 - rank));
        }
        var merged = new BatchNormStats(11);
        Assert.True(file.Coordinator.TryMergeStats(0, 2, 8, 1, merged, out _));
        Assert.Equal(expected.Count, merged.Count);
        Assert.Equal(expected.Mean, merged.Mean);
        Assert.Equal(expected.M2, merged.M2);
        Assert.True(file.Coordinator.Published(0, backward: true, 1, 8, 1));
        Assert.True(file.Coordinator.TryMergeStats(0, 2, 9, 1, merged, out _));
        Assert.Equal(-7, merged.Mean[3], 6);
        file.Workers[0].PublishStats(0, 0, 10, 1, Stats(11, 0)); // step 10: step 8's slots
        Assert.False(file.Coordinator.TryMergeStats(0, 2, 8, 1, merged, out int failed));
        Assert.Equal(0, failed);
    }

    [Fact]
    public void The_coordinator_names_a_rank_whose_partials_are_missing_or_not_finite()
    {
        using var file = new ExchangeFile(2);
        foreach (int l in new[] { 0, 1, 2 })
        {
            int f = Spec.Hidden[l];
            file.Workers[0].PublishStats(l, 0, 3, 1, Stats(f, 0));
            file.Workers[0].PublishGradSums(l, 0, 3, 1, GradSums(f, 0));
            var bad = Stats(f, 1);
            if (l == 1) bad.M2[2] = double.NaN;
            file.Workers[1].PublishStats(l, 1, 3, 1, bad);
            if (l < 2) file.Workers[1].PublishGradSums(l, 1, 3, 1, GradSums(f, 1)); // rank 1 stopped before layer 2's backward… (published last)
        }
        Assert.Equal(SharedBatchNormExchange.SlotState.Complete, file.Coordinator.Check(0, 3, 1, out int layer));
        Assert.Equal(-1, layer);
        Assert.Equal(SharedBatchNormExchange.SlotState.NonFinite, file.Coordinator.Check(1, 3, 1, out layer));
        Assert.Equal(1, layer);
        Assert.Equal(SharedBatchNormExchange.SlotState.Missing, file.Coordinator.Check(0, 3, 2, out layer));
        Assert.Equal(0, layer);

        var other = new BatchNormStats(7);
        file.Workers[1].PublishStats(1, 1, 3, 1, Stats(7, 1)); // fixed, but layer 2's backward is still missing
        Assert.Equal(SharedBatchNormExchange.SlotState.Missing, file.Coordinator.Check(1, 3, 1, out layer));
        Assert.Equal(2, layer);
        Assert.True(file.Coordinator.TryMergeStats(1, 2, 3, 1, other, out _));
    }

    [Fact]
    public void Opening_names_what_differs_and_bad_arguments_are_refused()
    {
        using var file = new ExchangeFile(2);
        var wrongToken = (byte[])file.Coordinator.Token.Clone();
        wrongToken[0] ^= 1;
        Assert.Contains("another token", Assert.Throws<InvalidDataException>(() => SharedBatchNormExchange.Open(file.Path, wrongToken, P, 2)).Message);
        Assert.Contains("bytes", Assert.Throws<InvalidDataException>(() => SharedBatchNormExchange.Open(file.Path, file.Coordinator.Token, P, 3)).Message);
        var other = Parameters.Initialize(new NetworkSpec(13, [7, 11, 5], 3, Activation.Relu, BatchNormPlacement.Before), 5); // same size, other layout
        Assert.Contains("hidden layer 0 has 11", Assert.Throws<InvalidDataException>(() => SharedBatchNormExchange.Open(file.Path, file.Coordinator.Token, other, 2)).Message);
        Assert.Throws<FileNotFoundException>(() => SharedBatchNormExchange.Open(file.Path + ".gone", file.Coordinator.Token, P, 2));

        Assert.Throws<ArgumentOutOfRangeException>(() => file.Workers[0].PublishStats(0, 2, 1, 1, Stats(11, 0))); // rank 2 of 2
        Assert.Throws<ArgumentException>(() => file.Workers[0].PublishStats(0, 0, 1, 1, Stats(7, 0)));            // layer 0 has 11
        Assert.Throws<ArgumentOutOfRangeException>(() => file.Coordinator.TryMergeStats(0, 3, 1, 1, new BatchNormStats(11), out _));
        var noBn = Parameters.Initialize(new NetworkSpec(13, [11], 3, Activation.Relu, BatchNormPlacement.None), 5);
        using var dir = new TempDirectory();
        using var plain = SharedBatchNormExchange.Create(Path.Combine(dir.Path, "nobn.shm"), noBn, 1);
        Assert.Throws<ArgumentException>(() => plain.PublishStats(0, 0, 1, 1, Stats(11, 0))); // that layer has no BN
    }
}
