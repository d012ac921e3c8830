using BnCluster.Node.Commands;

namespace BnCluster.Node;

/// <summary>
/// One run's hold on its --out folder for as long as it runs: RUN/.lock opened with FileShare.None, which .NET turns into
/// an exclusive flock on Unix (a lock on Windows), so a second run on the same folder — in this process or another — is
/// refused, and a run that dies releases it with its process. The empty .lock file stays behind (deleting it would let a
/// run that opened it just before lock a file no one else sees).
/// <para>
/// A folder that holds anything besides .lock is refused unless --overwrite is given; then it is cleared, but only if it
/// looks like a run folder (it holds run.json, model.bnc, metrics.jsonl or log.jsonl), so that `--out ~ --overwrite`
/// cannot empty a home folder. Clearing removes links themselves and never follows them out of the folder.
/// </para>
/// </summary>
public sealed class RunFolderLock : IDisposable
{
    public const string LockFileName = ".lock";

    /// <summary>Files whose presence says "a bncluster run wrote this folder".</summary>
    private static readonly string[] RunFiles =
        [RunRecord.FileName, RunFolder.ModelFileName, RunFolder.MetricsFileName, RunFolder.LogFileName];

    private readonly FileStream _lock;

    private RunFolderLock(string path, FileStream lockFile)
    {
        Path = path;
        _lock = lockFile;
    }

    /// <summary>The folder's full path.</summary>
    public string Path { get; }

    /// <summary>
    /// Creates <paramref name="path"/> if needed and locks it; a non-empty folder is cleared with
    /// <paramref name="overwrite"/>, else refused. Refusals are <see cref="CliInputException"/> (exit 2) naming --out.
    /// </summary>
    public static RunFolderLock Acquire(string path, bool overwrite)
    {
        if (File.Exists(path)) throw new CliInputException($"--out: \"{path}\" is a file, not a folder");
        // A refused non-empty folder that has no .lock yet is left exactly as it was: nothing is created in it.
        if (!overwrite && Directory.Exists(path) && !File.Exists(System.IO.Path.Combine(path, LockFileName)) && Entries(path).Count > 0)
            throw NotEmpty(path, Entries(path));

        Directory.CreateDirectory(path);
        string lockPath = System.IO.Path.Combine(path, LockFileName);
        bool created = !File.Exists(lockPath);
        FileStream lockFile;
        try { lockFile = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException) when (File.Exists(lockPath))
        {
            throw new CliInputException($"--out: \"{path}\" is in use by another run (it holds {LockFileName}); wait for it to end or choose another --out");
        }
        try
        {
            // Looked at only now, under the lock: a run that ended a moment ago has left its files.
            var entries = Entries(path);
            if (entries.Count > 0)
            {
                if (!overwrite) throw NotEmpty(path, entries);
                if (!entries.Any(e => RunFiles.Contains(e.Name)))
                    throw new CliInputException($"--out: \"{path}\" does not look like a run folder (no {RunRecord.FileName}, {RunFolder.ModelFileName}, {RunFolder.MetricsFileName} or {RunFolder.LogFileName}); --overwrite clears only run folders");
                foreach (var entry in entries) Remove(entry);
            }
            return new RunFolderLock(System.IO.Path.GetFullPath(path), lockFile);
        }
        catch
        {
            // A refused folder is left as it was. The .lock this call created is unlinked while still locked, so a run
            // that opened it meanwhile cannot lock it after us and share the folder with a newer .lock's owner.
            try { if (created) File.Delete(lockPath); }
            finally { lockFile.Dispose(); }
            throw;
        }
    }

    private static CliInputException NotEmpty(string path, IReadOnlyList<FileSystemInfo> entries)
    {
        var names = entries.Select(e => e.Name).Order(StringComparer.Ordinal).ToList();
        string shown = string.Join(", ", names.Take(4)) + (names.Count > 4 ? $" and {names.Count - 4} more" : "");
        return new CliInputException($"--out: \"{path}\" is not empty ({shown}); give --overwrite to replace that run, or another --out");
    }

    /// <summary>Everything in the folder but the lock file.</summary>
    private static List<FileSystemInfo> Entries(string path) =>
        new DirectoryInfo(path).EnumerateFileSystemInfos().Where(e => e.Name != LockFileName).ToList();

    /// <summary>Deletes a file, a link (the link only) or a folder with everything in it, never following a link.</summary>
    private static void Remove(FileSystemInfo entry)
    {
        if (entry.LinkTarget is not null || entry is FileInfo)
        {
            File.Delete(entry.FullName); // unlink: for a link to a folder this removes the link, not the folder's content
            return;
        }
        var folder = (DirectoryInfo)entry;
        foreach (var inner in folder.EnumerateFileSystemInfos()) Remove(inner);
        folder.Delete();
    }

    public void Dispose() => _lock.Dispose();
}
