using System.Buffers.Binary;
using BnCluster.Node;
using BnCluster.Node.Commands;

namespace BnCluster.IntegrationTests;

/// <summary>Result of one in-process `bncluster` invocation.</summary>
public sealed record CliRun(int Exit, string Out, string Error)
{
    public string[] ErrorLines => Error.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    public string[] OutLines => Out.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}

/// <summary>Runs the real CLI (Cli.Run with Program.Backends) in this process, capturing its output.</summary>
public static class CliHarness
{
    public static CliRun Run(params string[] args) => Run(CancellationToken.None, null, args);

    public static CliRun Run(CancellationToken cancel, TextWriter? errorTap, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = errorTap ?? new StringWriter();
        int exit = Cli.Run(args, stdout, stderr, Program.Backends, cancel);
        return new CliRun(exit, stdout.ToString(), stderr.ToString()!);
    }
}

/// <summary>A temporary folder deleted on Dispose.</summary>
public sealed class TempFolder : IDisposable
{
    public TempFolder() => Directory.CreateDirectory(Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "bncluster-it-" + Guid.NewGuid().ToString("N")));
    public string Path { get; }
    public string this[string name] => System.IO.Path.Combine(Path, name);
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>Small IDX files in the layout of fashion-mnist (4×4 images, 10 classes), made up for the bad-input tests.</summary>
public static class IdxFiles
{
    public const int Side = 4;

    /// <summary>Writes the four IDX files into <paramref name="dir"/>: 40 train and 10 test images (rows × columns) with labels i mod 10.</summary>
    public static void WriteSet(string dir, int trainCount = 40, int testCount = 10, int rows = Side, int columns = Side)
    {
        Directory.CreateDirectory(dir);
        WriteImages(Path.Combine(dir, "train-images-idx3-ubyte"), trainCount, rows: rows, columns: columns);
        WriteLabels(Path.Combine(dir, "train-labels-idx1-ubyte"), Enumerable.Range(0, trainCount).Select(i => (byte)(i % 10)).ToArray());
        WriteImages(Path.Combine(dir, "t10k-images-idx3-ubyte"), testCount, rows: rows, columns: columns);
        WriteLabels(Path.Combine(dir, "t10k-labels-idx1-ubyte"), Enumerable.Range(0, testCount).Select(i => (byte)(i % 10)).ToArray());
    }

    public static void WriteImages(string path, int count, uint magic = 0x00000803, int rows = Side, int columns = Side)
    {
        var bytes = new byte[16 + count * rows * columns];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, magic);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4), count);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(8), rows);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(12), columns);
        for (int i = 16; i < bytes.Length; i++) bytes[i] = (byte)(i * 37 % 256);
        File.WriteAllBytes(path, bytes);
    }

    public static void WriteLabels(string path, byte[] labels)
    {
        var bytes = new byte[8 + labels.Length];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, 0x00000801);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4), labels.Length);
        labels.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
    }

    public static void Truncate(string path, int removeBytes)
    {
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^removeBytes]);
    }
}
