using System.IO.Compression;
using System.Security.Cryptography;

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
        catch (Exception ex) when (IsIoFailure(ex))
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
        using var compressed = new MemoryStream(fileBytes, writable: false);
        return Gunzip(path, compressed, GzipSizeHint(fileBytes.AsSpan(Math.Max(0, fileBytes.Length - 4)), fileBytes.Length));
    }

    /// <summary>
    /// Reads the file once, start to end, without holding its on-disk bytes: they stream into <paramref name="hash"/>
    /// (when given) and, gunzipped if they are gzip, into the returned content (exactly the content, no slack). A
    /// large dataset file thus costs its content only, not also a transient copy of the compressed file.
    /// </summary>
    public static ReadOnlyMemory<byte> ReadContent(string path, IncrementalHash? hash, out bool wasGzip)
    {
        FileStream file;
        try
        {
            file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        }
        catch (Exception ex) when (IsIoFailure(ex))
        {
            throw new DatasetException($"{path}: cannot read file: {ex.Message}");
        }
        using (file)
        {
            try
            {
                long length = file.Length;
                if (length > Array.MaxLength) throw new DatasetException($"{path}: {length} bytes are too many for one array");
                Span<byte> head = stackalloc byte[2], tail = stackalloc byte[4];
                wasGzip = file.ReadAtLeast(head, 2, throwOnEndOfStream: false) == 2 && IsGzip(head);
                int sizeHint = 0;
                if (wasGzip && length >= 18)
                {
                    file.Seek(-4, SeekOrigin.End);
                    file.ReadExactly(tail);
                    sizeHint = GzipSizeHint(tail, length);
                }
                file.Seek(0, SeekOrigin.Begin);
                using var hashing = new HashingReadStream(file, hash);
                ReadOnlyMemory<byte> content;
                if (wasGzip) content = Gunzip(path, hashing, sizeHint);
                else
                {
                    var bytes = GC.AllocateUninitializedArray<byte>((int)length, pinned: true);
                    hashing.ReadExactly(bytes);
                    content = bytes;
                }
                hashing.HashRest(); // the hash covers every on-disk byte, also any after the gzip data
                return content;
            }
            catch (Exception ex) when (IsIoFailure(ex))
            {
                throw new DatasetException($"{path}: cannot read file: {ex.Message}");
            }
        }
    }

    private static bool IsIoFailure(Exception ex) =>
        ex is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException or System.Security.SecurityException;

    // The gzip trailer's ISIZE (uncompressed size mod 2^32) sizes the buffer once, so a 47 MB Fashion-MNIST image
    // file is not grown by repeated doubling.
    private static int GzipSizeHint(ReadOnlySpan<byte> lastFourBytes, long fileLength)
    {
        if (fileLength < 18 || lastFourBytes.Length != 4) return 0;
        uint isize = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(lastFourBytes);
        return isize <= 1u << 30 ? (int)isize : 0;
    }

    private static ReadOnlyMemory<byte> Gunzip(string path, Stream compressed, int capacityHint)
    {
        try
        {
            using var gzip = new GZipStream(compressed, CompressionMode.Decompress, leaveOpen: true);
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

    /// <summary>A read-only pass-through stream that appends every byte read to a hash.</summary>
    private sealed class HashingReadStream(Stream inner, IncrementalHash? hash) : Stream
    {
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            int n = inner.Read(buffer);
            hash?.AppendData(buffer[..n]);
            return n;
        }

        /// <summary>Reads and hashes whatever the consumer left unread.</summary>
        public void HashRest()
        {
            Span<byte> chunk = stackalloc byte[4096];
            while (Read(chunk) > 0) { }
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
