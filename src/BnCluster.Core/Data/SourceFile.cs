using System.IO.Compression;

namespace BnCluster.Core.Data;

/// <summary>
/// Reads a dataset source file into memory, wrapping every IO failure in a
/// <see cref="DatasetException"/> that names the path, and gunzips content that starts
/// with the gzip magic 1f 8b (detected by content, never by file name).
/// </summary>
internal static class SourceFile
{
    /// <summary>The file's bytes exactly as on disk (these are what the dataset hash covers).</summary>
    public static byte[] ReadAllBytes(string path)
    {
        try
        {
            return File.ReadAllBytes(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or NotSupportedException
                                      or ArgumentException or System.Security.SecurityException)
        {
            throw new DatasetException($"{path}: cannot read file: {ex.Message}");
        }
    }

    public static bool IsGzip(ReadOnlySpan<byte> fileBytes) =>
        fileBytes.Length >= 2 && fileBytes[0] == 0x1f && fileBytes[1] == 0x8b;

    /// <summary>
    /// The content of the file: <paramref name="fileBytes"/> itself, or its decompression
    /// when it is gzip. The returned memory is exactly the content (no slack).
    /// </summary>
    public static ReadOnlyMemory<byte> Content(string path, byte[] fileBytes, out bool wasGzip)
    {
        wasGzip = IsGzip(fileBytes);
        if (!wasGzip) return fileBytes;

        // The gzip trailer's ISIZE (uncompressed size mod 2^32) sizes the buffer once,
        // so a 47 MB Fashion-MNIST image file is not grown by repeated doubling.
        int capacityHint = 0;
        if (fileBytes.Length >= 18)
        {
            uint isize = BitConverter.ToUInt32(fileBytes, fileBytes.Length - 4);
            if (!BitConverter.IsLittleEndian) isize = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(isize);
            if (isize <= 1u << 30) capacityHint = (int)isize;
        }
        try
        {
            using var compressed = new MemoryStream(fileBytes, writable: false);
            using var gzip = new GZipStream(compressed, CompressionMode.Decompress);
            // The content usually lives as long as the process (IDX pixels are kept as they are). It goes on the
            // pinned object heap, not the LOH: tens of MB of long-lived LOH data raise the LOH's allocation budget
            // so far that a worker's per-step message garbage piles up to hundreds of MB between gen2 collections.
            var content = GC.AllocateUninitializedArray<byte>(capacityHint, pinned: true);
            int read = gzip.ReadAtLeast(content, content.Length, throwOnEndOfStream: false);
            if (read < content.Length) return content.AsMemory(0, read);
            // ISIZE only covers the last gzip member (and is mod 2^32): if more follows, grow by copying.
            var rest = new MemoryStream();
            gzip.CopyTo(rest);
            if (rest.Length == 0) return content;
            var whole = GC.AllocateUninitializedArray<byte>(checked(content.Length + (int)rest.Length), pinned: true);
            content.CopyTo(whole, 0);
            rest.GetBuffer().AsSpan(0, (int)rest.Length).CopyTo(whole.AsSpan(content.Length));
            return whole;
        }
        catch (Exception ex) when (ex is InvalidDataException or IOException or OverflowException)
        {
            throw new DatasetException($"{path}: corrupt gzip data: {ex.Message}");
        }
    }
}
