using System.Globalization;
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
        var table = ReadTable(path, fileBytes);
        int labelIndex = ResolveLabelColumn(path, table, labelColumn);
        int featureCount = table.ColumnCount - 1;
        if (featureCount < 1)
            throw new DatasetException($"{path}: has {table.ColumnCount} column(s); needs features and a label");

        var features = new List<float>(table.Rows.Count * featureCount);
        var labels = new int[table.Rows.Count];
        int maxLabel = -1;
        for (int r = 0; r < table.Rows.Count; r++)
        {
            var row = table.Rows[r];
            for (int c = 0; c < row.Cells.Length; c++)
            {
                if (c == labelIndex)
                {
                    labels[r] = ParseLabel(path, table, row, c);
                    maxLabel = Math.Max(maxLabel, labels[r]);
                }
                else
                {
                    features.Add(ParseValue(path, table, row, c));
                }
            }
        }
        if (labels.Length == 0) throw new DatasetException($"{path}: has no data rows");

        var classNames = new string[maxLabel + 1];
        for (int k = 0; k <= maxLabel; k++) classNames[k] = k.ToString(CultureInfo.InvariantCulture);
        return new Dataset(name, features.ToArray(), labels, featureCount, classNames);
    }

    internal static float[] ParseFeatures(string path, byte[] fileBytes, int expectedFeatureCount)
    {
        if (expectedFeatureCount <= 0) throw new ArgumentOutOfRangeException(nameof(expectedFeatureCount));
        var table = ReadTable(path, fileBytes);
        if (table.ColumnCount != expectedFeatureCount)
            throw new DatasetException(
                $"{path}: line {table.FirstLine}: has {table.ColumnCount} columns, expected {expectedFeatureCount} features");
        if (table.Rows.Count == 0) throw new DatasetException($"{path}: has no data rows");
        var features = new float[table.Rows.Count * expectedFeatureCount];
        int i = 0;
        foreach (var row in table.Rows)
            for (int c = 0; c < row.Cells.Length; c++)
                features[i++] = ParseValue(path, table, row, c);
        return features;
    }

    private sealed record CsvRow(int Line, string[] Cells);

    private sealed class CsvTable
    {
        public string[]? Header;
        public int ColumnCount;
        public int FirstLine;
        public readonly List<CsvRow> Rows = [];
    }

    /// <summary>Splits lines into cells and checks every row has the same number of columns.</summary>
    private static CsvTable ReadTable(string path, byte[] fileBytes)
    {
        var content = SourceFile.Content(path, fileBytes, out _);
        var table = new CsvTable();
        string text;
        try
        {
            text = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true)
                .GetString(content.Span);
        }
        catch (DecoderFallbackException ex)
        {
            throw new DatasetException($"{path}: not UTF-8 text (byte offset {ex.Index}): not a CSV file?");
        }
        if (text.Length > 0 && text[0] == '\uFEFF') text = text[1..];

        using var reader = new StringReader(text);
        int lineNumber = 0;
        string? line;
        while ((line = reader.ReadLine()) != null)
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            string[] cells = line.Split(',');
            if (table.FirstLine == 0)
            {
                table.FirstLine = lineNumber;
                table.ColumnCount = cells.Length;
                if (cells.Any(cell => !IsNumber(cell)))
                {
                    table.Header = cells.Select(cell => cell.Trim().Trim('"')).ToArray();
                    continue;
                }
            }
            if (cells.Length != table.ColumnCount)
                throw new DatasetException(
                    $"{path}: line {lineNumber}: has {cells.Length} columns, expected {table.ColumnCount} " +
                    $"(as on line {table.FirstLine})");
            table.Rows.Add(new CsvRow(lineNumber, cells));
        }
        if (table.FirstLine == 0) throw new DatasetException($"{path}: is empty");
        return table;
    }

    private static bool IsNumber(string cell) =>
        double.TryParse(cell, NumberStyles.Float, CultureInfo.InvariantCulture, out _);

    private static int ResolveLabelColumn(string path, CsvTable table, string? labelColumn)
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

    private static string Where(string path, CsvTable table, CsvRow row, int column)
    {
        string named = table.Header is null ? "" : $" ('{table.Header[column]}')";
        return $"{path}: line {row.Line}, column {column + 1}{named}";
    }

    private static float ParseValue(string path, CsvTable table, CsvRow row, int column)
    {
        string cell = row.Cells[column];
        if (string.IsNullOrWhiteSpace(cell))
            throw new DatasetException($"{Where(path, table, row, column)}: missing value");
        if (!double.TryParse(cell, NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
            throw new DatasetException($"{Where(path, table, row, column)}: '{cell.Trim()}' is not a number");
        float single = (float)value;
        if (!float.IsFinite(single))
            throw new DatasetException(
                $"{Where(path, table, row, column)}: '{cell.Trim()}' is NaN or infinite (or beyond float32 range)");
        return single;
    }

    private static int ParseLabel(string path, CsvTable table, CsvRow row, int column)
    {
        float value = ParseValue(path, table, row, column);
        if (value < 0 || value != MathF.Floor(value) || value > MaxLabel)
            throw new DatasetException(
                $"{Where(path, table, row, column)}: label '{row.Cells[column].Trim()}' is not a non-negative integer " +
                $"(0..{MaxLabel})");
        return (int)value;
    }
}
