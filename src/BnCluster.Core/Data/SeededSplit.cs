namespace BnCluster.Core.Data;

/// <summary>
/// Deterministic train/test split of one labelled dataset: a Fisher–Yates permutation of
/// the row indices driven by SplitMix64 seeded from <c>seed</c> (our own generator, so the
/// split is the same on every node and every .NET version); the first <c>testCount</c>
/// permuted indices are the test rows, the rest the training rows, both kept in file order.
/// </summary>
public static class SeededSplit
{
    /// <summary>The test size used for CSV and digits: ceil(20 % of the rows) (digits: 360 of 1797).</summary>
    public static int TestCountFor(int rowCount) => (int)Math.Ceiling(rowCount * 0.2);

    public static (Dataset Train, Dataset Test) Split(Dataset all, int testCount, int seed)
    {
        if (testCount <= 0 || testCount >= all.Count)
            throw new DatasetException(
                $"{all.Name}: {all.Count} rows cannot be split into {testCount} test rows and at least one training row");

        int[] permutation = Permutation(all.Count, seed);
        var isTest = new bool[all.Count];
        for (int i = 0; i < testCount; i++) isTest[permutation[i]] = true;

        var trainRows = new List<int>(all.Count - testCount);
        var testRows = new List<int>(testCount);
        for (int row = 0; row < all.Count; row++) (isTest[row] ? testRows : trainRows).Add(row);
        return (Select(all, trainRows), Select(all, testRows));
    }

    /// <summary>A permutation of 0..n-1 determined by the seed alone.</summary>
    public static int[] Permutation(int n, int seed)
    {
        var order = new int[n];
        for (int i = 0; i < n; i++) order[i] = i;
        // The seed is hashed into the start state (plain seed·constant would make seed s+1's
        // stream a one-step shift of seed s's); the xor constant separates this use of the seed.
        ulong seedState = (ulong)(uint)seed ^ 0xD1B54A32D192ED03UL;
        ulong state = NextSplitMix64(ref seedState);
        for (int i = n - 1; i > 0; i--)
        {
            ulong random = NextSplitMix64(ref state);
            int j = (int)(((UInt128)random * (ulong)(i + 1)) >> 64); // uniform in 0..i (Lemire, bias < 2^-32)
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    private static ulong NextSplitMix64(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static Dataset Select(Dataset all, List<int> rows)
    {
        int width = all.FeatureCount;
        var features = new float[rows.Count * width];
        var labels = new int[rows.Count];
        for (int i = 0; i < rows.Count; i++)
        {
            all.CopyRow(rows[i], features.AsSpan(i * width, width));
            labels[i] = all.Labels[rows[i]];
        }
        return new Dataset(all.Name, features, labels, width, all.ClassNames);
    }
}
