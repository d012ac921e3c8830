namespace BnCluster.Core.Model;

/// <summary>Whole-file writes that never leave a half-written file behind.</summary>
public static class AtomicFile
{
    /// <summary>Writes <paramref name="bytes"/> as <paramref name="path"/>, atomically (see <see cref="Write(string, Action{Stream})"/>).</summary>
    public static void Write(string path, byte[] bytes) => Write(path, stream => stream.Write(bytes));

    /// <summary>
    /// <paramref name="write"/> gets a stream on a temp file in the target's folder (same file system, so the move is a
    /// rename), which is flushed to disk and then renamed over <paramref name="path"/>; on any failure the temp file is
    /// deleted and the target is untouched.
    /// </summary>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(write);
        string fullPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(fullPath) ?? ".";
        string tempPath = Path.Combine(directory, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(tempPath, fullPath, overwrite: true);
        }
        catch
        {
            try { File.Delete(tempPath); } catch (IOException) { } catch (UnauthorizedAccessException) { } // best effort; the original error matters
            throw;
        }
    }
}
