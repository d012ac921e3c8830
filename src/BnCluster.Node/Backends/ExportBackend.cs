using BnCluster.Core.Export;
using BnCluster.Core.Model;
using BnCluster.Node.Commands;

namespace BnCluster.Node.Backends;

/// <summary>`bncluster export`: a model file as ONNX or safetensors (<see cref="ModelExport"/>), written atomically.</summary>
public static class ExportBackend
{
    public static Task<int> Export(ExportOptions options, CliContext context, CancellationToken cancel)
    {
        var document = ModelFile.Read(options.ModelPath);
        string output = options.OutputPath ?? ModelExport.DefaultPath(options.ModelPath, options.Format);
        if (string.Equals(Path.GetFullPath(output), Path.GetFullPath(options.ModelPath), StringComparison.Ordinal))
            throw new CliInputException($"--out: \"{output}\" is the model file itself");
        string? folder = Path.GetDirectoryName(Path.GetFullPath(output));
        if (folder is not null && !Directory.Exists(folder))
            throw new CliInputException($"--out: folder \"{Path.GetDirectoryName(output)}\" does not exist");
        cancel.ThrowIfCancellationRequested();
        long bytes;
        try
        {
            bytes = ModelExport.Write(document, options.Format, output);
        }
        catch (FormatException e)
        {
            throw new CliInputException($"{options.ModelPath}: {e.Message}");
        }
        context.Out.WriteLine($"wrote {output} ({OptionParsers.ExportFormats.First(f => f.Item2 == options.Format).Item1}, {bytes} bytes)");
        return Task.FromResult(Cli.ExitOk);
    }
}
