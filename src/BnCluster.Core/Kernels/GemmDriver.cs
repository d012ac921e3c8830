using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace BnCluster.Core.Kernels;

/// <summary>The micro-kernel of one ISA plus the cache blocking tuned around it.</summary>
internal readonly unsafe struct KernelShape
{
    public readonly delegate*<int, int*, float*, float*, float*, int, int, int, bool, float*, void> Kernel;

    /// <summary>The kernel over steps sorted by which half of the A panel is not zero (<see cref="MicroKernelAvx512.RunHalves"/>),
    /// for sparse products; null where the path has none (those skip whole zero steps only).</summary>
    public readonly delegate*<int*, int*, int, float*, float*, float*, int, int, int, bool, float*, void> HalvesKernel;
    public readonly int MR, NR, MC, KC;

    public KernelShape(delegate*<int, int*, float*, float*, float*, int, int, int, bool, float*, void> kernel, int mr, int nr, int mc, int kc,
        delegate*<int*, int*, int, float*, float*, float*, int, int, int, bool, float*, void> halvesKernel = null)
    {
        Kernel = kernel; MR = mr; NR = nr; MC = mc; KC = kc; HalvesKernel = halvesKernel;
    }

    public static KernelShape For(KernelPath path) => path switch
    {
        // Loop order (see GemmJob.Tiles): the kc×NR B micro-panel (256×32×4 B = 32 KB) is reused by every
        // A micro-panel of the MC block and stays in L1/L2; the 8×kc A micro-panels (8 KB each) stream
        // from the packed A block in L2.
        // KC = 256: measured on the EPYC here, KC = 128 lost ~10% on 1024³ (more C read-modify-write
        //     passes), KC = 384 was within noise of 256.
        // MC = 128: the packed A block (128×256×4 B = 128 KB) stays in the 1 MB L2 per core.
        KernelPath.Avx512 => new(&MicroKernelAvx512.Run, MicroKernelAvx512.MR, MicroKernelAvx512.NR, 128, 256, &MicroKernelAvx512.RunHalves),
        // Same reasoning with the 4×24 ymm tile (B micro-panel 256×24×4 B = 24 KB). On the AVX2 EPYC of 2026-12-07,
        // KC = 160 was 3–8% slower; MC = 64 or 256 within noise of 128 (in-process A/B, interleaved rounds).
        KernelPath.Avx2 => new(&MicroKernelAvx2.Run, MicroKernelAvx2.MR, MicroKernelAvx2.NR, 128, 256),
        _ => new(&MicroKernelScalar.Run, MicroKernelScalar.MR, MicroKernelScalar.NR, 64, 256),
    };

    /// <summary>A narrower tile for products of few columns (the 10-class output layer), where the path has one
    /// (AVX-512: 8×16 beside 8×32), else null.</summary>
    public static KernelShape? NarrowFor(KernelPath path) => path == KernelPath.Avx512
        ? new(&MicroKernelAvx512.RunNarrow, MicroKernelAvx512.MR, MicroKernelAvx512.NarrowNR, 128, 256)
        : null;
}

/// <summary>Per-thread packing buffers (64-byte aligned native memory), grown only when a larger block is needed.</summary>
internal sealed unsafe class PackBuffers : IDisposable
{
    public float* PackA, PackB, Scratch, Tile;

    /// <summary>Per packed A panel of the current block (3·kc slots and 3 counts each): its depth steps that are not
    /// all zero and how many there are, or with a halves kernel its three lists (<see cref="Packing.NonZeroHalfSteps"/>).</summary>
    public int* Steps, StepCounts;

    private nuint _capA, _capB, _capSteps, _capPanels;

    public PackBuffers(in KernelShape shape)
    {
        Scratch = (float*)NativeMemory.AlignedAlloc((nuint)(shape.MR * shape.NR * sizeof(float)), 64);
        Tile = (float*)NativeMemory.AlignedAlloc((nuint)(shape.MR * shape.NR * sizeof(float)), 64);
    }

    /// <summary>Room for an A block of <paramref name="panelsA"/> panels × <paramref name="kc"/> steps × MR values
    /// and its step lists, and a B block of <paramref name="floatsB"/> values.</summary>
    public void Ensure(nuint panelsA, nuint kc, nuint mr, nuint floatsB)
    {
        nuint floatsA = panelsA * kc * mr;
        if (floatsA > _capA)
        {
            NativeMemory.AlignedFree(PackA);
            PackA = (float*)NativeMemory.AlignedAlloc(floatsA * sizeof(float), 64);
            _capA = floatsA;
        }
        if (3 * panelsA * kc > _capSteps)
        {
            NativeMemory.AlignedFree(Steps);
            Steps = (int*)NativeMemory.AlignedAlloc(3 * panelsA * kc * sizeof(int), 64);
            _capSteps = 3 * panelsA * kc;
        }
        if (panelsA > _capPanels)
        {
            NativeMemory.AlignedFree(StepCounts);
            StepCounts = (int*)NativeMemory.AlignedAlloc(3 * panelsA * sizeof(int), 64);
            _capPanels = panelsA;
        }
        if (floatsB > _capB)
        {
            NativeMemory.AlignedFree(PackB);
            PackB = (float*)NativeMemory.AlignedAlloc(floatsB * sizeof(float), 64);
            _capB = floatsB;
        }
    }

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    /// <summary>Frees the native memory if the owning MatMul was never disposed.</summary>
    ~PackBuffers() => Free();

    private void Free()
    {
        NativeMemory.AlignedFree(PackA); PackA = null; _capA = 0;
        NativeMemory.AlignedFree(Steps); Steps = null; _capSteps = 0;
        NativeMemory.AlignedFree(StepCounts); StepCounts = null; _capPanels = 0;
        NativeMemory.AlignedFree(PackB); PackB = null; _capB = 0;
        NativeMemory.AlignedFree(Scratch); Scratch = null;
        NativeMemory.AlignedFree(Tile); Tile = null;
    }
}

/// <summary>
/// One product C[m×n] (row stride n) = (accumulate ? C : 0) + A·B with A, B as strided views, on <see cref="Parts"/>
/// threads. C is cut along the dimension the parts split (<see cref="SplitRows"/>) into chunks: runs of
/// <see cref="RowChunkPanels"/> row panels, or of <see cref="ColumnChunkTiles"/> column tiles. For each depth block every
/// part packs the whole of the operand the chunks share (B when the parts split rows, A when they split columns), then
/// claims chunks, those of its own share first, in order, then the other parts' from their far end, until none is left;
/// the parts meet before the next depth block, whose chunks add into C. A part slowed down (a vCPU of this shared host
/// taken away for milliseconds, which stalled the whole step at every product under fixed shares) so does fewer
/// chunks; in a quiet moment each part does its own share, as with fixed shares. Every element of C is computed by one
/// chunk, over the same depth steps in the same order, whichever part claims it: the result does not depend on the
/// thread count or on who ran what. Reused for every call: fields are overwritten, nothing is allocated.
/// </summary>
internal sealed unsafe class GemmJob : IParallelJob
{
    private readonly KernelShape _wide;
    private readonly KernelShape? _narrow;
    private KernelShape _shape; // this call's: _narrow for a product of at most its NR columns, else _wide
    private readonly PackBuffers[] _buffers;

    public StridedMatrix A, B;
    public float* C;
    public int M, N, K;
    public bool Accumulate;

    /// <summary>Scan each packed A panel for all-zero depth steps and skip them (A is sparse).</summary>
    public bool SkipZeroSteps;

    /// <summary>Store C transposed: the logical C[m×n] lands as Cᵀ[n×m] (row stride m).</summary>
    public bool TransposeC;
    public int Parts;
    public bool SplitRows;

    /// <summary>
    /// Row panels per chunk when the parts split rows: 8 (32 rows of the AVX2 kernel, 64 of the AVX-512 one). The first
    /// layer's dW, whose rows are pixels, was dealt to two threads in runs of 8 panels (731 µs, against 782 in one block
    /// each: the image's top is background more often); runs of 1 or 2 made it slower (910–926 µs): both threads then
    /// read every cache line of A and wrote lines of Cᵀ that the other wrote too.
    /// </summary>
    internal const int RowChunkPanels = 8;

    /// <summary>
    /// Column tiles per chunk when the parts split columns: 1 (24 columns of the AVX2 kernel, 32 of the AVX-512 one). Each
    /// part packs B for its own share in one pass, as with fixed shares, so a chunk costs only its tiles. Chunks of 2
    /// tiles cut the first layer's forward (22 tiles on AVX2) into 11, which two parts share 6/5 at best: 9% slower
    /// than 11/11 on a quiet host.
    /// </summary>
    internal const int ColumnChunkTiles = 1;

    private int _units, _chunkUnits, _chunks, _depth, _depthBlocks, _ownColumns;
    private readonly ChunkClaims _claims = new(); // [depth block × chunk]
    private int _barrierLeft, _barrierGeneration;

    public GemmJob(KernelPath path, int maxParts)
    {
        _wide = _shape = KernelShape.For(path);
        _narrow = KernelShape.NarrowFor(path);
        _buffers = new PackBuffers[maxParts];
        // (The scratch tiles hold the wide tile, the larger one.)
        for (int i = 0; i < maxParts; i++) _buffers[i] = new PackBuffers(_wide);
    }

    /// <summary>Chooses the split and the chunks, clears the claims and grows every part's buffers; runs on the caller
    /// before dispatch so workers never allocate.</summary>
    public void Prepare(int parts)
    {
        Parts = parts;
        _shape = _narrow is { } narrow && N <= narrow.NR ? narrow : _wide;
        // Each part packs the whole of the operand it does not split: splitting rows repacks B (k×n)
        // in every part, splitting columns repacks A (m×k). So split the larger of m and n, unless it
        // has too few micro-tiles to give every part one.
        int rowTiles = CeilDiv(M, _shape.MR), colTiles = CeilDiv(N, _shape.NR);
        SplitRows = M >= N ? rowTiles >= parts || rowTiles >= colTiles : colTiles < parts && rowTiles > colTiles;
        _units = SplitRows ? rowTiles : colTiles;
        // One part runs it all in one chunk, or in row chunks of MC rows: its B micro-panels then serve as many A panels
        // each as the blocking allows.
        _chunkUnits = parts == 1 ? (SplitRows ? _shape.MC / _shape.MR : colTiles) : SplitRows ? RowChunkPanels : ColumnChunkTiles;
        _chunks = CeilDiv(_units, _chunkUnits);
        _depth = DepthBlock(K);
        _depthBlocks = CeilDiv(K, _depth);
        _claims.Reset(_depthBlocks * _chunks, parts);
        _barrierLeft = parts;
        // A: a chunk's panels, or all of them; B: all of it, or a chunk's tiles; for one depth block.
        int panelsA = SplitRows ? Math.Min(_chunkUnits, rowTiles) : rowTiles;
        // (Splitting columns: the largest share, then one chunk.)
        _ownColumns = CeilDiv(_chunks, parts) * _chunkUnits * _shape.NR;
        int colsB = SplitRows ? colTiles * _shape.NR : _ownColumns + Math.Min(_chunkUnits, colTiles) * _shape.NR;
        for (int i = 0; i < parts; i++) _buffers[i].Ensure((nuint)panelsA, (nuint)_depth, (nuint)_shape.MR, (nuint)colsB * (nuint)_depth);
    }

    public void Execute(int part)
    {
        PackBuffers buf = _buffers[part];
        ref readonly KernelShape s = ref _shape;
        int own0 = ChunkClaims.ShareStart(part, Parts, _chunks), own1 = ChunkClaims.ShareStart(part + 1, Parts, _chunks);
        int ownJ0 = Math.Min(N, own0 * _chunkUnits * s.NR), ownJ1 = Math.Min(N, own1 * _chunkUnits * s.NR);
        for (int block = 0; block < _depthBlocks; block++)
        {
            int pc = block * _depth, kc = Math.Min(_depth, K - pc);
            // The shared operand of this depth block, whole; splitting columns, also B of the part's own share in one
            // pass, as with fixed shares (its chunks then cost only their tiles; a chunk taken from another part packs
            // its own B).
            if (SplitRows) Packing.PackB(B, pc, kc, 0, N, s.NR, buf.PackB);
            else
            {
                PackPanels(0, CeilDiv(M, s.MR), pc, kc, buf);
                if (ownJ0 < ownJ1) Packing.PackB(B, pc, kc, ownJ0, ownJ1 - ownJ0, s.NR, buf.PackB);
            }
            foreach (int c in ChunkClaims.Order(part, Parts, _chunks, ForeignChunksFirst))
                if (_claims.TryClaim(block * _chunks + c)) RunChunk(c, pc, kc, buf, c >= own0 && c < own1 ? ownJ0 : -1);
            if (block + 1 < _depthBlocks) Barrier();
        }
    }

    /// <summary>Every part claims the other parts' chunks before its own (tests: the path a slowed part's chunks take).</summary>
    internal bool ForeignChunksFirst;

    /// <summary>Waits until every part has finished the current depth block (they all run at once, one per thread), so
    /// that the next block's chunks add into finished sums, whoever computed them.</summary>
    private void Barrier()
    {
        int generation = Volatile.Read(ref _barrierGeneration);
        if (Interlocked.Decrement(ref _barrierLeft) == 0)
        {
            _barrierLeft = Parts; // (before the release below: no part can reach the next barrier sooner)
            Volatile.Write(ref _barrierGeneration, generation + 1);
            return;
        }
        var spin = new SpinWait();
        while (Volatile.Read(ref _barrierGeneration) == generation) spin.SpinOnce(sleep1Threshold: -1);
    }

    /// <summary>
    /// One chunk of one depth block [pc, pc + kc): its row panels against all of B (packed whole by the part), or all the
    /// row panels (packed by the part) against its column tiles: in the part's own share, packed from column
    /// <paramref name="ownJ0"/> on; another part's (ownJ0 &lt; 0), packed here after the own share's.
    /// </summary>
    private void RunChunk(int chunk, int pc, int kc, PackBuffers buf, int ownJ0)
    {
        ref readonly KernelShape s = ref _shape;
        int first = chunk * _chunkUnits, count = Math.Min(_chunkUnits, _units - first);
        if (SplitRows)
        {
            PackPanels(first, count, pc, kc, buf);
            Tiles(first, count, 0, N, buf.PackB, pc, kc, buf);
        }
        else
        {
            int j0 = first * s.NR, j1 = Math.Min(N, (first + count) * s.NR);
            float* packedB;
            if (ownJ0 >= 0) packedB = buf.PackB + (long)(j0 - ownJ0) * kc;
            else
            {
                packedB = buf.PackB + (long)_ownColumns * kc;
                Packing.PackB(B, pc, kc, j0, j1 - j0, s.NR, packedB);
            }
            Tiles(0, CeilDiv(M, s.MR), j0, j1, packedB, pc, kc, buf);
        }
    }

    /// <summary>
    /// Packs row panels [first, first + count) of A for depth block [pc, pc + kc) into the part's buffer (panel t at
    /// t·MR·kc) and, with <see cref="SkipZeroSteps"/>, lists each one's depth steps that are not all zero
    /// (<see cref="Packing.NonZeroSteps"/>: a zero term adds nothing, and inputs such as images have whole runs of zero
    /// pixels), or on a path with a halves kernel sorts them by which half of the panel is not zero
    /// (<see cref="Packing.NonZeroHalfSteps"/>).
    /// </summary>
    private void PackPanels(int first, int count, int pc, int kc, PackBuffers buf)
    {
        ref readonly KernelShape s = ref _shape;
        int row = first * s.MR;
        Packing.PackA(A, row, Math.Min(count * s.MR, M - row), pc, kc, s.MR, buf.PackA);
        bool halves = SkipZeroSteps && s.HalvesKernel != null;
        for (int t = 0; t < count; t++)
        {
            float* aPanel = buf.PackA + (long)t * s.MR * kc;
            int* counts = buf.StepCounts + 3 * t, steps = buf.Steps + 3L * t * kc;
            if (halves) Packing.NonZeroHalfSteps(aPanel, kc, steps, kc, counts);
            else counts[0] = SkipZeroSteps ? Packing.NonZeroSteps(aPanel, kc, s.MR, steps) : kc;
        }
    }

    /// <summary>
    /// The micro-tiles of row panels [first, first + count) (packed from panel <paramref name="first"/> on in the part's
    /// buffer) × columns [j0, j1) (B packed from column j0 on at <paramref name="packedB"/>), in blocks of MC rows so that
    /// each kc×NR B micro-panel is reused by every A panel of the block from L1; the first depth block overwrites C
    /// unless accumulating, later ones add. With <see cref="TransposeC"/>, each tile is computed into a scratch tile and
    /// stored transposed (C[j, i] at C + j·M + i).
    /// </summary>
    private void Tiles(int first, int count, int j0, int j1, float* packedB, int pc, int kc, PackBuffers buf)
    {
        ref readonly KernelShape s = ref _shape;
        bool halves = SkipZeroSteps && s.HalvesKernel != null, add = Accumulate || pc > 0;
        int blockPanels = s.MC / s.MR;
        for (int t0 = 0; t0 < count; t0 += blockPanels)
        {
            int bp = Math.Min(blockPanels, count - t0);
            for (int jr = j0; jr < j1; jr += s.NR)
            {
                int cols = Math.Min(s.NR, j1 - jr);
                float* bPanel = packedB + (long)(jr - j0) * kc;
                for (int t = t0; t < t0 + bp; t++)
                {
                    int row = (first + t) * s.MR, rows = Math.Min(s.MR, M - row);
                    float* aPanel = buf.PackA + (long)t * s.MR * kc;
                    int* counts = buf.StepCounts + 3 * t, steps = buf.Steps + 3L * t * kc;
                    if (TransposeC)
                    {
                        RunTile(s, halves, counts, steps, kc, aPanel, bPanel, buf.Tile, s.NR, s.MR, s.NR, false, buf.Scratch);
                        StoreTransposed(buf.Tile, s.MR, s.NR, C + (long)jr * M + row, M, rows, cols, add);
                    }
                    else
                    {
                        RunTile(s, halves, counts, steps, kc, aPanel, bPanel, C + (long)row * N + jr, N, rows, cols, add, buf.Scratch);
                    }
                }
            }
        }
    }

    /// <summary>One tile over a panel's listed steps (see <see cref="PackPanels"/>); a panel without a zero step, or half
    /// step, runs the kernel's dense loop.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RunTile(in KernelShape s, bool halves, int* counts, int* steps, int kc, float* a, float* b, float* c, int ldc,
        int rows, int cols, bool add, float* scratch)
    {
        if (counts[0] == kc) s.Kernel(kc, null, a, b, c, ldc, rows, cols, add, scratch);
        else if (halves) s.HalvesKernel(counts, steps, kc, a, b, c, ldc, rows, cols, add, scratch);
        else s.Kernel(counts[0], steps, a, b, c, ldc, rows, cols, add, scratch);
    }

    /// <summary>dst[j·ldd + i] (+)= tile[i·nr + j] for i &lt; rows, j &lt; cols: a computed mr×nr tile stored
    /// transposed; full 8-row tiles through 8×8 register transposes, full 4-row ones through 4×8 ones.</summary>
    private static void StoreTransposed(float* tile, int mr, int nr, float* dst, int ldd, int rows, int cols, bool add)
    {
        int j = 0;
        if (mr == 8 && rows == 8 && Avx.IsSupported)
            for (; j + 8 <= cols; j += 8) Packing.Transpose8x8(tile + j, nr, dst + (long)j * ldd, ldd, add);
        if (mr == 4 && rows == 4 && Avx.IsSupported)
        {
            for (; j + 8 <= cols; j += 8)
            {
                Packing.Transpose4x8(tile + j, nr, out var c01, out var c23, out var c45, out var c67);
                float* d = dst + (long)j * ldd;
                StoreColumnPair(c01, d, ldd, add);
                StoreColumnPair(c23, d + 2L * ldd, ldd, add);
                StoreColumnPair(c45, d + 4L * ldd, ldd, add);
                StoreColumnPair(c67, d + 6L * ldd, ldd, add);
            }
        }
        for (; j < cols; j++)
        {
            float* d = dst + (long)j * ldd;
            if (add) for (int i = 0; i < rows; i++) d[i] += tile[i * nr + j];
            else for (int i = 0; i < rows; i++) d[i] = tile[i * nr + j];
        }
    }

    /// <summary>Two transposed columns of a 4-row tile (<see cref="Packing.Transpose4x8"/>): the lower half to
    /// <paramref name="dst"/>, the upper to dst + ldd.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreColumnPair(Vector256<float> pair, float* dst, int ldd, bool add)
    {
        Vector128<float> lo = pair.GetLower(), hi = pair.GetUpper();
        if (add)
        {
            lo += Vector128.Load(dst);
            hi += Vector128.Load(dst + ldd);
        }
        lo.Store(dst);
        hi.Store(dst + ldd);
    }

    /// <summary>
    /// The depth of the blocks K is cut into: as few blocks as KC allows with 1/8 of slack, all of one depth. Each block
    /// adds into C once more (a read-modify-write of every tile), and K = 784 cut at 256 left a last block of 16
    /// steps that paid that pass and the kernel calls for almost no work: 3 blocks of 262 instead.
    /// </summary>
    private int DepthBlock(int k) => CeilDiv(k, CeilDiv(k, _shape.KC + _shape.KC / 8));

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;

    public void Dispose()
    {
        foreach (PackBuffers b in _buffers) b.Dispose();
    }
}
