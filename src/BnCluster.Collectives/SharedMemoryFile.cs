using System.IO.MemoryMappedFiles;

namespace BnCluster.Collectives;

/// <summary>
/// A file mapped into this process for sharing with processes on the same machine (<see cref="SharedTensorRegion"/>,
/// <see cref="SharedBatchNormExchange"/>): created preallocated and owner-only by one process, opened by the others,
/// and unlinked once every process that needs it has mapped it (POSIX keeps the mappings), so a crash leaves
/// nothing behind.
/// </summary>
internal sealed unsafe class SharedMemoryFile : IDisposable
{
    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private bool _disposed;

    private SharedMemoryFile(MemoryMappedFile file, string path, long capacity)
    {
        _file = file;
        Path = path;
        Capacity = capacity;
        _view = file.CreateViewAccessor(0, capacity, MemoryMappedFileAccess.ReadWrite);
        byte* pointer = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        Base = pointer + _view.PointerOffset;
    }

    public string Path { get; }
    public long Capacity { get; }

    /// <summary>The first byte of the mapping (valid until <see cref="Dispose"/>).</summary>
    public byte* Base { get; }

    /// <summary>Creates the file (it must not exist), owner-only, with <paramref name="capacity"/> bytes preallocated.</summary>
    public static SharedMemoryFile CreateNew(string path, long capacity)
    {
        // Preallocated (fallocate): a full /dev/shm fails here with an IOException, not later with SIGBUS on a write.
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.ReadWrite, Share = FileShare.ReadWrite, PreallocationSize = capacity };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        var stream = new FileStream(path, options);
        try
        {
            stream.SetLength(capacity);
            var file = MemoryMappedFile.CreateFromFile(stream, null, capacity, MemoryMappedFileAccess.ReadWrite, HandleInheritability.None, leaveOpen: false);
            try { return new SharedMemoryFile(file, path, capacity); }
            catch { file.Dispose(); throw; }
        }
        catch
        {
            stream.Dispose();
            TryDelete(path);
            throw;
        }
    }

    /// <summary>Opens a file another process created; <see cref="InvalidDataException"/> when it does not have <paramref name="capacity"/> bytes.</summary>
    public static SharedMemoryFile OpenExisting(string path, long capacity, string what)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        try
        {
            if (stream.Length != capacity) throw new InvalidDataException($"{what} {path} has {stream.Length} bytes, this network needs {capacity}");
            var file = MemoryMappedFile.CreateFromFile(stream, null, capacity, MemoryMappedFileAccess.ReadWrite, HandleInheritability.None, leaveOpen: false);
            try { return new SharedMemoryFile(file, path, capacity); }
            catch { file.Dispose(); throw; }
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Removes the file; every mapping stays valid.</summary>
    public void Unlink() => TryDelete(Path);

    public static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }
}

/// <summary>A typed view of one <see cref="SharedMemoryFile"/> (SharedTensorRegion, SharedBatchNormExchange, SharedShardedUpdate).</summary>
internal interface ISharedFileView : IDisposable
{
    void Unlink();
}

/// <summary>Hands out a new view only once its header is written (created) or checked (opened).</summary>
internal static class SharedFileViews
{
    /// <summary>
    /// <paramref name="view"/> after <paramref name="header"/> ran on it; if that throws, the view is unmapped and, when
    /// this process <paramref name="created"/> the file, the file is removed, so a failure leaves nothing behind.
    /// </summary>
    public static T WithHeader<T>(T view, Action<T> header, bool created) where T : ISharedFileView
    {
        try
        {
            header(view);
            return view;
        }
        catch
        {
            view.Dispose();
            if (created) view.Unlink();
            throw;
        }
    }
}

/// <summary>
/// How a process waits for others through shared memory: a peer is normally a fraction of a millisecond behind, so
/// spin (SpinWait yields the core to anything runnable after a few rounds) for that long, then sleep, so a peer that is
/// gone costs no core while the abort is on its way.
/// </summary>
internal static class SharedMemoryWait
{
    private static readonly TimeSpan SpinPhase = TimeSpan.FromMilliseconds(50);

    /// <summary>One round of a wait that began at <paramref name="start"/> (a Stopwatch timestamp); throws when <paramref name="ct"/> is cancelled.</summary>
    public static void Pause(ref SpinWait spin, long start, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        if (System.Diagnostics.Stopwatch.GetElapsedTime(start) < SpinPhase) spin.SpinOnce(sleep1Threshold: -1);
        else Thread.Sleep(1);
    }
}

/// <summary>
/// The seqlock stamp of an area of a shared-memory file, on a cache line of its own: [sequence u64][first i64][second
/// i64] (e.g. step and attempt), then 40 bytes for the area's own use. A writer makes the sequence odd, writes, stamps,
/// makes it even; a reader that sees an odd or a changed sequence, or another stamp, does not use what it read.
/// </summary>
internal static unsafe class SeqLock
{
    public const int Bytes = 64;
    private const int SequenceOffset = 0, FirstOffset = 8, SecondOffset = 16;

    /// <summary>Where the stamp line's own 40 bytes start.</summary>
    public const int PayloadOffset = 24;

    /// <summary>"Holding nothing": first and second −1, which no real stamp is.</summary>
    public static void Clear(byte* stamp)
    {
        *(ulong*)(stamp + SequenceOffset) = 0;
        *(long*)(stamp + FirstOffset) = -1;
        *(long*)(stamp + SecondOffset) = -1;
    }

    public static void BeginWrite(byte* stamp)
    {
        ulong sequence = Volatile.Read(ref *(ulong*)(stamp + SequenceOffset));
        Volatile.Write(ref *(ulong*)(stamp + SequenceOffset), (sequence | 1) + 2); // odd: being written
        Interlocked.MemoryBarrier();
    }

    public static void EndWrite(byte* stamp, long first, long second)
    {
        *(long*)(stamp + FirstOffset) = first;
        *(long*)(stamp + SecondOffset) = second;
        Interlocked.MemoryBarrier();
        ulong sequence = Volatile.Read(ref *(ulong*)(stamp + SequenceOffset));
        Volatile.Write(ref *(ulong*)(stamp + SequenceOffset), sequence + 1); // even: complete
    }

    /// <summary>The area holds the stamp (first, second) and nobody is writing it: read it, then check <see cref="EndRead"/>.</summary>
    public static bool BeginRead(byte* stamp, long first, long second, out ulong sequence)
    {
        sequence = Volatile.Read(ref *(ulong*)(stamp + SequenceOffset));
        bool stamped = (sequence & 1) == 0 && *(long*)(stamp + FirstOffset) == first && *(long*)(stamp + SecondOffset) == second;
        Interlocked.MemoryBarrier();
        return stamped;
    }

    /// <summary>Nobody wrote the area while it was read (the copy is whole).</summary>
    public static bool EndRead(byte* stamp, ulong sequence)
    {
        Interlocked.MemoryBarrier();
        return Volatile.Read(ref *(ulong*)(stamp + SequenceOffset)) == sequence;
    }

    /// <summary>A cheap check for a spinning reader: stamped (first, second) and not being written.</summary>
    public static bool IsStamped(byte* stamp, long first, long second) =>
        (Volatile.Read(ref *(ulong*)(stamp + SequenceOffset)) & 1) == 0
        && Volatile.Read(ref *(long*)(stamp + FirstOffset)) == first && Volatile.Read(ref *(long*)(stamp + SecondOffset)) == second;
}
