using BnCluster.Core.Model;

namespace BnCluster.Core.Export;

public enum ExportFormat { Onnx, Safetensors }

/// <summary>`bncluster export`: a model document in another framework's file format (<see cref="OnnxExport"/>, <see cref="SafetensorsExport"/>).</summary>
public static class ModelExport
{
    public static string Extension(ExportFormat format) => format switch
    {
        ExportFormat.Onnx => ".onnx",
        ExportFormat.Safetensors => ".safetensors",
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
    };

    /// <summary>Next to the model: run/model.bnc → run/model.onnx.</summary>
    public static string DefaultPath(string modelPath, ExportFormat format) => Path.ChangeExtension(modelPath, Extension(format));

    public static byte[] Serialize(ModelDocument doc, ExportFormat format) => format switch
    {
        ExportFormat.Onnx => OnnxExport.Serialize(doc),
        ExportFormat.Safetensors => SafetensorsExport.Serialize(doc),
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
    };

    /// <summary>Serializes first (a bad document throws before the disk is touched), then writes atomically; returns the byte count.</summary>
    public static long Write(ModelDocument doc, ExportFormat format, string path)
    {
        byte[] bytes = Serialize(doc, format);
        AtomicFile.Write(path, bytes);
        return bytes.Length;
    }
}
