using System.Text.Json;

namespace BnCluster.Core.Tests.Golden;

/// <summary>Finds and reads the golden JSON cases (schema in shared/golden/README.md).</summary>
internal static class GoldenFiles
{
    public static string Directory()
    {
        var fromEnv = Environment.GetEnvironmentVariable("BNCLUSTER_GOLDEN_DIR");
        if (!string.IsNullOrEmpty(fromEnv)) return fromEnv;
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "BnCluster.sln"))) dir = dir.Parent;
        if (dir is null) throw new InvalidOperationException($"no BnCluster.sln above {AppContext.BaseDirectory}; set BNCLUSTER_GOLDEN_DIR");
        // The shared folder next to the checkout is the source of truth; a clone on its own (CI) uses the copy
        // kept in the repository (tests/BnCluster.Core.Tests/Golden/data, copied from shared/golden on 2026-12-02).
        var shared = Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared", "golden"));
        return System.IO.Directory.Exists(shared) ? shared : Path.Combine(dir.FullName, "tests", "BnCluster.Core.Tests", "Golden", "data");
    }

    public static string[] Cases(string prefix) =>
        System.IO.Directory.Exists(Directory())
            ? System.IO.Directory.GetFiles(Directory(), prefix + "*.json").Select(Path.GetFileName).OfType<string>().Order().ToArray()
            : [];

    public static JsonElement Load(string fileName)
    {
        var path = Path.Combine(Directory(), fileName);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        return doc.RootElement.Clone();
    }

    /// <summary>A nested list of numbers flattened row-major to float32.</summary>
    public static float[] Floats(JsonElement e)
    {
        var list = new List<float>();
        Flatten(e, v => list.Add((float)v));
        return list.ToArray();
    }

    /// <summary>A nested list of numbers flattened row-major to float64.</summary>
    public static double[] Doubles(JsonElement e)
    {
        var list = new List<double>();
        Flatten(e, list.Add);
        return list.ToArray();
    }

    public static int[] Ints(JsonElement e) => e.EnumerateArray().Select(v => v.GetInt32()).ToArray();

    private static void Flatten(JsonElement e, Action<double> add)
    {
        if (e.ValueKind == JsonValueKind.Array)
            foreach (var item in e.EnumerateArray()) Flatten(item, add);
        else add(e.GetDouble());
    }
}
