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
    public readonly int MR, NR, MC, KC, NC;

    public KernelShape(delegate*<int, int*, float*, float*, float*, int, int, int, bool, float*, void> kernel, int mr, int nr, int mc, int kc, int nc,
        delegate*<int*, int*, int, float*, float*, float*, int, int, int, bool, float*, void> halvesKernel = null)
    {
        Kernel = kernel; MR = mr; NR = nr; MC = mc; KC = kc; NC = nc; HalvesKernel = halvesKernel;
    }

    public static KernelShape For(KernelPath path) => path switch
    {
        // Loop order (see Blocked): the kc×NR B micro-panel (256×32×4 B = 32 KB) is reused by every
        // A micro-panel of the MC block and stays in L1/L2; the 8×kc A micro-panels (8 KB each) stream
        // from the packed A block in L2.
        // KC = 256: measured on the EPYC here, KC = 128 lost ~10% on 1024³ (more C read-modify-write
        //     passes), KC = 384 was within noise of 256.
        // MC = 128: the packed A block (128×256×4 B = 128 KB) stays in the 1 MB L2 per core.
        // NC = 1024: the packed B block (256×1024×4 B = 1 MB) lives in L2/L3 and is reused for every MC block;
        //     the layer widths here (≤ 784) fit one NC block, so B is packed once per depth block.
        KernelPath.Avx512 => new(&MicroKernelAvx512.Run, MicroKernelAvx512.MR, MicroKernelAvx512.NR, 128, 256, 1024, &MicroKernelAvx512.RunHalves),
        // Same reasoning with the 4×24 ymm tile (B micro-panel 256×24×4 B = 24 KB); NC a multiple of 24.
        KernelPath.Avx2 => new(&MicroKernelAvx2.Run, MicroKernelAvx2.MR, MicroKernelAvx2.NR, 128, 256, 1008),
        _ => new(&MicroKernelScalar.Run, MicroKernelScalar.MR, MicroKernelScalar.NR, 64, 256, 512),
    };

    /// <summary>A narrower tile for products of few columns (the 10-class output layer), where the path has one
    /// (AVX-512: 8×16 beside 8×32; the AVX2 tile is 16 wide already), else null.</summary>
    public static KernelShape? NarrowFor(KernelPath path) => path == KernelPath.Avx512
        ? new(&MicroKernelAvx512.RunNarrow, MicroKernelAvx512.MR, MicroKernelAvx512.NarrowNR, 128, 256, 1024)
        : null;
}

/// <summary>Per-thread packing buffers (64-byte aligned native memory), grown only when a larger block is needed.</summary>
internal sealed unsafe class PackBuffers : IDisposable
{
    public float* PackA, PackB, Scratch, Tile;

    /// <summary>Per packed A panel of the current block (3·kc slots and 3 counts each): its depth steps that are not
    /// all zero and how many there are, or with a halves kernel its three lists (<see cref="Packing.NonZeroHalfSteps"/>).</summary>
    public int* Steps, StepCounts;

    /// <summary>The first row of C of each packed A panel of the current block (the panel map worked out once per block,
    /// not per tile: its division cost ~3% of a step).</summary>
    public int* PanelRows;
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
            NativeMemory.AlignedFree(PanelRows);
            StepCounts = (int*)NativeMemory.AlignedAlloc(3 * panelsA * sizeof(int), 64);
            PanelRows = (int*)NativeMemory.AlignedAlloc(panelsA * sizeof(int), 64);
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
        NativeMemory.AlignedFree(PanelRows); PanelRows = null;
        NativeMemory.AlignedFree(PackB); PackB = null; _capB = 0;
        NativeMemory.AlignedFree(Scratch); Scratch = null;
        NativeMemory.AlignedFree(Tile); Tile = null;
    }
}

/// <summary>
/// One product C[m×n] (row stride n) = (accumulate ? C : 0) + A·B with A, B as strided views,
/// split into <see cref="Parts"/> static shares of C (row blocks or column blocks, aligned to the
/// micro-tile; a sparse product's rows dealt in runs, see <see cref="InterleaveRows"/>). Each share is an
/// independent blocked GEMM with its own packing buffers.
/// Reused for every call: fields are overwritten, nothing is allocated.
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
    /// Split by rows, the row panels are dealt to the parts in runs of <see cref="DealtPanels"/>, in turn (part p takes
    /// runs p, p + Parts, …), instead of one block each. Set for sparse products: their work is the panels' nonzero
    /// steps, which differ between regions of A. In the first layer's dW, A's rows are pixels, and the image's top rows
    /// are background more often than its middle: one block each left one of two parts 10% more work (746 against
    /// 678 µs). Dealt in runs of 8 panels, that product took 731 µs instead of 782 (medians of 80 interleaved rounds on
    /// Fashion-MNIST batches, 2 threads). Runs of 1 or 2 panels made it slower (910–926 against 794 µs): both parts then
    /// read every cache line of A and write lines of Cᵀ that the other part writes too.
    /// </summary>
    public bool InterleaveRows;
    private const int DealtPanels = 8;

    public GemmJob(KernelPath path, int maxParts)
    {
        _wide = _shape = KernelShape.For(path);
        _narrow = KernelShape.NarrowFor(path);
        _buffers = new PackBuffers[maxParts];
        // (The scratch tiles hold the wide tile, the larger one.)
        for (int i = 0; i < maxParts; i++) _buffers[i] = new PackBuffers(_wide);
    }

    /// <summary>Share [start, end) of <paramref name="extent"/> rows/columns for part <paramref name="part"/>, in whole tiles.</summary>
    private void ShareOf(int part, int extent, int tile, out int start, out int end)
    {
        int tiles = (extent + tile - 1) / tile;
        start = Math.Min(extent, (int)((long)tiles * part / Parts) * tile);
        end = Math.Min(extent, (int)((long)tiles * (part + 1) / Parts) * tile);
    }

    /// <summary>Chooses the split and grows every part's buffers; runs on the caller before dispatch
    /// so workers never allocate.</summary>
    public void Prepare(int parts)
    {
        Parts = parts;
        _shape = _narrow is { } narrow && N <= narrow.NR ? narrow : _wide;
        // Each part packs the whole of the operand it does not split: splitting rows repacks B (k×n)
        // in every part, splitting columns repacks A (m×k). So split the larger of m and n, unless it
        // has too few micro-tiles to give every part one.
        int rowTiles = CeilDiv(M, _shape.MR), colTiles = CeilDiv(N, _shape.NR);
        SplitRows = M >= N ? rowTiles >= parts || rowTiles >= colTiles : colTiles < parts && rowTiles > colTiles;
        // (Dealt only when every part gets two runs or more: fewer, and the parts' shares would be uneven by the run.)
        InterleaveRows = SplitRows && SkipZeroSteps && parts > 1 && rowTiles >= 2 * parts * DealtPanels;
        int rowsPerPart = !SplitRows ? M : InterleaveRows ? DealtCount(0, rowTiles) * _shape.MR : CeilDiv(rowTiles, parts) * _shape.MR;
        int colsPerPart = SplitRows ? N : CeilDiv(CeilDiv(N, _shape.NR), parts) * _shape.NR;
        nuint kc = (nuint)DepthBlock(K);
        nuint mc = (nuint)RoundUp(Math.Min(_shape.MC, rowsPerPart), _shape.MR);
        nuint nc = (nuint)RoundUp(Math.Min(_shape.NC, colsPerPart), _shape.NR);
        for (int i = 0; i < parts; i++) _buffers[i].Ensure(mc / (nuint)_shape.MR, kc, (nuint)_shape.MR, nc * kc);
    }

    public void Execute(int part)
    {
        int mr = _shape.MR, panels = CeilDiv(M, mr);
        if (InterleaveRows)
        {
            // Runs part, part + Parts, …: panel t of this part is DealtPanels·part + (t / DealtPanels)·DealtPanels·Parts + t % DealtPanels.
            int count = DealtCount(part, panels);
            if (count > 0 && N > 0) Blocked(new PanelMap(DealtPanels * part, DealtPanels, DealtPanels * Parts), count, 0, N, _buffers[part]);
            return;
        }
        int i0 = 0, i1 = M, j0 = 0, j1 = N;
        if (SplitRows) ShareOf(part, M, mr, out i0, out i1);
        else ShareOf(part, N, _shape.NR, out j0, out j1);
        if (i0 < i1 && j0 < j1) Blocked(new PanelMap(i0 / mr, 1, 1), CeilDiv(i1 - i0, mr), j0, j1, _buffers[part]);
    }

    /// <summary>How many of <paramref name="panels"/> row panels dealt in runs (<see cref="InterleaveRows"/>) are part
    /// <paramref name="part"/>'s (part 0 has the most).</summary>
    private int DealtCount(int part, int panels)
    {
        int count = 0;
        for (int first = DealtPanels * part; first < panels; first += DealtPanels * Parts) count += Math.Min(DealtPanels, panels - first);
        return count;
    }

    /// <summary>
    /// Goto/BLIS loop nest over the columns [j0, j1) of <paramref name="count"/> row panels of C (of MR rows each), the
    /// panels <paramref name="map"/> names. With <see cref="SkipZeroSteps"/>, each packed A panel runs only its depth
    /// steps that are not all zero (<see cref="Packing.NonZeroSteps"/>): a zero term adds nothing, and inputs such as
    /// images have whole runs of zero pixels. Where the path has a halves kernel, each half of a panel
    /// skips the steps where it is zero (<see cref="Packing.NonZeroHalfSteps"/>). With <see cref="TransposeC"/>, each
    /// tile is computed into a scratch tile and stored transposed (C[j, i] at C + j·M + i).
    /// </summary>
    private void Blocked(PanelMap map, int count, int j0, int j1, PackBuffers buf)
    {
        ref readonly KernelShape s = ref _shape;
        bool halves = SkipZeroSteps && s.HalvesKernel != null;
        int blockPanels = s.MC / s.MR;
        for (int jc = j0; jc < j1; jc += s.NC)
        {
            int nc = Math.Min(s.NC, j1 - jc);
            int depthBlock = DepthBlock(K);
            for (int pc = 0; pc < K; pc += depthBlock)
            {
                int kc = Math.Min(depthBlock, K - pc);
                // The first depth block overwrites C unless accumulating; later ones add.
                bool add = Accumulate || pc > 0;
                Packing.PackB(B, pc, kc, jc, nc, s.NR, buf.PackB);
                for (int t0 = 0; t0 < count; t0 += blockPanels)
                {
                    int bp = Math.Min(blockPanels, count - t0);
                    for (int t = 0; t < bp; t++) // (panel by panel, as PackA itself goes, wherever the map puts them)
                    {
                        int row = buf.PanelRows[t] = map.Panel(t0 + t) * s.MR;
                        Packing.PackA(A, row, Math.Min(s.MR, M - row), pc, kc, s.MR, buf.PackA + (long)t * s.MR * kc);
                    }
                    for (int panel = 0; panel < bp; panel++)
                    {
                        float* aPanel = buf.PackA + (long)panel * s.MR * kc;
                        int* counts = buf.StepCounts + 3 * panel, steps = buf.Steps + 3L * panel * kc;
                        if (halves) Packing.NonZeroHalfSteps(aPanel, kc, steps, kc, counts);
                        else counts[0] = SkipZeroSteps ? Packing.NonZeroSteps(aPanel, kc, s.MR, steps) : kc;
                    }
                    for (int jr = 0; jr < nc; jr += s.NR)
                    {
                        int cols = Math.Min(s.NR, nc - jr);
                        float* bPanel = buf.PackB + (long)jr * kc;
                        for (int panel = 0; panel < bp; panel++)
                        {
                            int row = buf.PanelRows[panel];
                            int rows = Math.Min(s.MR, M - row);
                            float* aPanel = buf.PackA + (long)panel * s.MR * kc;
                            int* counts = buf.StepCounts + 3 * panel, steps = buf.Steps + 3L * panel * kc;
                            if (TransposeC)
                            {
                                RunTile(s, halves, counts, steps, kc, aPanel, bPanel, buf.Tile, s.NR, s.MR, s.NR, false, buf.Scratch);
                                StoreTransposed(buf.Tile, s.MR, s.NR, C + (long)(jc + jr) * M + row, M, rows, cols, add);
                            }
                            else
                            {
                                RunTile(s, halves, counts, steps, kc, aPanel, bPanel, C + (long)row * N + jc + jr, N, rows, cols, add, buf.Scratch);
                            }
                        }
                    }
                }
            }
        }
    }

    /// <summary>
    /// Which of C's row panels a part's t-th panel is: runs of <see cref="Run"/> consecutive panels, <see cref="Stride"/>
    /// apart, from <see cref="First"/> (a stride equal to the run: all consecutive; see <see cref="InterleaveRows"/>).
    /// </summary>
    private readonly record struct PanelMap(int First, int Run, int Stride)
    {
        public int Panel(int t) => First + t / Run * Stride + t % Run;
    }

    /// <summary>One tile over a panel's listed steps (see <see cref="Blocked"/>); a panel without a zero step, or half
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
    private static int RoundUp(int a, int b) => CeilDiv(a, b) * b;

    public void Dispose()
    {
        foreach (PackBuffers b in _buffers) b.Dispose();
    }
}
