using System.IO.MemoryMappedFiles;

namespace BnCluster.Core.Protocol;

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

    public bool IsDisposed => _disposed;

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
