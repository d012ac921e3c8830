using BnCluster.Core.Data;
using Xunit;

namespace BnCluster.Core.Tests.Data;

public sealed class IdxReaderTests : IDisposable
{
    private readonly TempDirectory _dir = new();
    public void Dispose() => _dir.Dispose();

    // 3 images of 2×2.
    private static readonly byte[] Pixels = [0, 255, 51, 102, 1, 2, 3, 4, 254, 128, 0, 17];
    private static readonly byte[] LabelBytes = [9, 0, 3];

    private static void AssertDecoded(IdxImages images, int[] labels)
    {
        Assert.Equal(3, images.Count);
        Assert.Equal(2, images.Rows);
        Assert.Equal(2, images.Columns);
        Assert.Equal(Pixels, images.Pixels.ToArray()); // the file's bytes, decoded only when rows are read
        Assert.Equal([9, 0, 3], labels);
    }

    [Fact]
    public void RawFilesRoundTrip()
    {
        // Named .gz but raw: gzip is detected by content, not by name.
        string images = _dir.Write("images.gz", IdxFixture.Images(3, 2, 2, Pixels));
        string labels = _dir.Write("labels", IdxFixture.Labels(3, LabelBytes));
        AssertDecoded(IdxReader.ReadImages(images), IdxReader.ReadLabels(labels, 10));
    }

    [Fact]
    public void GzipFilesRoundTrip()
    {
        // Gzip content under a name without .gz.
        string images = _dir.Write("images-idx3-ubyte", IdxFixture.Gzip(IdxFixture.Images(3, 2, 2, Pixels)));
        string labels = _dir.Write("labels-idx1-ubyte", IdxFixture.Gzip(IdxFixture.Labels(3, LabelBytes)));
        AssertDecoded(IdxReader.ReadImages(images), IdxReader.ReadLabels(labels, 10));

        var dataset = IdxReader.ReadDataset(images, labels, "tiny", DatasetCatalog.DigitClassNames);
        Assert.Equal(3, dataset.Count);
        Assert.Equal(4, dataset.FeatureCount);
        Assert.True(dataset.StoresBytes);
        Assert.Equal(Pixels.Length, dataset.StorageBytes);
        var values = new float[Pixels.Length];
        dataset.CopyRows(0, 3, values);
        for (int i = 0; i < Pixels.Length; i++) Assert.Equal(Pixels[i] / 255f, values[i]);
        Assert.Equal(0f, values[0]);
        Assert.Equal(1f, values[1]);
        Assert.Equal(Pixels[6] / 255f, dataset.RowToArray(1)[2]);
    }

    [Fact]
    public void MultiMemberGzipIsReadWhole()
    {
        // Two concatenated gzip members: the trailer's size covers only the last one, so the first guess is short.
        byte[] raw = IdxFixture.Images(3, 2, 2, Pixels);
        byte[] twoMembers = [.. IdxFixture.Gzip(raw[..10]), .. IdxFixture.Gzip(raw[10..])];
        string images = _dir.Write("images", twoMembers);
        AssertDecoded(IdxReader.ReadImages(images), [9, 0, 3]);
    }

    private DatasetException ImagesError(string name, byte[] bytes)
    {
        string path = _dir.Write(name, bytes);
        var ex = Assert.Throws<DatasetException>(() => IdxReader.ReadImages(path));
        Assert.StartsWith(path + ": ", ex.Message);
        return ex;
    }

    private DatasetException LabelsError(string name, byte[] bytes, int classCount = 10)
    {
        string path = _dir.Write(name, bytes);
        var ex = Assert.Throws<DatasetException>(() => IdxReader.ReadLabels(path, classCount));
        Assert.StartsWith(path + ": ", ex.Message);
        return ex;
    }

    [Fact]
    public void FileTooShortForHeader()
    {
        var ex = ImagesError("short-images", [0, 0, 8, 3, 0, 0, 0, 1]);
        Assert.Contains("too short", ex.Message);
        Assert.Contains("8 bytes", ex.Message);
        Assert.Contains("16", ex.Message);
        var labelsEx = LabelsError("short-labels", [0, 0, 8]);
        Assert.Contains("too short", labelsEx.Message);
    }

    [Fact]
    public void WrongMagicNamesTheExpectedMagic()
    {
        // A labels file given as images, and the reverse.
        var ex = ImagesError("labels-as-images", IdxFixture.Images(3, 2, 2, Pixels, magic: 0x00000801));
        Assert.Contains("0x00000801", ex.Message);
        Assert.Contains("expected 0x00000803", ex.Message);
        Assert.Contains("offset 0", ex.Message);
        var labelsEx = LabelsError("images-as-labels", IdxFixture.Labels(3, LabelBytes, magic: 0x00000803));
        Assert.Contains("expected 0x00000801", labelsEx.Message);
    }

    [Fact]
    public void TruncatedImagesNameOffsetAndExpectedBytes()
    {
        var full = IdxFixture.Images(3, 2, 2, Pixels);
        var ex = ImagesError("truncated", full[..^2]); // 26 bytes: header 16 + 10 of 12 pixels
        Assert.Contains("truncated", ex.Message);
        Assert.Contains("offset 26", ex.Message);
        Assert.Contains("expected 12 pixel bytes", ex.Message);

        // Same check on the decompressed content of a gzip file.
        var gzEx = ImagesError("truncated.gz", IdxFixture.Gzip(full[..^5]));
        Assert.Contains("offset 23", gzEx.Message);
        Assert.Contains("decompressed", gzEx.Message);
    }

    [Fact]
    public void DimsLargerThanDataAreTruncation()
    {
        // Header claims 1000 images of 28×28 but only 12 pixel bytes follow.
        var ex = ImagesError("claims-more", IdxFixture.Images(1000, 28, 28, Pixels));
        Assert.Contains("offset 28", ex.Message);
        Assert.Contains("expected 784000 pixel bytes", ex.Message);
    }

    [Fact]
    public void A_header_too_large_for_any_array_says_so_without_overflowing_offsets()
    {
        // count × rows × columns = (2^31 − 1)^3 is beyond a long: it used to be reported as "offset -4294967294984".
        var ex = ImagesError("huge", IdxFixture.Images(int.MaxValue, int.MaxValue, int.MaxValue, Pixels));
        Assert.Contains($"claims {int.MaxValue} images × {int.MaxValue}×{int.MaxValue} pixels, more than one array can hold", ex.Message);
        Assert.Contains("the file holds 12 pixel bytes", ex.Message);
        Assert.DoesNotContain("-", ex.Message.Replace(_dir.Path, ""));
    }

    [Fact]
    public void TrailingBytesAreRejected()
    {
        var ex = ImagesError("trailing", IdxFixture.Images(2, 2, 2, Pixels)); // 2×4 = 8 of 12 bytes used
        Assert.Contains("4 unexpected bytes after offset 24", ex.Message);
        var labelsEx = LabelsError("trailing-labels", IdxFixture.Labels(2, LabelBytes));
        Assert.Contains("1 unexpected bytes after offset 10", labelsEx.Message);
    }

    [Fact]
    public void TruncatedLabels()
    {
        var ex = LabelsError("labels-truncated", IdxFixture.Labels(5, LabelBytes));
        Assert.Contains("offset 11", ex.Message);
        Assert.Contains("expected 5 label bytes", ex.Message);
    }

    [Fact]
    public void LabelOutOfRangeNamesIndex()
    {
        var ex = LabelsError("bad-label", IdxFixture.Labels(3, [1, 2, 10]));
        Assert.Contains("label 10 at index 2", ex.Message);
        Assert.Contains("offset 10", ex.Message);
        Assert.Contains("0..9", ex.Message);
    }

    [Fact]
    public void ImageLabelCountMismatch()
    {
        string images = _dir.Write("img", IdxFixture.Images(3, 2, 2, Pixels));
        string labels = _dir.Write("lbl", IdxFixture.Labels(2, [1, 2]));
        var ex = Assert.Throws<DatasetException>(() => IdxReader.ReadDataset(images, labels, "x", DatasetCatalog.DigitClassNames));
        Assert.StartsWith(labels + ": ", ex.Message);
        Assert.Contains("2 labels", ex.Message);
        Assert.Contains("3 images", ex.Message);
        Assert.Contains(images, ex.Message);
    }

    [Fact]
    public void ZeroSizedImagesAreRejected()
    {
        var ex = ImagesError("zero-rows", IdxFixture.Images(3, 0, 2, []));
        Assert.Contains("offset 8", ex.Message);
    }

    [Fact]
    public void CorruptGzipIsADatasetException()
    {
        var gz = IdxFixture.Gzip(IdxFixture.Images(3, 2, 2, Pixels));
        for (int i = 10; i < gz.Length - 8; i++) gz[i] ^= 0x5a;
        var ex = ImagesError("corrupt.gz", gz);
        Assert.Contains("gzip", ex.Message);
    }

    [Fact]
    public void MissingFileIsADatasetExceptionNamingThePath()
    {
        string path = Path.Combine(_dir.Path, "nope", "train-images-idx3-ubyte");
        var ex = Assert.Throws<DatasetException>(() => IdxReader.ReadImages(path));
        Assert.StartsWith(path + ": ", ex.Message);
        var labelsEx = Assert.Throws<DatasetException>(() => IdxReader.ReadLabels(_dir.Path, 10)); // a directory
        Assert.StartsWith(_dir.Path + ": ", labelsEx.Message);
    }
}
