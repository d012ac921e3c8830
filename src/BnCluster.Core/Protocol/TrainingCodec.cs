using System.Buffers.Binary;
using BnCluster.Core.Serialization;

namespace BnCluster.Core.Protocol;

/// <summary>
/// MessagePack encoding of the training protocol (DESIGN §4): each message is an array <c>[type, …fields]</c>;
/// float tensors are bin of little-endian float32, statistics bin of little-endian float64, row indices bin of
/// little-endian int32, a missing parameter snapshot nil. Type ids 40–59 belong to this protocol.
/// </summary>
public static class TrainingCodec
{
    public const int FirstTypeId = 40, LastTypeId = 59;
    private const int TRegister = 40, TRegistered = 41, TRefused = 42, TInputReq = 43, TInputReply = 44, TSetInput = 45,
        TStart = 46, TBnStats = 47, TBnGlobal = 48, TGradStats = 49, TGradGlobal = 50, TGradients = 51, TAborted = 52,
        TEvaluate = 53, TEvalResult = 54;

    public static bool Handles(int typeId) => typeId is >= TRegister and <= TEvalResult;

    public static bool TryWrite(object message, MessagePackWriter w)
    {
        switch (message)
        {
            case RegisterWorker m: Header(w, TRegister, 4); w.WriteInt32(m.ProtocolVersion); w.WriteString(m.JobId); w.WriteString(m.DatasetSha256); w.WriteString(m.Node); return true;
            case WorkerRegistered m: Header(w, TRegistered, 2); w.WriteInt32(m.WorkerId); w.WriteInt32(m.Members); return true;
            case RegistrationRefused m: Header(w, TRefused, 1); w.WriteString(m.Reason); return true;
            case InputStatsRequest m: Header(w, TInputReq, 3); w.WriteInt64(m.Round); w.WriteInt32(m.Start); w.WriteInt32(m.Count); return true;
            case InputStatsReply m: Header(w, TInputReply, 4); w.WriteInt64(m.Round); w.WriteInt64(m.Count); w.WriteFloat64Array(m.Mean); w.WriteFloat64Array(m.M2); return true;
            case SetInputNormalization m: Header(w, TSetInput, 3); w.WriteFloat32Array(m.Mean); w.WriteFloat32Array(m.Variance); w.WriteSingle(m.Epsilon); return true;
            case StartStep m:
                Header(w, TStart, 8); w.WriteInt64(m.Step); w.WriteInt32(m.Epoch); w.WriteInt32(m.Attempt); w.WriteInt32(m.GlobalBatchSize);
                w.WriteInt32(m.Rank); WriteInt32Array(w, m.Rows); w.WriteInt64(m.ParametersVersion); WriteTensors(w, m.Parameters); return true;
            case BnStats m: Header(w, TBnStats, 6); w.WriteInt64(m.Step); w.WriteInt32(m.Attempt); w.WriteInt32(m.Layer); w.WriteInt64(m.Count); w.WriteFloat64Array(m.Mean); w.WriteFloat64Array(m.M2); return true;
            case BnGlobal m: Header(w, TBnGlobal, 6); w.WriteInt64(m.Step); w.WriteInt32(m.Attempt); w.WriteInt32(m.Layer); w.WriteInt64(m.Count); w.WriteFloat64Array(m.Mean); w.WriteFloat64Array(m.M2); return true;
            case BnGradStats m: Header(w, TGradStats, 5); w.WriteInt64(m.Step); w.WriteInt32(m.Attempt); w.WriteInt32(m.Layer); w.WriteFloat64Array(m.SumDy); w.WriteFloat64Array(m.SumDyXhat); return true;
            case BnGradGlobal m: Header(w, TGradGlobal, 5); w.WriteInt64(m.Step); w.WriteInt32(m.Attempt); w.WriteInt32(m.Layer); w.WriteFloat64Array(m.SumDy); w.WriteFloat64Array(m.SumDyXhat); return true;
            case StepGradients m:
                Header(w, TGradients, 6); w.WriteInt64(m.Step); w.WriteInt32(m.Attempt); w.WriteDouble(m.SumLoss); w.WriteInt32(m.Correct); w.WriteInt32(m.Count);
                WriteTensors(w, m.Tensors); return true;
            case StepAborted m: Header(w, TAborted, 3); w.WriteInt64(m.Step); w.WriteInt32(m.Attempt); w.WriteString(m.Reason); return true;
            case Evaluate m: Header(w, TEvaluate, 5); w.WriteInt64(m.Round); w.WriteInt32(m.Start); w.WriteInt32(m.Count); w.WriteInt64(m.ParametersVersion); WriteTensors(w, m.Parameters); return true;
            case EvalResult m: Header(w, TEvalResult, 4); w.WriteInt64(m.Round); w.WriteDouble(m.SumLoss); w.WriteInt32(m.Correct); w.WriteInt32(m.Count); return true;
            default: return false;
        }
    }

    public static object Read(ref MessagePackReader r)
    {
        int start = r.Position;
        int count = r.ReadArrayHeader();
        if (count < 1) throw r.Error(start, "[type, …fields]", "empty array");
        int type = r.ReadInt32();
        object message = type switch
        {
            TRegister => Expect(ref r, start, count, 4, "RegisterWorker") is var _ ? new RegisterWorker(r.ReadInt32(), r.ReadString(), r.ReadString(), r.ReadString()) : null!,
            TRegistered => Expect(ref r, start, count, 2, "WorkerRegistered") is var _ ? new WorkerRegistered(r.ReadInt32(), r.ReadInt32()) : null!,
            TRefused => Expect(ref r, start, count, 1, "RegistrationRefused") is var _ ? new RegistrationRefused(r.ReadString()) : null!,
            TInputReq => Expect(ref r, start, count, 3, "InputStatsRequest") is var _ ? new InputStatsRequest(r.ReadInt64(), r.ReadInt32(), r.ReadInt32()) : null!,
            TInputReply => Expect(ref r, start, count, 4, "InputStatsReply") is var _ ? new InputStatsReply(r.ReadInt64(), r.ReadInt64(), r.ReadFloat64Array(), r.ReadFloat64Array()) : null!,
            TSetInput => Expect(ref r, start, count, 3, "SetInputNormalization") is var _ ? new SetInputNormalization(r.ReadFloat32Array(), r.ReadFloat32Array(), r.ReadSingle()) : null!,
            TStart => Expect(ref r, start, count, 8, "StartStep") is var _
                ? new StartStep(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), ReadInt32Array(ref r), r.ReadInt64(), ReadTensors(ref r))
                : null!,
            TBnStats => Expect(ref r, start, count, 6, "BnStats") is var _ ? new BnStats(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadInt64(), r.ReadFloat64Array(), r.ReadFloat64Array()) : null!,
            TBnGlobal => Expect(ref r, start, count, 6, "BnGlobal") is var _ ? new BnGlobal(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadInt64(), r.ReadFloat64Array(), r.ReadFloat64Array()) : null!,
            TGradStats => Expect(ref r, start, count, 5, "BnGradStats") is var _ ? new BnGradStats(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadFloat64Array(), r.ReadFloat64Array()) : null!,
            TGradGlobal => Expect(ref r, start, count, 5, "BnGradGlobal") is var _ ? new BnGradGlobal(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadFloat64Array(), r.ReadFloat64Array()) : null!,
            TGradients => Expect(ref r, start, count, 6, "StepGradients") is var _
                ? new StepGradients(r.ReadInt64(), r.ReadInt32(), r.ReadDouble(), r.ReadInt32(), r.ReadInt32(), ReadTensors(ref r) ?? throw r.Error(start, "gradient tensors", "nil"))
                : null!,
            TAborted => Expect(ref r, start, count, 3, "StepAborted") is var _ ? new StepAborted(r.ReadInt64(), r.ReadInt32(), r.ReadString()) : null!,
            TEvaluate => Expect(ref r, start, count, 5, "Evaluate") is var _ ? new Evaluate(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadInt64(), ReadTensors(ref r)) : null!,
            TEvalResult => Expect(ref r, start, count, 4, "EvalResult") is var _ ? new EvalResult(r.ReadInt64(), r.ReadDouble(), r.ReadInt32(), r.ReadInt32()) : null!,
            _ => throw r.Error(start, "a training message type (40–54)", $"type {type}"),
        };
        return message;
    }

    private static void Header(MessagePackWriter w, int type, int fields)
    {
        w.WriteArrayHeader(fields + 1);
        w.WriteInt32(type);
    }

    private static int Expect(ref MessagePackReader r, int start, int count, int fields, string name) =>
        count == fields + 1 ? 0 : throw r.Error(start, $"{name} with {fields} fields", $"{count - 1} fields");

    private static void WriteInt32Array(MessagePackWriter w, int[] values)
    {
        var bytes = new byte[values.Length * sizeof(int)];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(i * sizeof(int)), values[i]);
        w.WriteBinary(bytes);
    }

    private static int[] ReadInt32Array(ref MessagePackReader r)
    {
        int start = r.Position;
        var bytes = r.ReadBinary();
        if (bytes.Length % sizeof(int) != 0) throw r.Error(start, "bin of int32", $"{bytes.Length} bytes");
        var values = new int[bytes.Length / sizeof(int)];
        for (int i = 0; i < values.Length; i++) values[i] = BinaryPrimitives.ReadInt32LittleEndian(bytes.Slice(i * sizeof(int)));
        return values;
    }

    private static void WriteTensors(MessagePackWriter w, float[][]? tensors)
    {
        if (tensors is null) { w.WriteNil(); return; }
        w.WriteArrayHeader(tensors.Length);
        foreach (var t in tensors) w.WriteFloat32Array(t);
    }

    private static float[][]? ReadTensors(ref MessagePackReader r)
    {
        if (r.TryReadNil()) return null;
        int n = r.ReadArrayHeader();
        var tensors = new float[n][];
        for (int i = 0; i < n; i++) tensors[i] = r.ReadFloat32Array();
        return tensors;
    }
}
