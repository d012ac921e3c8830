using System.Buffers.Binary;

namespace BnCluster.Core.Data;

/// <summary>
/// Images of an IDX file: <see cref="Pixels"/> is [Count × Rows·Columns] bytes exactly as in the file (a slice of
/// the file's content, not a copy); a pixel's value is byte / <see cref="IdxReader.PixelDivisor"/>, in [0, 1].
/// </summary>
public sealed record IdxImages(ReadOnlyMemory<byte> Pixels, int Count, int Rows, int Columns)
{
    public int PixelsPerImage => Rows * Columns;
}

/// <summary>
/// Reader of the MNIST IDX layout (raw or gzip, detected by the magic 1f 8b).
/// Images: big-endian int32 magic 0x00000803 (unsigned bytes, 3 dims), count, rows,
/// columns, then count·rows·columns pixel bytes. Labels: magic 0x00000801, count, then
/// count label bytes. Every problem is a <see cref="DatasetException"/> "&lt;path&gt;: &lt;what&gt;".
/// </summary>
public static class IdxReader
{
    public const int ImagesMagic = 0x00000803;
    public const int LabelsMagic = 0x00000801;
    private const int ImagesHeaderBytes = 16;
    private const int LabelsHeaderBytes = 8;

    /// <summary>A pixel's value is byte / 255f, the exact float32 division (like torchvision's ToTensor).</summary>
    public const float PixelDivisor = 255f;

    public static IdxImages ReadImages(string path)
    {
        var content = SourceFile.ReadContent(path, hash: null, out bool wasGzip);
        return ParseImages(path, content, wasGzip);
    }

    /// <summary>Labels as class indices; each must be below <paramref name="classCount"/>.</summary>
    public static int[] ReadLabels(string path, int classCount)
    {
        var content = SourceFile.ReadContent(path, hash: null, out bool wasGzip);
        return ParseLabels(path, content.Span, wasGzip, classCount);
    }

    /// <summary>An images file and its labels file as one dataset (counts must agree).</summary>
    public static Dataset ReadDataset(string imagesPath, string labelsPath, string name, IReadOnlyList<string> classNames)
    {
        var images = ReadImages(imagesPath);
        var labels = ReadLabels(labelsPath, classNames.Count);
        return Combine(imagesPath, images, labelsPath, labels, name, classNames);
    }

    internal static Dataset Combine(string imagesPath, IdxImages images, string labelsPath, int[] labels,
                                    string name, IReadOnlyList<string> classNames)
    {
        if (images.Count != labels.Length)
            throw new DatasetException(
                $"{labelsPath}: holds {labels.Length} labels but {imagesPath} holds {images.Count} images");
        // Kept as bytes (a quarter of float32): Fashion-MNIST's 60000 images take 47 MB instead of 188 MB.
        return new Dataset(name, images.Pixels, PixelDivisor, labels, images.PixelsPerImage, classNames);
    }

    /// <summary>Decodes an images file from its content (<paramref name="wasGzip"/>: it was gunzipped, for messages).</summary>
    internal static IdxImages ParseImages(string path, ReadOnlyMemory<byte> contentMemory, bool wasGzip)
    {
        var content = contentMemory.Span;
        string where = wasGzip ? " of the decompressed content" : "";

        int[] dims = ReadHeader(path, content, ImagesMagic, "IDX unsigned-byte images, 3 dims", ImagesHeaderBytes);
        int count = dims[0], rows = dims[1], columns = dims[2];
        if (rows <= 0 || columns <= 0)
            throw new DatasetException($"{path}: image size {rows}×{columns} at offset 8 is empty");

        long pixelsPerImage = (long)rows * columns;
        long present = content.Length - ImagesHeaderBytes;
        // count × rows × columns can exceed a long (each is up to 2^31 − 1), so it is bounded before any offset is computed from it.
        if ((Int128)count * pixelsPerImage > Array.MaxLength)
            throw new DatasetException(
                $"{path}: the header (offset 4) claims {count} images × {rows}×{columns} pixels, more than one array can hold; " +
                $"the file holds {present} pixel bytes{where}");
        long expected = count * pixelsPerImage;
        if (present < expected)
            throw new DatasetException(
                $"{path}: truncated: data ends at offset {content.Length}{where}, expected {expected} pixel bytes " +
                $"({count} images × {rows}×{columns}) from offset {ImagesHeaderBytes}, i.e. up to offset {ImagesHeaderBytes + expected}");
        if (present > expected)
            throw new DatasetException(
                $"{path}: {present - expected} unexpected bytes after offset {ImagesHeaderBytes + expected}{where} " +
                $"({count} images × {rows}×{columns} end there)");

        return new IdxImages(contentMemory.Slice(ImagesHeaderBytes, (int)expected), count, rows, columns);
    }

    /// <summary>Decodes a labels file from its content; every label must be &lt; classCount.</summary>
    internal static int[] ParseLabels(string path, ReadOnlySpan<byte> content, bool wasGzip, int classCount)
    {
        string where = wasGzip ? " of the decompressed content" : "";

        int count = ReadHeader(path, content, LabelsMagic, "IDX unsigned-byte labels, 1 dim", LabelsHeaderBytes)[0];
        long present = content.Length - LabelsHeaderBytes;
        if (present < count)
            throw new DatasetException(
                $"{path}: truncated: data ends at offset {content.Length}{where}, expected {count} label bytes " +
                $"from offset {LabelsHeaderBytes}, i.e. up to offset {LabelsHeaderBytes + (long)count}");
        if (present > count)
            throw new DatasetException(
                $"{path}: {present - count} unexpected bytes after offset {LabelsHeaderBytes + (long)count}{where} " +
                $"({count} labels end there)");

        var labelBytes = content.Slice(LabelsHeaderBytes, count);
        var labels = new int[count];
        for (int i = 0; i < labelBytes.Length; i++)
        {
            int label = labelBytes[i];
            if (label >= classCount)
                throw new DatasetException(
                    $"{path}: label {label} at index {i} (offset {LabelsHeaderBytes + i}{where}) is outside 0..{classCount - 1}");
            labels[i] = label;
        }
        return labels;
    }

    /// <summary>Checks the magic and returns the big-endian dimension sizes that follow it.</summary>
    private static int[] ReadHeader(string path, ReadOnlySpan<byte> content, int expectedMagic, string kind, int headerBytes)
    {
        if (content.Length < headerBytes)
            throw new DatasetException(
                $"{path}: file too short: {content.Length} bytes, an {kind} header needs {headerBytes}");
        int magic = BinaryPrimitives.ReadInt32BigEndian(content);
        if (magic != expectedMagic)
            throw new DatasetException(
                $"{path}: wrong magic 0x{magic:x8} at offset 0, expected 0x{expectedMagic:x8} ({kind})");
        int dimCount = (headerBytes - 4) / 4;
        var dims = new int[dimCount];
        for (int d = 0; d < dimCount; d++)
        {
            int offset = 4 + 4 * d;
            dims[d] = BinaryPrimitives.ReadInt32BigEndian(content[offset..]);
            if (dims[d] < 0)
                throw new DatasetException($"{path}: negative dimension {dims[d]} at offset {offset}");
        }
        return dims;
    }
}
