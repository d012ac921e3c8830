using System.Buffers.Binary;
using BnCluster.Core.Serialization;

namespace BnCluster.Core.Protocol;

/// <summary>
/// MessagePack encoding of the training protocol (DESIGN §4): each message is an array <c>[type, …fields]</c>;
/// float tensors are bin of little-endian float32, statistics bin of little-endian float64, row indices bin of
/// little-endian int32, a missing parameter snapshot nil. Type ids 40–59 belong to this protocol.
/// Float tensors and the workers' partial BN statistics are written straight from the message's arrays and read
/// straight into arrays rented from <see cref="TensorPool"/>; <see cref="Sent"/> returns a sent message's pooled arrays.
/// </summary>
public static class TrainingCodec
{
    public const int FirstTypeId = 40, LastTypeId = 59;
    private const int TRegister = 40, TRegistered = 41, TRefused = 42, TInputReq = 43, TInputReply = 44, TSetInput = 45,
        TStart = 46, TBnStats = 47, TBnGlobal = 48, TGradStats = 49, TGradGlobal = 50, TGradients = 51, TAborted = 52,
        TEvaluate = 53, TEvalResult = 54, TDropped = 55, TShmOffer = 56, TShmAnswer = 57, TBnxOffer = 58, TBnxAnswer = 59;

    public static bool Handles(int typeId) => typeId is >= TRegister and <= TBnxAnswer;

    public static bool TryWrite(object message, MessagePackWriter w)
    {
        switch (message)
        {
            case RegisterWorker m: Header(w, TRegister, 4); w.WriteInt32(m.ProtocolVersion); w.WriteString(m.JobId); w.WriteString(m.DatasetSha256); w.WriteString(m.Node); return true;
            case WorkerRegistered m: Header(w, TRegistered, 2); w.WriteInt32(m.WorkerId); w.WriteInt32(m.Members); return true;
            case RegistrationRefused m: Header(w, TRefused, 1); w.WriteString(m.Reason); return true;
            case WorkerDropped m: Header(w, TDropped, 1); w.WriteString(m.Reason); return true;
            case SharedMemoryOffer m: Header(w, TShmOffer, 2); w.WriteString(m.Path); w.WriteBinary(m.Token); return true;
            case SharedMemoryAnswer m: Header(w, TShmAnswer, 3); w.WriteString(m.Path); w.WriteBoolean(m.Accepted); w.WriteString(m.Reason); return true;
            case BatchNormExchangeOffer m:
                Header(w, TBnxOffer, 5); w.WriteString(m.Path); w.WriteBinary(m.Token); w.WriteInt32(m.Ranks); w.WriteString(m.UpdatePath); w.WriteBinary(m.UpdateToken ?? []);
                return true;
            case BatchNormExchangeAnswer m: Header(w, TBnxAnswer, 3); w.WriteString(m.Path); w.WriteBoolean(m.Accepted); w.WriteString(m.Reason); return true;
            case InputStatsRequest m: Header(w, TInputReq, 3); w.WriteInt64(m.Round); w.WriteInt32(m.Start); w.WriteInt32(m.Count); return true;
            case InputStatsReply m: Header(w, TInputReply, 4); w.WriteInt64(m.Round); w.WriteInt64(m.Count); w.WriteFloat64Array(m.Mean); w.WriteFloat64Array(m.M2); return true;
            case SetInputNormalization m: Header(w, TSetInput, 3); w.WriteFloat32Array(m.Mean); w.WriteFloat32Array(m.Variance); w.WriteSingle(m.Epsilon); return true;
            case StartStep m:
                Header(w, TStart, 13); w.WriteInt64(m.Step); w.WriteInt32(m.Epoch); w.WriteInt32(m.Attempt); w.WriteInt32(m.GlobalBatchSize);
                w.WriteInt32(m.Rank); WriteInt32Array(w, m.Rows); w.WriteInt64(m.ParametersVersion); WriteTensors(w, m.Parameters); w.WriteBoolean(m.SharedParameters);
                w.WriteInt32(m.SharedBatchNormRanks); w.WriteInt64(m.UpdateStep);
                if (m.NextRows is null) w.WriteNil(); else WriteInt32Array(w, m.NextRows);
                w.WriteInt32(m.NextAttempt); return true;
            case BnStats m: Header(w, TBnStats, 6); w.WriteInt64(m.Step); w.WriteInt32(m.Attempt); w.WriteInt32(m.Layer); w.WriteInt64(m.Count); w.WriteFloat64Array(m.Mean); w.WriteFloat64Array(m.M2); return true;
            case BnGlobal m: Header(w, TBnGlobal, 6); w.WriteInt64(m.Step); w.WriteInt32(m.Attempt); w.WriteInt32(m.Layer); w.WriteInt64(m.Count); w.WriteFloat64Array(m.Mean); w.WriteFloat64Array(m.M2); return true;
            case BnGradStats m: Header(w, TGradStats, 5); w.WriteInt64(m.Step); w.WriteInt32(m.Attempt); w.WriteInt32(m.Layer); w.WriteFloat64Array(m.SumDy); w.WriteFloat64Array(m.SumDyXhat); return true;
            case BnGradGlobal m: Header(w, TGradGlobal, 5); w.WriteInt64(m.Step); w.WriteInt32(m.Attempt); w.WriteInt32(m.Layer); w.WriteFloat64Array(m.SumDy); w.WriteFloat64Array(m.SumDyXhat); return true;
            case StepGradients m:
                Header(w, TGradients, 8); w.WriteInt64(m.Step); w.WriteInt32(m.Attempt); w.WriteDouble(m.SumLoss); w.WriteInt32(m.Correct); w.WriteInt32(m.Count);
                WriteTensors(w, m.Tensors); WriteTimings(w, m.Timings); w.WriteBoolean(m.Shared); return true;
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
        int fields = count - 1;
        switch (type)
        {
            case TRegister:
                Expect(ref r, start, fields, 4, "RegisterWorker");
                return new RegisterWorker(r.ReadInt32(), r.ReadString(), r.ReadString(), r.ReadString());
            case TRegistered:
                Expect(ref r, start, fields, 2, "WorkerRegistered");
                return new WorkerRegistered(r.ReadInt32(), r.ReadInt32());
            case TRefused:
                Expect(ref r, start, fields, 1, "RegistrationRefused");
                return new RegistrationRefused(r.ReadString());
            case TDropped:
                Expect(ref r, start, fields, 1, "WorkerDropped");
                return new WorkerDropped(r.ReadString());
            case TShmOffer:
                Expect(ref r, start, fields, 2, "SharedMemoryOffer");
                return new SharedMemoryOffer(r.ReadString(), r.ReadBinary().ToArray());
            case TShmAnswer:
                Expect(ref r, start, fields, 3, "SharedMemoryAnswer");
                return new SharedMemoryAnswer(r.ReadString(), r.ReadBoolean(), r.ReadString());
            case TBnxOffer:
                Expect(ref r, start, fields, 5, "BatchNormExchangeOffer");
                return new BatchNormExchangeOffer(r.ReadString(), r.ReadBinary().ToArray(), r.ReadInt32(), r.ReadString(), r.ReadBinary().ToArray());
            case TBnxAnswer:
                Expect(ref r, start, fields, 3, "BatchNormExchangeAnswer");
                return new BatchNormExchangeAnswer(r.ReadString(), r.ReadBoolean(), r.ReadString());
            case TInputReq:
                Expect(ref r, start, fields, 3, "InputStatsRequest");
                return new InputStatsRequest(r.ReadInt64(), r.ReadInt32(), r.ReadInt32());
            case TInputReply:
                Expect(ref r, start, fields, 4, "InputStatsReply");
                return new InputStatsReply(r.ReadInt64(), r.ReadInt64(), r.ReadFloat64Array(), r.ReadFloat64Array());
            case TSetInput:
                Expect(ref r, start, fields, 3, "SetInputNormalization");
                return new SetInputNormalization(r.ReadFloat32Array(), r.ReadFloat32Array(), r.ReadSingle());
            case TStart:
                Expect(ref r, start, fields, 13, "StartStep");
                return new StartStep(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), ReadInt32Array(ref r), r.ReadInt64(), ReadTensors(ref r), r.ReadBoolean(), r.ReadInt32(), r.ReadInt64(),
                    r.TryReadNil() ? null : ReadInt32Array(ref r), r.ReadInt32());
            case TBnStats:
                Expect(ref r, start, fields, 6, "BnStats");
                return new BnStats(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadInt64(), r.ReadFloat64Array(TensorPool.RentDoubles), r.ReadFloat64Array(TensorPool.RentDoubles));
            case TBnGlobal:
                Expect(ref r, start, fields, 6, "BnGlobal");
                return new BnGlobal(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadInt64(), r.ReadFloat64Array(), r.ReadFloat64Array());
            case TGradStats:
                Expect(ref r, start, fields, 5, "BnGradStats");
                return new BnGradStats(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadFloat64Array(TensorPool.RentDoubles), r.ReadFloat64Array(TensorPool.RentDoubles));
            case TGradGlobal:
                Expect(ref r, start, fields, 5, "BnGradGlobal");
                return new BnGradGlobal(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadFloat64Array(), r.ReadFloat64Array());
            case TGradients:
                Expect(ref r, start, fields, 8, "StepGradients");
                return new StepGradients(r.ReadInt64(), r.ReadInt32(), r.ReadDouble(), r.ReadInt32(), r.ReadInt32(),
                    ReadTensors(ref r) ?? throw r.Error(start, "gradient tensors", "nil"), ReadTimings(ref r), r.ReadBoolean());
            case TAborted:
                Expect(ref r, start, fields, 3, "StepAborted");
                return new StepAborted(r.ReadInt64(), r.ReadInt32(), r.ReadString());
            case TEvaluate:
                Expect(ref r, start, fields, 5, "Evaluate");
                return new Evaluate(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadInt64(), ReadTensors(ref r));
            case TEvalResult:
                Expect(ref r, start, fields, 4, "EvalResult");
                return new EvalResult(r.ReadInt64(), r.ReadDouble(), r.ReadInt32(), r.ReadInt32());
            default:
                throw r.Error(start, "a training message type (40–59)", $"type {type}");
        }
    }

    /// <summary>The messages that carry tensors (a parameter snapshot, gradients): their frames are megabytes.</summary>
    public static bool CarriesTensors(object message) => message switch
    {
        StartStep { Parameters: not null } or Evaluate { Parameters: not null } => true,
        StepGradients m => m.Tensors.Length > 0,
        _ => false,
    };

    /// <summary>
    /// Called by remoting once <paramref name="message"/> has been encoded for sending: the pooled tensors it
    /// carried go back to <see cref="TensorPool"/> (the sender never touches a sent message again).
    /// </summary>
    public static void Sent(object message)
    {
        switch (message)
        {
            case StartStep { Parameters: { } p }: TensorPool.Release(p); break;
            case Evaluate { Parameters: { } p }: TensorPool.Release(p); break;
            case StepGradients m: TensorPool.Release(m.Tensors); break;
            // A worker's partial statistics; the global replies are the coordinator's reused buffers, never returned.
            case BnStats m: TensorPool.Return(m.Mean); TensorPool.Return(m.M2); break;
            case BnGradStats m: TensorPool.Return(m.SumDy); TensorPool.Return(m.SumDyXhat); break;
        }
    }

    private static void Header(MessagePackWriter w, int type, int fields)
    {
        w.WriteArrayHeader(fields + 1);
        w.WriteInt32(type);
    }

    private static void Expect(ref MessagePackReader r, int start, int fields, int expected, string name)
    {
        if (fields != expected) throw r.Error(start, $"{name} with {expected} fields", $"{fields} fields");
    }

    private static void WriteInt32Array(MessagePackWriter w, int[] values)
    {
        if (BitConverter.IsLittleEndian)
        {
            w.WriteBinary(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
            return;
        }
        Span<byte> bytes = stackalloc byte[sizeof(int)];
        w.WriteBinaryHeader(values.Length * sizeof(int));
        foreach (int v in values)
        {
            BinaryPrimitives.WriteInt32LittleEndian(bytes, v);
            w.WriteRaw(bytes);
        }
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
        for (int i = 0; i < n; i++) tensors[i] = r.ReadFloat32Array(TensorPool.Rent);
        return tensors;
    }

    // [computeMs, [[layer, backward, ms]…], exchangeStep, exchangeEpoch, exchangeMs, gen0Collections, allocatedBytes]
    private static void WriteTimings(MessagePackWriter w, StepTimings t)
    {
        w.WriteArrayHeader(7);
        w.WriteDouble(t.ComputeMs);
        w.WriteArrayHeader(t.BnWaits.Length);
        foreach (var b in t.BnWaits)
        {
            w.WriteArrayHeader(3);
            w.WriteInt32(b.Layer);
            w.WriteBoolean(b.Backward);
            w.WriteDouble(b.Ms);
        }
        w.WriteInt64(t.ExchangeStep);
        w.WriteInt32(t.ExchangeEpoch);
        w.WriteDouble(t.ExchangeMs);
        w.WriteInt32(t.Gen0Collections);
        w.WriteInt64(t.AllocatedBytes);
    }

    private static StepTimings ReadTimings(ref MessagePackReader r)
    {
        int start = r.Position;
        if (r.ReadArrayHeader() != 7)
            throw r.Error(start, "step timings [computeMs, waits, exchangeStep, exchangeEpoch, exchangeMs, gen0Collections, allocatedBytes]", "another array length");
        double compute = r.ReadDouble();
        var waits = new BnWait[r.ReadArrayHeader()];
        for (int i = 0; i < waits.Length; i++)
        {
            int at = r.Position;
            if (r.ReadArrayHeader() != 3) throw r.Error(at, "a BN wait [layer, backward, ms]", "another array length");
            waits[i] = new BnWait(r.ReadInt32(), r.ReadBoolean(), r.ReadDouble());
        }
        return new StepTimings(compute, waits, r.ReadInt64(), r.ReadInt32(), r.ReadDouble(), r.ReadInt32(), r.ReadInt64());
    }
}
