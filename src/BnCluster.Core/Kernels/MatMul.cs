namespace BnCluster.Core.Kernels;

/// <summary>
/// The three matrix products of a dense layer, row-major float32, with the weight stored
/// [out][in] like nn.Linear.weight:
///   forward        Z[n×out]   = A[n×in] · W[out×in]ᵀ      → MultiplyNT
///   weight grad    dW[out×in] = dZ[n×out]ᵀ · A[n×in]      → MultiplyTN
///   input grad     dA[n×in]   = dZ[n×out] · W[out×in]     → MultiplyNN
///   first layer's weight grad, as (A[n×in]ᵀ · dZ[n×out])ᵀ    → MultiplyTNStoreTransposed
/// With <c>sparseA</c>, a product skips the depth steps where a packed panel of A is all zero, and on AVX-512 those
/// where half of the panel (4 of its 8 rows) is: a zero term adds nothing. The packed A should be the sparse operand:
/// the data (image backgrounds make whole runs of zero features) or a ReLU output in the gather's row order.
/// Without it A is taken as dense. Gradients almost never have a depth step zero in 8 or 4 rows at once, and
/// scanning their panels for one costs about 0.8 ns per step, in every thread that packs them.
/// One instance per trainer or worker: it owns its threads and packing buffers.
/// Implementation: packed, cache-blocked GEMM (Packing, GemmDriver) around a register-blocked
/// micro-kernel per ISA (AVX-512, AVX2+FMA, scalar); transposition is handled while packing.
/// <para>NOT thread-safe: one product at a time per instance (the instance's pool and buffers are
/// shared by all its calls). The calls allocate nothing in steady state; buffers grow only when a
/// larger shape arrives. Dispose stops the worker threads and frees the native buffers.</para>
/// </summary>
public sealed unsafe class MatMul : IDisposable
{
    /// <summary>Below this many multiply-adds the product runs on the caller alone: waking workers
    /// costs more than it saves.</summary>
    internal const long DefaultParallelThreshold = 64 * 1024;

    /// <summary>Below this many elements a <see cref="ParallelFor{T}"/> body runs on the caller alone (measured
    /// with the step benchmark: waking the worker costs a few microseconds).</summary>
    internal const long DefaultRangeThreshold = 32 * 1024;

    private readonly GemmThreadPool? _pool;
    private readonly GemmJob _job;
    private readonly RangeJob _range = new();
    private readonly long _parallelThreshold;
    private readonly long _rangeThreshold;
    private bool _disposed;

    public MatMul(int threads = 1) : this(threads, KernelPaths.Best) { }

    /// <summary>Chooses the micro-kernel explicitly (tests run every path on one machine) and the
    /// size from which products are split across threads (tests force splitting tiny shapes with 0).</summary>
    internal MatMul(int threads, KernelPath path, long parallelThreshold = DefaultParallelThreshold, long rangeThreshold = DefaultRangeThreshold)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "threads must be at least 1");
        if (!KernelPaths.IsSupported(path))
            throw new PlatformNotSupportedException($"kernel path {path} is not supported by this CPU");
        Threads = threads;
        Path = path;
        _parallelThreshold = parallelThreshold;
        _rangeThreshold = rangeThreshold;
        _job = new GemmJob(path, threads);
        // threads = 1 starts no thread at all.
        if (threads > 1) _pool = new GemmThreadPool(threads - 1);
    }

    public int Threads { get; }

    /// <summary>Tests: every thread takes the other threads' chunks of a product before its own (see <see cref="GemmJob"/>),
    /// so that the chunks a slowed thread leaves to the others are computed there.</summary>
    internal bool ForeignChunksFirst { set => _job.ForeignChunksFirst = value; }

    internal KernelPath Path { get; }

    /// <summary>The micro-kernel's instruction set, for benchmark reports ("AVX-512", "AVX2+FMA", "scalar").</summary>
    public string KernelName => Path switch { KernelPath.Avx512 => "AVX-512", KernelPath.Avx2 => "AVX2+FMA", _ => "scalar" };

    /// <summary>Dedicated worker threads started by this instance (Threads − 1; none for 1).</summary>
    internal int WorkerThreadCount => _pool?.MaxParts - 1 ?? 0;

    /// <summary>C[m×n] = A[m×k] · B[k×n]; adds into C when <paramref name="accumulate"/>.</summary>
    public void MultiplyNN(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int n, int k, bool accumulate = false,
        bool sparseA = false)
    {
        Check(a.Length, b.Length, c.Length, m, n, k, nameof(MultiplyNN));
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
            Run(new StridedMatrix(pa, k, 1), new StridedMatrix(pb, n, 1), pc, m, n, k, accumulate, sparseA);
    }

    /// <summary>C[m×n] = A[m×k] · B[n×k]ᵀ; adds into C when <paramref name="accumulate"/>.</summary>
    public void MultiplyNT(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int n, int k, bool accumulate = false,
        bool sparseA = false)
    {
        Check(a.Length, b.Length, c.Length, m, n, k, nameof(MultiplyNT));
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
            Run(new StridedMatrix(pa, k, 1), new StridedMatrix(pb, 1, k), pc, m, n, k, accumulate, sparseA);
    }

    /// <summary>C[m×n] = A[k×m]ᵀ · B[k×n]; adds into C when <paramref name="accumulate"/>.</summary>
    public void MultiplyTN(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int n, int k, bool accumulate = false,
        bool sparseA = false)
    {
        Check(a.Length, b.Length, c.Length, m, n, k, nameof(MultiplyTN));
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
            Run(new StridedMatrix(pa, 1, m), new StridedMatrix(pb, n, 1), pc, m, n, k, accumulate, sparseA);
    }

    /// <summary>
    /// C[n×m] = (A[k×m]ᵀ · B[k×n])ᵀ = B[k×n]ᵀ · A[k×m]; adds into C when <paramref name="accumulate"/>. The same
    /// result as <see cref="MultiplyTN"/>(b, a, c, n, m, k), term for term in the same order, but with A in the
    /// packed-A role, whose all-zero depth steps a product with <paramref name="sparseA"/> skips: the weight gradient of
    /// the first layer, dW = dZᵀ·X, computed as (Xᵀ·dZ)ᵀ, skips every group of 4 input features (a panel of the AVX2 and
    /// scalar kernels, half a panel of the AVX-512 one) that are zero together in a sample.
    /// </summary>
    public void MultiplyTNStoreTransposed(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int n, int k, bool accumulate = false,
        bool sparseA = false)
    {
        Check(a.Length, b.Length, c.Length, m, n, k, nameof(MultiplyTNStoreTransposed));
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
            Run(new StridedMatrix(pa, 1, m), new StridedMatrix(pb, n, 1), pc, m, n, k, accumulate, sparseA, transposeC: true);
    }

    private void Run(StridedMatrix a, StridedMatrix b, float* c, int m, int n, int k, bool accumulate, bool sparseA, bool transposeC = false)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            // Empty sum: C = 0, or unchanged when accumulating.
            if (!accumulate) new Span<float>(c, checked(m * n)).Clear();
            return;
        }
        _job.A = a; _job.B = b; _job.C = c;
        _job.M = m; _job.N = n; _job.K = k;
        _job.Accumulate = accumulate;
        _job.TransposeC = transposeC;
        _job.SkipZeroSteps = sparseA;
        long work = (long)m * n * k;
        int parts = _pool is null || work < _parallelThreshold ? 1 : Threads;
        _job.Prepare(parts);
        // The operands are pinned by the caller's `fixed` until Run returns, and Run returns
        // only after every part has finished.
        if (parts == 1) _job.Execute(0);
        else _pool!.Run(_job, parts);
    }

    /// <summary>
    /// Runs <paramref name="body"/>(ref state, start, end) over [0, <paramref name="count"/>) split into contiguous
    /// shares (inner boundaries at <paramref name="phase"/> + multiples of <paramref name="align"/>, at least
    /// <paramref name="minPerPart"/> each) on this instance's
    /// threads, or in one call on the caller when <paramref name="work"/> (elements touched) is below the range
    /// threshold or there is one thread. Allocates nothing: <paramref name="state"/> is an unmanaged struct the
    /// caller keeps on its stack, <paramref name="body"/> a static function. The body must write disjoint data per
    /// range and keep every reduction inside one range, so the result is the same for any split. Each share is run in
    /// chunks the threads claim (<see cref="RangeJob"/>), of <paramref name="minPerChunk"/> indices at least: a body that
    /// walks every row for its range of columns pays that walk per chunk.
    /// Same rule as the products: one call at a time per instance. Public for the shared-memory files of
    /// BnCluster.Collectives, which copy and sum the step's tensors on the trainer's threads.
    /// </summary>
    public void ParallelFor<T>(int count, long work, ref T state, delegate*<ref T, int, int, void> body, int align = 1, int minPerPart = 1,
        int phase = 0, int minPerChunk = 1)
        where T : unmanaged
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (count <= 0) return;
        int parts = _pool is null || work < _rangeThreshold ? 1 : Math.Min(Threads, Math.Max(1, count / Math.Max(1, minPerPart)));
        if (parts == 1)
        {
            body(ref state, 0, count);
            return;
        }
        fixed (T* s = &state)
        {
            _range.Body = (delegate*<void*, int, int, void>)body;
            _range.State = s;
            _range.Count = count;
            _range.Align = Math.Max(1, align);
            _range.Phase = phase >= 0 && phase < _range.Align ? phase : 0;
            _range.Start(parts, minPerChunk);
            try { _pool!.Run(_range, parts); }
            finally { _range.State = null; }
        }
    }

    /// <summary>
    /// <see cref="ParallelFor{T}"/> with a preallocated context object instead of a struct (for bodies that need managed
    /// references, e.g. a dataset); <paramref name="body"/>(context, start, end) is a static function.
    /// </summary>
    internal void ParallelFor<TContext>(int count, long work, TContext context, delegate*<TContext, int, int, void> body, int align = 1, int minPerPart = 1)
        where TContext : class
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (count <= 0) return;
        int parts = _pool is null || work < _rangeThreshold ? 1 : Math.Min(Threads, Math.Max(1, count / Math.Max(1, minPerPart)));
        if (parts == 1)
        {
            body(context, 0, count);
            return;
        }
        _range.ContextBody = (delegate*<object, int, int, void>)body;
        _range.Context = context;
        _range.Count = count;
        _range.Align = Math.Max(1, align);
        _range.Phase = 0;
        _range.Start(parts, minPerChunk: 1);
        try { _pool!.Run(_range, parts); }
        finally { _range.Context = null; }
    }

    private static void Check(int aLength, int bLength, int cLength, int m, int n, int k, string op)
    {
        if (m < 0) throw new ArgumentOutOfRangeException(nameof(m), m, $"{op}: m must be ≥ 0");
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n), n, $"{op}: n must be ≥ 0");
        if (k < 0) throw new ArgumentOutOfRangeException(nameof(k), k, $"{op}: k must be ≥ 0");
        if (aLength < (long)m * k) throw new ArgumentException($"{op}: a has {aLength} elements, needs m·k = {m}·{k} = {(long)m * k}", "a");
        if (bLength < (long)k * n) throw new ArgumentException($"{op}: b has {bLength} elements, needs k·n = {k}·{n} = {(long)k * n}", "b");
        if (cLength < (long)m * n) throw new ArgumentException($"{op}: c has {cLength} elements, needs m·n = {m}·{n} = {(long)m * n}", "c");
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _pool?.Dispose();
        _job.Dispose();
    }
}
