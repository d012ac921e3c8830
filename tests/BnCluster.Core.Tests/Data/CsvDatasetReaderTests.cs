using BnCluster.Core.Data;
using Xunit;

namespace BnCluster.Core.Tests.Data;

public sealed class CsvDatasetReaderTests : IDisposable
{
    private readonly TempDirectory _dir = new();
    public void Dispose() => _dir.Dispose();

    private const string WithHeader = "a,label,b,c\n1.5,2,3,4\n-1,0,6e-1,7\n";
    private const string NoHeader = "1,2,3\r\n4,5,0\r\n\r\n7,8,1\r\n";

    [Fact]
    public void DefaultLabelIsLastColumnAndClassesAreZeroToMax()
    {
        string path = _dir.WriteText("plain.csv", NoHeader);
        var data = CsvDatasetReader.Read(path);
        Assert.Equal(3, data.Count);
        Assert.Equal(2, data.FeatureCount);
        Assert.Equal([3, 0, 1], data.Labels);
        Assert.Equal([1f, 2f, 4f, 5f, 7f, 8f], data.Features);
        Assert.Equal(["0", "1", "2", "3"], data.ClassNames);
    }

    [Fact]
    public void LabelColumnByIndexNameAndFromEnd()
    {
        string path = _dir.WriteText("header.csv", WithHeader);
        foreach (string column in new[] { "1", "label", "-3" })
        {
            var data = CsvDatasetReader.Read(path, column);
            Assert.Equal(2, data.Count);
            Assert.Equal(3, data.FeatureCount);
            Assert.Equal([2, 0], data.Labels);
            Assert.Equal([1.5f, 3f, 4f, -1f, 0.6f, 7f], data.Features);
        }
        var last = CsvDatasetReader.Read(path);
        Assert.Equal([4, 7], last.Labels);
        // Column 0 holds 1.5: not a label.
        var ex = Assert.Throws<DatasetException>(() => CsvDatasetReader.Read(path, "0"));
        Assert.StartsWith(path + ": line 2, column 1 ('a')", ex.Message);
    }

    private DatasetException Error(string text, string? labelColumn = null)
    {
        string path = _dir.WriteText("bad-" + Guid.NewGuid().ToString("N")[..6] + ".csv", text);
        var ex = Assert.Throws<DatasetException>(() => CsvDatasetReader.Read(path, labelColumn));
        Assert.StartsWith(path + ": ", ex.Message);
        return ex;
    }

    [Theory]
    [InlineData("1,2,3\n4,,5\n", "line 2, column 2", "missing value")]
    [InlineData("x,y,label\n1,2,3\n4,abc,5\n", "line 3, column 2 ('y')", "'abc' is not a number")]
    [InlineData("1,2,3\n4,NaN,5\n", "line 2, column 2", "NaN")]
    [InlineData("1,2,3\n4,5,6\n-Infinity,1,1\n", "line 3, column 1", "infinite")]
    [InlineData("1,2,3\n4,1e39,6\n", "line 2, column 2", "float32")]
    [InlineData("1,2,3\n4,5\n", "line 2", "has 2 columns, expected 3")]
    [InlineData("1,2,3\n\n4,5,6,7\n", "line 3", "has 4 columns, expected 3")]
    [InlineData("1,2,3\n4,5,-1\n", "line 2, column 3", "not a non-negative integer")]
    [InlineData("1,2,3\n4,5,2.5\n", "line 2, column 3", "not a non-negative integer")]
    [InlineData("1,2,3\n4,5,70000\n", "line 2, column 3", "not a non-negative integer")]
    public void BadCellsNameLineAndColumn(string text, string where, string what)
    {
        var ex = Error(text);
        Assert.Contains(where, ex.Message);
        Assert.Contains(what, ex.Message);
    }

    [Fact]
    public void BadLabelColumnSelections()
    {
        Assert.Contains("no header row", Error("1,2,3\n", "label").Message);
        Assert.Contains("no header column named 'target'", Error("a,b\n1,2\n", "target").Message);
        Assert.Contains("label column 3 is outside", Error("1,2,3\n", "3").Message);
        Assert.Contains("label column -4 is outside", Error("1,2,3\n", "-4").Message);
    }

    [Fact]
    public void EmptyAndHeaderOnlyFiles()
    {
        Assert.Contains("is empty", Error("\n\n").Message);
        Assert.Contains("no data rows", Error("a,b,c\n").Message);
        Assert.Contains("needs features and a label", Error("1\n2\n").Message);
    }

    [Fact]
    public void MissingFileNamesPath()
    {
        string path = Path.Combine(_dir.Path, "absent.csv");
        var ex = Assert.Throws<DatasetException>(() => CsvDatasetReader.Read(path));
        Assert.StartsWith(path + ": ", ex.Message);
        var featuresEx = Assert.Throws<DatasetException>(() => CsvDatasetReader.ReadFeatures(path, 3));
        Assert.StartsWith(path + ": ", featuresEx.Message);
    }

    [Fact]
    public void FeaturesOnlyCsv()
    {
        string path = _dir.WriteText("features.csv", "p1,p2\n0.25,1\n3,-4\n");
        Assert.Equal([0.25f, 1f, 3f, -4f], CsvDatasetReader.ReadFeatures(path, 2));

        var wrongCount = Assert.Throws<DatasetException>(() => CsvDatasetReader.ReadFeatures(path, 3));
        Assert.StartsWith(path + ": line 1", wrongCount.Message);
        Assert.Contains("expected 3 features", wrongCount.Message);

        string bad = _dir.WriteText("features-bad.csv", "0.25,1\n3,inf\n");
        var badEx = Assert.Throws<DatasetException>(() => CsvDatasetReader.ReadFeatures(bad, 2));
        Assert.Contains(bad + ": line 2, column 2", badEx.Message);
    }

    [Fact]
    public void BomQuotedHeaderAndGzipContent()
    {
        byte[] text = System.Text.Encoding.UTF8.GetBytes("\uFEFF\"x\",\"y\"\r\n1,0\r\n2,1\r\n");
        string path = _dir.Write("bom.csv", IdxFixture.Gzip(text)); // gzip detected by content
        var data = CsvDatasetReader.Read(path, "y");
        Assert.Equal([0, 1], data.Labels);
        Assert.Equal([1f, 2f], data.Features);
    }

    [Fact]
    public void BinaryFileIsRejectedWithLine()
    {
        string path = _dir.Write("binary.csv", [0x31, 0x2c, 0x32, 0x0a, 0xff, 0xfe, 0xc3, 0x28, 0x0a]);
        var ex = Assert.Throws<DatasetException>(() => CsvDatasetReader.Read(path));
        Assert.StartsWith(path + ": line 2", ex.Message);
    }
}
