using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace BnCluster.Core.Data;

/// <summary>
/// Numeric CSV (comma separator, invariant culture, raw or gzip). The first row is a
/// header when any of its cells is not a number. Blank lines are skipped. Errors name
/// the file, the 1-based line and the 1-based column: "&lt;path&gt;: line L, column C: …".
/// </summary>
public static class CsvDatasetReader
{
    /// <summary>Largest accepted class label: class names are "0".."max", so a huge label would mean a huge class list.</summary>
    public const int MaxLabel = 65535;

    /// <summary>
    /// A labelled dataset. <paramref name="labelColumn"/>: null = last column; an integer
    /// = 0-based column index (negative counts from the end, -1 = last); otherwise a
    /// header name. Classes are "0".."max label".
    /// </summary>
    public static Dataset Read(string path, string? labelColumn = null, string? name = null)
    {
        byte[] fileBytes = SourceFile.ReadAllBytes(path);
        return Parse(path, fileBytes, labelColumn, name ?? path);
    }

    /// <summary>
    /// A CSV of features only (for predict): returns [rows × expectedFeatureCount]
    /// row-major; every row must have exactly <paramref name="expectedFeatureCount"/> values.
    /// </summary>
    public static float[] ReadFeatures(string path, int expectedFeatureCount)
    {
        byte[] fileBytes = SourceFile.ReadAllBytes(path);
        return ParseFeatures(path, fileBytes, expectedFeatureCount);
    }

    internal static Dataset Parse(string path, byte[] fileBytes, string? labelColumn, string name)
    {
        var features = new List<float>();
        var labels = new List<int>();
        int labelIndex = -1, maxLabel = -1;
        var layout = ReadRows(path, fileBytes,
            onLayout: layout =>
            {
                labelIndex = ResolveLabelColumn(path, layout, labelColumn);
                if (layout.ColumnCount < 2)
                    throw new DatasetException($"{path}: has {layout.ColumnCount} column(s); needs features and a label");
            },
            onRow: (layout, line, text, cells) =>
            {
                for (int c = 0; c < cells.Length; c++)
                {
                    if (c == labelIndex)
                    {
                        int label = ParseLabel(path, layout, line, c, text[cells[c]]);
                        labels.Add(label);
                        maxLabel = Math.Max(maxLabel, label);
                    }
                    else
                    {
                        features.Add(ParseValue(path, layout, line, c, text[cells[c]]));
                    }
                }
            });
        if (labels.Count == 0) throw new DatasetException($"{path}: has no data rows");

        var classNames = new string[maxLabel + 1];
        for (int k = 0; k <= maxLabel; k++) classNames[k] = k.ToString(CultureInfo.InvariantCulture);
        return new Dataset(name, features.ToArray(), labels.ToArray(), layout.ColumnCount - 1, classNames);
    }

    internal static float[] ParseFeatures(string path, byte[] fileBytes, int expectedFeatureCount)
    {
        if (expectedFeatureCount <= 0) throw new ArgumentOutOfRangeException(nameof(expectedFeatureCount));
        var features = new List<float>();
        ReadRows(path, fileBytes,
            onLayout: layout =>
            {
                if (layout.ColumnCount != expectedFeatureCount)
                    throw new DatasetException(
                        $"{path}: line {layout.FirstLine}: has {layout.ColumnCount} columns, expected {expectedFeatureCount} features");
            },
            onRow: (layout, line, text, cells) =>
            {
                for (int c = 0; c < cells.Length; c++) features.Add(ParseValue(path, layout, line, c, text[cells[c]]));
            });
        if (features.Count == 0) throw new DatasetException($"{path}: has no data rows");
        return features.ToArray();
    }

    /// <summary>The column count (from the first non-blank line) and the header, if the file has one.</summary>
    private sealed class CsvLayout
    {
        public string[]? Header;
        public int ColumnCount;
        public int FirstLine;
    }

    private delegate void RowAction(CsvLayout layout, int line, ReadOnlySpan<char> text, ReadOnlySpan<Range> cells);

    /// <summary>
    /// Streams the lines (no copy of the whole file as strings): decides header or data on
    /// the first non-blank line, calls <paramref name="onLayout"/> once, then
    /// <paramref name="onRow"/> for each data row after checking its column count.
    /// </summary>
    private static CsvLayout ReadRows(string path, byte[] fileBytes, Action<CsvLayout> onLayout, RowAction onRow)
    {
        var content = SourceFile.Content(path, fileBytes, out _);
        if (!MemoryMarshal.TryGetArray(content, out ArraySegment<byte> segment)) segment = content.ToArray();
        ThrowIfNotUtf8(path, segment);
        using var reader = new StreamReader(
            new MemoryStream(segment.Array!, segment.Offset, segment.Count, writable: false),
            Encoding.UTF8, detectEncodingFromByteOrderMarks: true);

        var layout = new CsvLayout();
        Range[] cells = [];
        int lineNumber = 0;
        while (true)
        {
            string? line = reader.ReadLine();
            if (line is null) break;
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;

            ReadOnlySpan<char> text = line;
            int columnCount = text.Count(',') + 1;
            if (layout.FirstLine == 0)
            {
                layout.FirstLine = lineNumber;
                layout.ColumnCount = columnCount;
                cells = new Range[columnCount];
                text.Split(cells, ',');
                bool isHeader = false;
                foreach (var cell in cells) isHeader |= !IsNumber(text[cell]);
                if (isHeader) layout.Header = line.Split(',').Select(h => h.Trim().Trim('"')).ToArray();
                onLayout(layout);
                if (isHeader) continue;
            }
            if (columnCount != layout.ColumnCount)
                throw new DatasetException(
                    $"{path}: line {lineNumber}: has {columnCount} columns, expected {layout.ColumnCount} " +
                    $"(as on line {layout.FirstLine})");
            text.Split(cells, ',');
            onRow(layout, lineNumber, text, cells);
        }
        if (layout.FirstLine == 0) throw new DatasetException($"{path}: is empty");
        return layout;
    }

    /// <summary>Rejects content that is not UTF-8, naming the line of the first bad byte.</summary>
    private static void ThrowIfNotUtf8(string path, ArraySegment<byte> content)
    {
        if (System.Text.Unicode.Utf8.IsValid(content)) return;
        int badOffset = 0;
        try
        {
            new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true).GetCharCount(content);
        }
        catch (DecoderFallbackException ex)
        {
            badOffset = Math.Clamp(ex.Index, 0, content.Count);
        }
        int line = 1 + content.AsSpan(0, badOffset).Count((byte)'\n');
        throw new DatasetException($"{path}: line {line}: not UTF-8 text at byte offset {badOffset} (is this a CSV file?)");
    }

    private static bool IsNumber(ReadOnlySpan<char> cell) =>
        double.TryParse(cell, NumberStyles.Float, CultureInfo.InvariantCulture, out _);

    private static int ResolveLabelColumn(string path, CsvLayout table, string? labelColumn)
    {
        if (labelColumn is null) return table.ColumnCount - 1;
        if (int.TryParse(labelColumn, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int index))
        {
            int resolved = index < 0 ? table.ColumnCount + index : index;
            if (resolved < 0 || resolved >= table.ColumnCount)
                throw new DatasetException(
                    $"{path}: label column {index} is outside the {table.ColumnCount} columns " +
                    $"(0..{table.ColumnCount - 1}, or -1..-{table.ColumnCount} from the end)");
            return resolved;
        }
        if (table.Header is null)
            throw new DatasetException(
                $"{path}: label column '{labelColumn}' is a name but the file has no header row");
        int byName = Array.IndexOf(table.Header, labelColumn);
        if (byName < 0)
            throw new DatasetException(
                $"{path}: line {table.FirstLine}: no header column named '{labelColumn}' " +
                $"(columns: {string.Join(", ", table.Header)})");
        return byName;
    }

    private static string Where(string path, CsvLayout layout, int line, int column)
    {
        string named = layout.Header is null ? "" : $" ('{layout.Header[column]}')";
        return $"{path}: line {line}, column {column + 1}{named}";
    }

    private static float ParseValue(string path, CsvLayout layout, int line, int column, ReadOnlySpan<char> cell)
    {
        if (cell.IsWhiteSpace())
            throw new DatasetException($"{Where(path, layout, line, column)}: missing value");
        if (!double.TryParse(cell, NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
            throw new DatasetException($"{Where(path, layout, line, column)}: '{cell.Trim().ToString()}' is not a number");
        float single = (float)value;
        if (!float.IsFinite(single))
            throw new DatasetException(
                $"{Where(path, layout, line, column)}: '{cell.Trim().ToString()}' is NaN or infinite (or beyond float32 range)");
        return single;
    }

    private static int ParseLabel(string path, CsvLayout layout, int line, int column, ReadOnlySpan<char> cell)
    {
        float value = ParseValue(path, layout, line, column, cell);
        if (value < 0 || value != MathF.Floor(value) || value > MaxLabel)
            throw new DatasetException(
                $"{Where(path, layout, line, column)}: label '{cell.Trim().ToString()}' is not a non-negative integer " +
                $"(0..{MaxLabel})");
        return (int)value;
    }
}
