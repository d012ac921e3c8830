using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using BnCluster.Core.Kernels;
using Xunit;

namespace BnCluster.Core.Tests.Kernels;

/// <summary>The products; TNT is TN stored transposed (<see cref="MatMul.MultiplyTNStoreTransposed"/>), C[n×m].</summary>
public enum Product { NN, NT, TN, TNT }

/// <summary>
/// The three products against a float64 reference, on every kernel path this CPU supports,
/// with 1, 2 and 3 threads (3 &gt; cores), accumulate on and off, and shapes that leave partial
/// micro-tiles and cross the KC / MC / NC block boundaries.
/// </summary>
public sealed class MatMulTests
{
    private static readonly int[] SmallSizes = { 1, 2, 3, 7, 17, 31, 33, 64, 65 };

    // Larger shapes: 513 crosses KC = 256 twice and MC = 128 four times with a remainder;
    // n = 1100 crosses NC = 1024; 256×512×784 is the first layer at batch 256.
    private static readonly (int M, int N, int K)[] LargeShapes =
    {
        (513, 65, 33), (33, 513, 65), (65, 33, 513), (17, 31, 513), (513, 7, 513),
        (3, 1100, 5), (130, 1100, 300), (256, 512, 784),
        // Tiny and odd shards against the layer widths (one row, the 10-wide output layer).
        (1, 512, 784), (3, 784, 512), (17, 10, 256), (64, 256, 512), (256, 10, 256),
        // Exactly the narrow AVX-512 tile's 16 columns (full tiles stored straight into C), with a partial row tile.
        (44, 16, 300), (256, 16, 40),
    };

    public static IEnumerable<object[]> Products() => Enum.GetValues<Product>().Select(p => new object[] { p });

    /// <summary>Every supported path × threads {1,2,3}, plus (for small shapes, which stay below the
    /// parallel threshold) one instance per path that splits even tiny products across 3 threads.
    /// Large shapes run the slow scalar path with 1 and 3 threads only, to keep the suite fast.</summary>
    private static List<MatMul> AllInstances(bool large)
    {
        var list = new List<MatMul>();
        foreach (KernelPath path in Enum.GetValues<KernelPath>())
        {
            if (!KernelPaths.IsSupported(path)) continue;
            int[] threadCounts = large && path == KernelPath.Scalar ? new[] { 1, 3 } : new[] { 1, 2, 3 };
            foreach (int threads in threadCounts)
                list.Add(new MatMul(threads, path));
            if (!large) list.Add(new MatMul(3, path, parallelThreshold: 0));
        }
        return list;
    }

    [Fact]
    public void DefaultIsTheFastestPathThisCpuRuns()
    {
        // The other tests cover every path the CPU runs (AllInstances); on a CPU without AVX-512 (some machines
        // of this project's kind) the AVX-512 kernel is compiled but not exercised, so say which paths ran.
        var expected = Avx512F.IsSupported && Vector512.IsHardwareAccelerated ? KernelPath.Avx512
            : Avx2.IsSupported && Fma.IsSupported ? KernelPath.Avx2 : KernelPath.Scalar;
        using var mm = new MatMul(1);
        Assert.Equal(expected, mm.Path);
        Assert.Equal(expected switch { KernelPath.Avx512 => "AVX-512", KernelPath.Avx2 => "AVX2+FMA", _ => "scalar" }, mm.KernelName);
        using var scalar = new MatMul(1, KernelPath.Scalar);
        Assert.Equal("scalar", scalar.KernelName); // the report names the kernel that ran, not the CPU's best
        Assert.True(KernelPaths.IsSupported(KernelPath.Scalar));
        if (!KernelPaths.IsSupported(KernelPath.Avx512))
            Assert.Throws<PlatformNotSupportedException>(() => new MatMul(1, KernelPath.Avx512));
    }

    [Theory]
    [MemberData(nameof(Products))]
    public void SmallShapes_AllCombinations(Product product)
    {
        var instances = AllInstances(large: false);
        try
        {
            var rng = new Random(42 + (int)product);
            foreach (int m in SmallSizes)
                foreach (int n in SmallSizes)
                    foreach (int k in SmallSizes)
                        CheckShape(instances, product, m, n, k, rng);
        }
        finally { instances.ForEach(i => i.Dispose()); }
    }

    [Theory]
    [MemberData(nameof(Products))]
    public void LargeShapes_CrossBlockBoundaries(Product product)
    {
        var instances = AllInstances(large: true);
        try
        {
            var rng = new Random(7 + (int)product);
            foreach (var (m, n, k) in LargeShapes) CheckShape(instances, product, m, n, k, rng);
        }
        finally { instances.ForEach(i => i.Dispose()); }
    }

    /// <summary>A with zeros as images have them: whole depth steps zero across an 8-row (or 16-row) panel,
    /// single zeros, all-zero rows and an all-zero A. With sparseA the packed kernels skip all-zero steps, so the
    /// results must still match the dense reference on every path, panel remainder and thread count (and without it,
    /// where the zeros are multiplied).</summary>
    [Theory]
    [MemberData(nameof(Products))]
    public void SparseA_ZeroStepsSkipped(Product product)
    {
        var instances = AllInstances(large: true);
        try
        {
            var rng = new Random(11 + (int)product);
            foreach (var (m, n, k) in new[] { (37, 19, 300), (256, 64, 784), (9, 33, 17), (130, 1100, 40) })
                foreach (double zeroFraction in new[] { 0.3, 0.9, 1.0 })
                    foreach (bool sparseA in new[] { true, false })
                        CheckShape(instances, product, m, n, k, rng, a => Sparsify(a, product, m, k, zeroFraction, rng), sparseA);
        }
        finally { instances.ForEach(i => i.Dispose()); }
    }

    /// <summary>
    /// Whether a product skips is observable: a NaN in B meets only zeros of A, at a depth step that is zero in every
    /// row. Skipped (sparseA), C is A·B over the other steps; multiplied (dense), 0·NaN makes all of C NaN.
    /// </summary>
    [Theory]
    [MemberData(nameof(Products))]
    public void SparseA_SkipsOnlyWhenAsked(Product product)
    {
        const int m = 19, n = 37, k = 21, zeroStep = 5;
        var instances = AllInstances(large: true);
        try
        {
            var (a, b, exact, magnitude) = NaNAtZeroStep(product, m, n, k, zeroStep, _ => true, new Random(17 + (int)product));
            var c = new float[m * n];
            foreach (MatMul mm in instances)
            {
                Multiply(mm, product, a, b, c, m, n, k, accumulate: false, sparseA: true);
                for (int i = 0; i < c.Length; i++)
                    Assert.True(Math.Abs(c[i] - exact[i]) <= 1e-5 * magnitude[i] + 1e-30, $"{product} path={mm.Path} threads={mm.Threads}: C[{i}] = {c[i]}, expected {exact[i]}");
                Multiply(mm, product, a, b, c, m, n, k, accumulate: false, sparseA: false);
                Assert.All(c, v => Assert.True(float.IsNaN(v), $"{product} path={mm.Path} threads={mm.Threads}: dense product gave {v}, not NaN"));
            }
        }
        finally { instances.ForEach(i => i.Dispose()); }
    }

    /// <summary>
    /// The AVX-512 kernel skips half panels too. A NaN in B sits at a depth step that is zero in rows 0–3 and 12–15 of
    /// A only (of 18). A row whose skipping unit is zero there skips the NaN and is right; every other row meets it.
    /// The units are each 4-row half of the 8-row AVX-512 panels, the 4-row AVX2 panels and the 4-row scalar ones. So
    /// on AVX-512 rows 0–3 skip although rows 4–7 of their panel do not, and on every path rows 0–3 and 12–15 skip.
    /// </summary>
    [Theory]
    [MemberData(nameof(Products))]
    public void SparseA_SkipsZeroHalfStepsOnAvx512(Product product)
    {
        const int m = 18, n = 37, k = 21, zeroStep = 9;
        var instances = AllInstances(large: true);
        try
        {
            static bool Skippable(int i) => i < 4 || i >= 12;
            var (a, b, exact, magnitude) = NaNAtZeroStep(product, m, n, k, zeroStep, Skippable, new Random(23 + (int)product));
            var c = new float[m * n];
            foreach (MatMul mm in instances)
            {
                Multiply(mm, product, a, b, c, m, n, k, accumulate: false, sparseA: true);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++)
                    {
                        // C is m×n, or its transpose n×m for the product that stores it transposed.
                        int at = product == Product.TNT ? j * m + i : i * n + j;
                        string where = $"{product} path={mm.Path} threads={mm.Threads}: C[{i},{j}] = {c[at]}";
                        int unit = mm.Path == KernelPath.Avx2 ? MicroKernelAvx2.MR : 4, first = i / unit * unit;
                        if (Enumerable.Range(first, Math.Min(m, first + unit) - first).All(Skippable))
                            Assert.True(Math.Abs(c[at] - exact[at]) <= 1e-5 * magnitude[at] + 1e-30, $"{where}, expected {exact[at]}");
                        else Assert.True(float.IsNaN(c[at]), $"{where}, expected NaN");
                    }
            }
        }
        finally { instances.ForEach(i => i.Dispose()); }
    }

    /// <summary>
    /// A product on several threads cuts C into chunks the threads claim (GemmJob). Every element of C is still one
    /// chunk's, over the same steps in the same order, so the bits equal one thread's: on every path, with and without
    /// accumulate, for row counts that end inside a chunk or a panel, and with A's first rows far sparser than the rest
    /// (an image's background pixels, for the first layer's dW).
    /// </summary>
    [Theory]
    [MemberData(nameof(Products))]
    public void SparseA_SplitByRows_GivesOneThreadsBits(Product product)
    {
        var rng = new Random(29 + (int)product);
        bool transposedA = product is Product.TN or Product.TNT;
        AssertThreadsGiveOneThreadsBits(product, [(784, 64, 96), (397, 24, 50), (203, 40, 90), (130, 17, 300), (64, 48, 33)], [true],
            foreignChunksFirst: false, rng, (a, m, k) =>
            {
                for (int i = 0; i < m; i++)
                    for (int p = 0; p < k; p++)
                        if (rng.NextDouble() < (i < m / 3 ? 0.85 : 0.3)) a[transposedA ? p * m + i : i * k + p] = 0;
            });
    }

    /// <summary>
    /// The chunks a thread takes from another's share (what a thread the host slows down leaves to the others) give the
    /// same bits as its own: every thread claims the others' chunks first, on products split by rows and by columns,
    /// over one and several depth blocks (k past KC: the threads meet between blocks), dense and sparse.
    /// </summary>
    [Theory]
    [MemberData(nameof(Products))]
    public void ChunksTakenFromAnotherThread_GiveOneThreadsBits(Product product)
    {
        var rng = new Random(37 + (int)product);
        AssertThreadsGiveOneThreadsBits(product, [(300, 70, 600), (70, 300, 600), (256, 512, 40), (129, 50, 257)], [false, true],
            foreignChunksFirst: true, rng, (a, _, _) =>
            {
                for (int i = 0; i < a.Length; i++)
                    if (rng.NextDouble() < 0.5) a[i] = 0;
            });
    }

    /// <summary>The product on 2 and 3 threads (split at any size) against 1 thread, bit for bit, on every path, with
    /// and without accumulate, for A given zeros by <paramref name="zeroA"/>(a, m, k).</summary>
    private static void AssertThreadsGiveOneThreadsBits(Product product, (int M, int N, int K)[] shapes, bool[] sparseFlags,
        bool foreignChunksFirst, Random rng, Action<float[], int, int> zeroA)
    {
        foreach (KernelPath path in Enum.GetValues<KernelPath>().Where(KernelPaths.IsSupported))
        {
            using var single = new MatMul(1, path);
            using var two = new MatMul(2, path, parallelThreshold: 0) { ForeignChunksFirst = foreignChunksFirst };
            using var three = new MatMul(3, path, parallelThreshold: 0) { ForeignChunksFirst = foreignChunksFirst };
            foreach (var (m, n, k) in shapes)
            {
                float[] a = RandomArray(rng, m * k), b = RandomArray(rng, k * n), c0 = RandomArray(rng, m * n);
                zeroA(a, m, k);
                foreach (bool sparseA in sparseFlags)
                    foreach (bool accumulate in new[] { false, true })
                    {
                        var expected = (float[])c0.Clone();
                        Multiply(single, product, a, b, expected, m, n, k, accumulate, sparseA);
                        foreach (MatMul mm in new[] { two, three })
                        {
                            var c = (float[])c0.Clone();
                            Multiply(mm, product, a, b, c, m, n, k, accumulate, sparseA);
                            for (int i = 0; i < c.Length; i++)
                                if (BitConverter.SingleToInt32Bits(c[i]) != BitConverter.SingleToInt32Bits(expected[i]))
                                    Assert.Fail($"{product} {m}×{n}×{k} path={path} threads={mm.Threads} sparseA={sparseA} accumulate={accumulate}: C[{i}] = {c[i]}, one thread gave {expected[i]}");
                        }
                    }
            }
        }
    }

    /// <summary>Random A[m×k] and B[k×n] (as the product reads them) with A(i, <paramref name="zeroStep"/>) = 0 for the rows
    /// <paramref name="zeroRow"/> names and B(<paramref name="zeroStep"/>, j) = NaN, and the float64 reference of A·B
    /// over the other steps (the NaN left out).</summary>
    private static (float[] A, float[] B, double[] Exact, double[] Magnitude) NaNAtZeroStep(Product product, int m, int n, int k, int zeroStep,
        Func<int, bool> zeroRow, Random rng)
    {
        float[] a = RandomArray(rng, m * k), b = RandomArray(rng, k * n);
        bool transposedA = product is Product.TN or Product.TNT;
        for (int i = 0; i < m; i++)
            if (zeroRow(i)) a[transposedA ? zeroStep * m + i : i * k + zeroStep] = 0;
        var bWithoutNaN = (float[])b.Clone();
        for (int j = 0; j < n; j++) b[product == Product.NT ? j * k + zeroStep : zeroStep * n + j] = float.NaN;
        Reference(product, a, bWithoutNaN, m, n, k, out double[] exact, out double[] magnitude);
        return (a, b, exact, magnitude);
    }

    /// <summary>Zeroes A(i, p) at depth steps chosen with probability <paramref name="fraction"/> for all rows of a
    /// group of 8 (so packed panels see all-zero steps), at a third of the others for rows 0–3 or 4–7 of the group only
    /// (half-zero steps, see <see cref="Packing.NonZeroHalfSteps"/>), plus scattered zeros.</summary>
    private static void Sparsify(float[] a, Product product, int m, int k, double fraction, Random rng)
    {
        bool transposedA = product is Product.TN or Product.TNT;
        for (int group = 0; group < m; group += 8)
            for (int p = 0; p < k; p++)
            {
                bool zero = rng.NextDouble() < fraction;
                int half = zero || rng.NextDouble() >= 1.0 / 3 ? -1 : rng.Next(2);
                for (int i = group; i < Math.Min(m, group + 8); i++)
                    if (zero || (i - group) / 4 == half || rng.NextDouble() < 0.1) a[transposedA ? p * m + i : i * k + p] = 0;
            }
    }

    private static void CheckShape(List<MatMul> instances, Product product, int m, int n, int k, Random rng, Action<float[]>? shapeA = null,
        bool sparseA = false)
    {
        float[] a = RandomArray(rng, m * k), b = RandomArray(rng, k * n), c0 = RandomArray(rng, m * n);
        shapeA?.Invoke(a);
        Reference(product, a, b, m, n, k, out double[] exact, out double[] magnitude);
        var c = new float[m * n];
        foreach (MatMul mm in instances)
        {
            foreach (bool accumulate in new[] { false, true })
            {
                // Without accumulate C starts as NaN: any read of the old C would poison the result.
                if (accumulate) c0.CopyTo(c, 0); else Array.Fill(c, float.NaN);
                Multiply(mm, product, a, b, c, m, n, k, accumulate, sparseA);
                for (int i = 0; i < m * n; i++)
                {
                    double expected = exact[i] + (accumulate ? c0[i] : 0);
                    // float32 rounding of a k-term dot product, relative to Σ|a||b| (+ |c0| when adding).
                    double tolerance = 1e-5 * (magnitude[i] + (accumulate ? Math.Abs(c0[i]) : 0)) + 1e-30;
                    if (!(Math.Abs(c[i] - expected) <= tolerance))
                        Assert.Fail($"{product} {m}×{n}×{k} path={mm.Path} threads={mm.Threads} accumulate={accumulate} sparseA={sparseA}: " +
                                    $"C[{i}] = {c[i]}, expected {expected} ± {tolerance}");
                }
            }
        }
    }

    internal static void Multiply(MatMul mm, Product product, float[] a, float[] b, float[] c, int m, int n, int k, bool accumulate, bool sparseA = false)
    {
        switch (product)
        {
            case Product.NN: mm.MultiplyNN(a, b, c, m, n, k, accumulate, sparseA); break;
            case Product.NT: mm.MultiplyNT(a, b, c, m, n, k, accumulate, sparseA); break;
            case Product.TN: mm.MultiplyTN(a, b, c, m, n, k, accumulate, sparseA); break;
            default: mm.MultiplyTNStoreTransposed(a, b, c, m, n, k, accumulate, sparseA); break;
        }
    }

    /// <summary>exact = A·B in float64 and magnitude = |A|·|B|, with A, B read per the product's layout
    /// (and stored transposed for TNT).</summary>
    private static void Reference(Product product, float[] a, float[] b, int m, int n, int k, out double[] exact, out double[] magnitude)
    {
        exact = new double[m * n];
        magnitude = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0, abs = 0;
                for (int p = 0; p < k; p++)
                {
                    double x = product is Product.TN or Product.TNT ? a[p * m + i] : a[i * k + p];
                    double y = product == Product.NT ? b[j * k + p] : b[p * n + j];
                    s += x * y;
                    abs += Math.Abs(x * y);
                }
                int at = product == Product.TNT ? j * m + i : i * n + j;
                exact[at] = s;
                magnitude[at] = abs;
            }
    }

    internal static float[] RandomArray(Random rng, int length)
    {
        var x = new float[length];
        for (int i = 0; i < length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }

    [Fact]
    public void KnownSmallProduct()
    {
        // [1 2 3; 4 5 6] · [7 8; 9 10; 11 12] = [58 64; 139 154]
        float[] a = { 1, 2, 3, 4, 5, 6 }, b = { 7, 8, 9, 10, 11, 12 };
        float[] bT = { 7, 9, 11, 8, 10, 12 }, aT = { 1, 4, 2, 5, 3, 6 };
        var c = new float[4];
        using var mm = new MatMul(2);
        mm.MultiplyNN(a, b, c, 2, 2, 3);
        Assert.Equal(new float[] { 58, 64, 139, 154 }, c);
        mm.MultiplyNT(a, bT, c, 2, 2, 3);
        Assert.Equal(new float[] { 58, 64, 139, 154 }, c);
        mm.MultiplyTN(aT, b, c, 2, 2, 3, accumulate: true);
        Assert.Equal(new float[] { 116, 128, 278, 308 }, c);
    }

    [Fact]
    public void EmptyDepth_ClearsOrKeepsC()
    {
        using var mm = new MatMul(2);
        var c = new float[] { 1, 2, 3, 4, 5, 6 };
        mm.MultiplyNN(Array.Empty<float>(), Array.Empty<float>(), c, 2, 3, 0, accumulate: true);
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6 }, c);
        mm.MultiplyNT(Array.Empty<float>(), Array.Empty<float>(), c, 2, 3, 0);
        Assert.All(c, x => Assert.Equal(0f, x));
    }

    [Fact]
    public void LargerBuffersThanNeeded_TouchOnlyThePrefixOfC()
    {
        using var mm = new MatMul(2);
        var c = new float[5 * 4 + 3];
        Array.Fill(c, 9f);
        mm.MultiplyNN(new float[5 * 2], new float[2 * 4], c, 5, 4, 2);
        Assert.All(c.Take(20), x => Assert.Equal(0f, x));
        Assert.All(c.Skip(20), x => Assert.Equal(9f, x));
    }

    [Fact]
    public void BadArguments_NameWhatIsWrong()
    {
        using var mm = new MatMul(1);
        var e = Assert.Throws<ArgumentException>(() => mm.MultiplyNN(new float[5], new float[6], new float[6], 2, 3, 3));
        Assert.Equal("a", e.ParamName);
        Assert.Contains("MultiplyNN", e.Message);
        e = Assert.Throws<ArgumentException>(() => mm.MultiplyNT(new float[6], new float[5], new float[6], 2, 3, 3));
        Assert.Equal("b", e.ParamName);
        e = Assert.Throws<ArgumentException>(() => mm.MultiplyTN(new float[6], new float[9], new float[5], 2, 3, 3));
        Assert.Equal("c", e.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => mm.MultiplyNN(new float[6], new float[6], new float[6], -1, 3, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MatMul(0));
    }

    [Fact]
    public void ThreadsAndDispose()
    {
        using (var single = new MatMul(1)) Assert.Equal(0, single.WorkerThreadCount);
        var mm = new MatMul(3);
        Assert.Equal(2, mm.WorkerThreadCount);
        Assert.Equal(3, mm.Threads);
        mm.Dispose();
        mm.Dispose(); // idempotent
        Assert.Throws<ObjectDisposedException>(() => mm.MultiplyNN(new float[1], new float[1], new float[1], 1, 1, 1));
    }
}

/// <summary>Runs alone: process-wide allocation counts must not see other tests' allocations.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AllocationSensitiveCollection
{
    public const string Name = "Kernels allocation-sensitive";
}

/// <summary>Steady-state products allocate nothing, on the caller or on the pool threads.</summary>
[Collection(AllocationSensitiveCollection.Name)]
public sealed class MatMulAllocationTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void HundredCalls_AllocateZeroBytes(int threads)
    {
        const int m = 128, n = 256, k = 200; // above the parallel threshold, so the pool is used
        var rng = new Random(3);
        float[] a = MatMulTests.RandomArray(rng, m * k), b = MatMulTests.RandomArray(rng, k * n);
        float[] aT = MatMulTests.RandomArray(rng, k * m), bT = MatMulTests.RandomArray(rng, n * k);
        var c = new float[m * n];
        using var mm = new MatMul(threads);
        void Step()
        {
            mm.MultiplyNT(a, bT, c, m, n, k);
            mm.MultiplyTN(aT, b, c, m, n, k, accumulate: true);
            mm.MultiplyTNStoreTransposed(aT, b, c, m, n, k, accumulate: true);
            mm.MultiplyNN(a, b, c, m, n, k);
            mm.MultiplyNN(a, b, c, 3, n, k); // smaller shape after a larger one: no regrowth
        }
        for (int i = 0; i < 5; i++) Step(); // warm up: JIT, buffer growth, lazily created wait handles

        // Process-wide counts also see the test runner's own threads (result reporting etc.), so
        // measure up to 3 windows and keep the quietest: a real per-call allocation (≥ 400 objects)
        // would show in every window.
        // The caller's own count can also see a one-off runtime allocation (suspected, not verified: tiered compilation promoting a method
        // that crossed its call count inside the window: seen ~1 run in 5, with 1 thread as well), so it too keeps
        // its quietest window; a real per-call allocation would show in all of them.
        long leastProcessWide = long.MaxValue, leastCaller = long.MaxValue;
        for (int attempt = 0; attempt < 3 && (leastProcessWide >= 1024 || leastCaller != 0); attempt++)
        {
            long callerBefore = GC.GetAllocatedBytesForCurrentThread();
            long totalBefore = GC.GetTotalAllocatedBytes(precise: true);
            for (int i = 0; i < 100; i++) Step();
            long totalAfter = GC.GetTotalAllocatedBytes(precise: true);
            long callerAfter = GC.GetAllocatedBytesForCurrentThread();
            leastCaller = Math.Min(leastCaller, callerAfter - callerBefore);
            leastProcessWide = Math.Min(leastProcessWide, totalAfter - totalBefore);
        }
        Assert.Equal(0, leastCaller);
        Assert.True(leastProcessWide < 1024, $"{leastProcessWide} bytes allocated process-wide in 400 products");
    }
}
