using BnCluster.Core.Kernels;
using BnCluster.Core.Model;
using BnCluster.Core.Tests.Data;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Collectives.Tests;

/// <summary>
/// The shared-memory file between the coordinator and a worker process: both ends are opened here in one process
/// (two mappings of one file behave as in two processes).
/// </summary>
public sealed class SharedTensorRegionTests
{
    private static readonly NetworkSpec Spec = new(13, [11, 7], 3, Activation.Relu, BatchNormPlacement.Before);
    // Big enough (a 200×300 weight) for the parallel passes to split.
    private static readonly NetworkSpec Wide = new(300, [200], 10, Activation.Relu, BatchNormPlacement.Before);

    private static Parameters Filled(NetworkSpec spec, float offset)
    {
        var p = Parameters.Initialize(spec, 5);
        foreach (var t in p.AllTensors)
            for (int i = 0; i < t.Values.Length; i++) t.Values[i] = offset + i * 0.5f;
        return p;
    }

    /// <summary>Both ends of one region file in a temporary folder: the coordinator's (creator) and the worker's.</summary>
    private sealed class RegionPair : IDisposable
    {
        private readonly TempDirectory _dir = new();

        public RegionPair(Parameters coordinatorSide, Parameters workerSide)
        {
            Path = System.IO.Path.Combine(_dir.Path, "region.shm");
            Coordinator = SharedTensorRegion.Create(Path, coordinatorSide);
            Worker = SharedTensorRegion.Open(Path, Coordinator.Token, workerSide);
        }

        public string Path { get; }
        public SharedTensorRegion Coordinator { get; }
        public SharedTensorRegion Worker { get; }

        public void Dispose()
        {
            Worker.Dispose();
            Coordinator.Dispose();
            _dir.Dispose();
        }
    }

    /// <summary>sum += g of one region's gradients stamped (step, attempt); <paramref name="nonFinite"/> when they hold NaN or ±∞.</summary>
    private static bool TryAdd(SharedTensorRegion region, long step, int attempt, IReadOnlyList<NamedTensor> sums, MatMul? threads, out bool nonFinite)
    {
        var flags = new bool[1];
        bool read = SharedTensorRegion.TryAddGradients([region], step, attempt, sums, overwrite: false, threads, flags, out _);
        nonFinite = flags[0];
        return read;
    }

    private static bool TryAdd(SharedTensorRegion region, long step, int attempt, Gradients sums) =>
        TryAdd(region, step, attempt, sums.Tensors, threads: null, out _);

    [Fact]
    public void Gradients_and_parameters_cross_between_the_two_mappings_and_survive_the_unlink()
    {
        var coordinatorSide = Filled(Wide, 1f);
        var workerSide = new Parameters(Wide);
        using var pair = new RegionPair(coordinatorSide, workerSide);
        var (coordinator, worker) = (pair.Coordinator, pair.Worker);
        coordinator.Unlink();
        Assert.False(File.Exists(pair.Path));

        using var threads = new MatMul(2); // W (200×300) is split over both threads
        coordinator.WriteParameters(4, coordinatorSide, threads);
        Assert.True(worker.TryReadParameters(4, workerSide));
        for (int i = 0; i < workerSide.AllTensors.Count; i++)
            Assert.Equal(coordinatorSide.AllTensors[i].Values, workerSide.AllTensors[i].Values);

        var gradients = new Gradients(workerSide);
        foreach (var t in gradients.Tensors) Array.Fill(t.Values, -2.5f);
        worker.WriteGradients(5, 2, gradients.Tensors);
        var sums = new Gradients(coordinatorSide);
        foreach (var t in sums.Tensors) Array.Fill(t.Values, 1f);
        Assert.True(TryAdd(coordinator, 5, 2, sums.Tensors, threads, out bool nonFinite));
        Assert.False(nonFinite);
        Assert.All(sums.Tensors, t => Assert.All(t.Values, v => Assert.Equal(1f + -2.5f, v)));

        gradients.DWOut[3] = float.NaN;
        worker.WriteGradients(6, 1, gradients.Tensors);
        Assert.True(TryAdd(coordinator, 6, 1, sums.Tensors, threads, out nonFinite));
        Assert.True(nonFinite);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void One_pass_sums_several_workers_files_in_order_bit_for_bit_and_names_the_file_that_fails(int threadCount)
    {
        using var dir = new TempDirectory();
        var p = Filled(Wide, 0f);
        var coordinatorSide = new List<SharedTensorRegion>();
        var workerSide = new List<SharedTensorRegion>();
        try
        {
            var rng = new Random(11);
            var written = new List<Gradients>();
            for (int w = 0; w < 3; w++)
            {
                string path = Path.Combine(dir.Path, $"w{w}.shm");
                coordinatorSide.Add(SharedTensorRegion.Create(path, p));
                workerSide.Add(SharedTensorRegion.Open(path, coordinatorSide[w].Token, p));
                var g = new Gradients(p);
                foreach (var t in g.Tensors)
                    for (int i = 0; i < t.Values.Length; i++) t.Values[i] = (float)(rng.NextDouble() - 0.5) * (w + 1);
                g.DWOut[0] = -0f; // 0 + −0 is +0: overwriting must give the same bits
                written.Add(g);
                workerSide[w].WriteGradients(8, 2, g.Tensors);
            }
            using var threads = new MatMul(threadCount);
            var sums = new Gradients(p);
            foreach (var t in sums.Tensors) Array.Fill(t.Values, float.NaN); // an earlier step's sums: never read
            var nonFinite = new bool[3];
            Assert.True(SharedTensorRegion.TryAddGradients(coordinatorSide, 8, 2, sums.Tensors, overwrite: true, threads, nonFinite, out int failed));
            Assert.Equal(-1, failed);
            Assert.Equal([false, false, false], nonFinite);
            for (int i = 0; i < sums.Tensors.Count; i++)
            {
                var expected = new float[sums.Tensors[i].Values.Length];
                foreach (var g in written)
                    for (int j = 0; j < expected.Length; j++) expected[j] += g.Tensors[i].Values[j]; // 0 + g₀ + g₁ + g₂
                Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), sums.Tensors[i].Values.Select(BitConverter.SingleToInt32Bits));
            }

            // Without overwrite the sums are added to; a NaN is reported for its file, a stale stamp names its file.
            written[1].DW[0][5] = float.NaN;
            workerSide[1].WriteGradients(9, 1, written[1].Tensors);
            workerSide[0].WriteGradients(9, 1, written[0].Tensors);
            Assert.True(SharedTensorRegion.TryAddGradients(coordinatorSide[..2], 9, 1, sums.Tensors, overwrite: false, threads, nonFinite, out failed));
            Assert.Equal([false, true], nonFinite[..2]);
            Assert.False(SharedTensorRegion.TryAddGradients(coordinatorSide, 9, 1, sums.Tensors, overwrite: false, threads, nonFinite, out failed));
            Assert.Equal(2, failed); // file 2 still holds step 8
            Assert.Throws<ArgumentOutOfRangeException>(() => SharedTensorRegion.TryAddGradients([], 9, 1, sums.Tensors, false, threads, new bool[1], out _));
        }
        finally
        {
            foreach (var r in coordinatorSide.Concat(workerSide)) r.Dispose();
        }
    }

    [Fact]
    public unsafe void Parameters_an_update_writes_into_the_region_are_readable_only_once_the_write_is_ended()
    {
        var p = Filled(Spec, 2f);
        var other = new Parameters(Spec);
        using var pair = new RegionPair(p, other);
        var (coordinator, worker) = (pair.Coordinator, pair.Worker);
        Assert.Equal(-1, coordinator.WrittenParametersVersion);
        Assert.Throws<InvalidOperationException>(() => (nint)coordinator.Trainable(0, p.Trainable[0].Values.Length)); // no write open

        coordinator.BeginWriteParameters(p);
        Assert.Throws<InvalidOperationException>(() => coordinator.BeginWriteParameters(p));
        Assert.Throws<ArgumentException>(() => (nint)coordinator.Trainable(0, p.Trainable[0].Values.Length + 1));
        for (int i = 0; i < p.Trainable.Count; i++)
            p.Trainable[i].Values.CopyTo(new Span<float>(coordinator.Trainable(i, p.Trainable[i].Values.Length), p.Trainable[i].Values.Length));
        Assert.False(worker.TryReadParameters(-1, other)); // being written: refused whatever the stamp
        Assert.False(worker.TryReadParameters(9, other));
        coordinator.EndWriteParameters(9, p); // also writes the running statistics
        Assert.Equal(9, coordinator.WrittenParametersVersion);
        Assert.True(worker.TryReadParameters(9, other));
        for (int i = 0; i < p.AllTensors.Count; i++) Assert.Equal(p.AllTensors[i].Values, other.AllTensors[i].Values);
        Assert.Throws<InvalidOperationException>(() => coordinator.EndWriteParameters(10, p));
    }

    [Fact]
    public void A_reader_asking_for_another_step_attempt_or_version_gets_false_and_nothing()
    {
        var p = Filled(Spec, 3f);
        var other = new Parameters(Spec);
        using var pair = new RegionPair(p, other);
        var (coordinator, worker) = (pair.Coordinator, pair.Worker);

        Assert.False(worker.TryReadParameters(0, other)); // nothing written yet
        Assert.False(TryAdd(coordinator, 1, 1, new Gradients(p)));
        coordinator.WriteParameters(7, p);
        Assert.False(worker.TryReadParameters(6, other));
        worker.WriteGradients(3, 1, new Gradients(other).Tensors);
        var untouched = new Gradients(p);
        Assert.False(TryAdd(coordinator, 3, 2, untouched));
        Assert.False(TryAdd(coordinator, 4, 1, untouched));
        Assert.All(untouched.Tensors, t => Assert.All(t.Values, v => Assert.Equal(0f, v)));
        Assert.True(TryAdd(coordinator, 3, 1, untouched));
    }

    [Fact]
    public void Opening_refuses_another_token_another_network_and_a_file_that_is_no_region_naming_why()
    {
        using var dir = new TempDirectory();
        string path = Path.Combine(dir.Path, "region.shm");
        var p = new Parameters(Spec);
        using var coordinator = SharedTensorRegion.Create(path, p);

        var token = coordinator.Token.ToArray();
        token[0] ^= 1;
        Assert.Contains("another token", Assert.Throws<InvalidDataException>(() => SharedTensorRegion.Open(path, token, p)).Message);

        var otherNetwork = new Parameters(Spec with { Hidden = [11, 8] });
        Assert.Contains("bytes", Assert.Throws<InvalidDataException>(() => SharedTensorRegion.Open(path, coordinator.Token, otherNetwork)).Message);

        string junk = dir.Write("junk.shm", new byte[SharedTensorRegion.CapacityFor(p)]);
        Assert.Contains("magic", Assert.Throws<InvalidDataException>(() => SharedTensorRegion.Open(junk, coordinator.Token, p)).Message);

        Assert.Throws<FileNotFoundException>(() => SharedTensorRegion.Open(Path.Combine(dir.Path, "absent.shm"), coordinator.Token, p));
        Assert.Throws<IOException>(() => SharedTensorRegion.Create(path, p)); // never overwrites a file
    }

    [Fact]
    public async Task A_reader_racing_the_writer_never_accepts_a_torn_copy()
    {
        // The writer stamps version v with every value = v; whatever the reader accepts must be all one version.
        // Every 16th version the writer waits until the reader has tried it, so accepted reads happen.
        var written = new Parameters(Wide);
        var read = new Parameters(Wide);
        using var pair = new RegionPair(written, read);
        var (coordinator, worker) = (pair.Coordinator, pair.Worker);
        const int Versions = 400;
        long published = -1, tried = -1;
        int accepted = 0;
        bool readerDone = false;
        var writer = Task.Run(() =>
        {
            for (int v = 0; v < Versions; v++)
            {
                foreach (var t in written.AllTensors) Array.Fill(t.Values, v);
                coordinator.WriteParameters(v, written);
                Volatile.Write(ref published, v);
                if (v % 16 == 0) SpinWait.SpinUntil(() => Volatile.Read(ref tried) >= v || Volatile.Read(ref readerDone), TimeSpan.FromSeconds(30));
            }
        });
        var reader = Task.Run(() =>
        {
            try { Read(); }
            finally { Volatile.Write(ref readerDone, true); }
        });
        await Task.WhenAll(writer, reader).WaitAsync(TimeSpan.FromMinutes(1)); // rethrows a torn read
        Assert.True(accepted > 0);

        void Read()
        {
            while (Volatile.Read(ref published) < Versions - 1)
            {
                long v = Volatile.Read(ref published);
                if (v < 0) continue;
                if (worker.TryReadParameters(v, read))
                {
                    accepted++;
                    foreach (var t in read.AllTensors)
                        for (int i = 0; i < t.Values.Length; i++)
                            if (t.Values[i] != v) throw new InvalidOperationException($"version {v} accepted with value {t.Values[i]}");
                }
                Volatile.Write(ref tried, v);
            }
        }
    }
}
