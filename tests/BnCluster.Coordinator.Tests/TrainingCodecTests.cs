using System.Buffers;
using BnCluster.Core.Protocol;
using BnCluster.Core.Serialization;
using Xunit;

namespace BnCluster.Coordinator.Tests;

public sealed class TrainingCodecTests
{
    public static TheoryData<object> Messages() =>
    [
        new RegisterWorker(ProtocolInfo.Version, "job-1", "ab12", "node-a"),
        new WorkerRegistered(3, 4),
        new RegistrationRefused("dataset sha256 differs"),
        new WorkerDropped("unreachable (bncluster://worker@10.0.0.2:4000)"),
        new InputStatsRequest(2, 10, 90),
        new InputStatsReply(2, 90, [1.5, -2e300], [0, 1e-300]),
        new SetInputNormalization([0.5f, -1f], [1f, 2f], 1e-8f),
        new StartStep(17, 2, 3, 13, 1, [5, 9, 200_000], 16, [[1f, -2f], [3.5f]]),
        new StartStep(17, 2, 3, 13, 0, [], 16, null),
        new StartStep(17, 2, 3, 13, 0, [4], 16, null, SharedParameters: true),
        new StartStep(17, 2, 3, 13, 1, [4], 16, null, SharedParameters: true, SharedBatchNormRanks: 2),
        new StartStep(17, 2, 3, 13, 1, [4], 16, null, SharedBatchNormRanks: 2, UpdateStep: 17),
        new StartStep(17, 2, 3, 13, 1, [4], 16, null, SharedBatchNormRanks: 2, UpdateStep: 17, NextRows: [8, 1], NextAttempt: 2),
        new SharedMemoryOffer("/dev/shm/bncluster-1-w0.shm", [1, 2, 3, 255]),
        new SharedMemoryAnswer("/dev/shm/bncluster-1-w0.shm", false, "No such file"),
        new SharedMemoryAnswer("/dev/shm/bncluster-1-w0.shm", true, ""),
        new BatchNormExchangeOffer("/dev/shm/bncluster-1-bn.shm", [9, 8, 0], 3),
        new BatchNormExchangeOffer("/dev/shm/bncluster-1-bn.shm", [9, 8, 0], 3, "/dev/shm/bncluster-1-up.shm", [7]),
        new BatchNormExchangeAnswer("/dev/shm/bncluster-1-bn.shm", false, "another token"),
        new BnStats(17, 3, 1, 5, [0.1, 0.2], [3, 4]),
        new BnGlobal(17, 3, 1, 13, [0.1, double.Epsilon], [3, 4]),
        new BnGradStats(17, 3, 0, [1, 2], [-3, 4]),
        new BnGradGlobal(17, 3, 0, [1, 2], [-3, 4]),
        new StepGradients(17, 3, 12.25, 4, 5, [[0.25f, float.MaxValue], [], [float.NaN]], StepTimings.None),
        new StepGradients(17, 3, 12.25, 4, 5, [[1f]], new StepTimings(3.5, [new BnWait(0, false, 0.25), new BnWait(1, true, 1e-3)], 16, 2, 7.125, 3, 5_000_000_000)),
        new StepGradients(17, 3, 12.25, 4, 5, [], StepTimings.None, Shared: true),
        new StepAborted(17, 3, "worker 2 terminated"),
        new Evaluate(9, 0, 23, 40, [[1f]]),
        new Evaluate(9, 0, 23, 40, null),
        new EvalResult(9, 20.5, 11, 23),
    ];

    private static byte[] Encode(object message)
    {
        var buffer = new ArrayBufferWriter<byte>();
        Assert.True(TrainingMessageCodec.Instance.TryWrite(message, new MessagePackWriter(buffer)));
        return buffer.WrittenSpan.ToArray();
    }

    private static object Decode(byte[] bytes)
    {
        var reader = new MessagePackReader(bytes);
        var message = TrainingMessageCodec.Instance.Read(ref reader);
        Assert.True(reader.End, "bytes left after the message");
        return message;
    }

    [Theory]
    [MemberData(nameof(Messages))]
    public void Every_message_survives_a_round_trip(object message)
    {
        var bytes = Encode(message);
        var back = Decode(bytes);
        Assert.IsType(message.GetType(), back);
        Assert.Equal(bytes, Encode(back)); // the encoding writes every field, so equal bytes mean equal fields
        var header = new MessagePackReader(bytes);
        header.ReadArrayHeader();
        Assert.True(TrainingMessageCodec.Instance.Handles(header.ReadInt32()));
    }

    /// <summary>The step a StartStep announces is the coordinator's next StartStep when this one commits as it stands.</summary>
    [Fact]
    public void An_announced_step_is_the_next_version_and_update_step_and_only_the_same_work_confirms_it()
    {
        var start = new StartStep(17, 2, 3, 13, 1, [4, 6], 16, null, SharedBatchNormRanks: 2, UpdateStep: 9, NextRows: [8, 1], NextAttempt: 2);
        var next = start.Announced()!;
        Assert.Equal((18L, 2, 2, 13, 1, 17L, 2, 10L), (next.Step, next.Epoch, next.Attempt, next.GlobalBatchSize, next.Rank, next.ParametersVersion, next.SharedBatchNormRanks, next.UpdateStep));
        Assert.Equal([8, 1], next.Rows);
        Assert.Null(next.NextRows);
        var confirmation = new StartStep(18, 2, 2, 13, 1, [8, 1], 17, null, SharedBatchNormRanks: 2, UpdateStep: 10, NextRows: [3], NextAttempt: 1);
        Assert.True(next.SameWork(confirmation)); // (whatever it announces in turn)
        Assert.False(next.SameWork(confirmation with { Attempt = 3 }));
        Assert.False(next.SameWork(confirmation with { Rows = [8, 2] }));
        Assert.False(next.SameWork(confirmation with { Rank = 0 }));
        Assert.False(next.SameWork(confirmation with { SharedBatchNormRanks = 0, UpdateStep = 0 }));
        Assert.False(next.SameWork(confirmation with { Parameters = [[1f]] }));
        Assert.Null((start with { NextRows = null }).Announced());
    }

    /// <summary>Remoting leaves the messages that carry tensors to the connection's writer loop; the rest a sender may write itself.</summary>
    [Fact]
    public void Only_messages_with_tensors_may_be_large()
    {
        var codec = TrainingMessageCodec.Instance;
        Assert.True(codec.MayBeLarge(new StartStep(1, 1, 1, 4, 0, [1], 0, [[1f]])));
        Assert.False(codec.MayBeLarge(new StartStep(1, 1, 1, 4, 0, [1], 0, null, SharedParameters: true)));
        Assert.True(codec.MayBeLarge(new Evaluate(1, 0, 10, 3, [[1f]])));
        Assert.False(codec.MayBeLarge(new Evaluate(1, 0, 10, 3, null)));
        var timings = new StepTimings(1, [], 0, 0, 0);
        Assert.True(codec.MayBeLarge(new StepGradients(1, 1, 0.5, 1, 2, [[1f]], timings)));
        Assert.False(codec.MayBeLarge(new StepGradients(1, 1, 0.5, 1, 2, [], timings, Shared: true)));
        Assert.False(codec.MayBeLarge(new BnGlobal(1, 1, 0, 4, [0.5], [1.0])));
        Assert.False(codec.MayBeLarge("not a training message"));
    }

    [Fact]
    public void Tensors_and_statistics_travel_as_little_endian_bins_with_their_values()
    {
        var start = (StartStep)Decode(Encode(new StartStep(1, 1, 1, 4, 0, [3, 1], 0, [[1f, -2f]])));
        Assert.Equal([3, 1], start.Rows);
        Assert.Equal([1f, -2f], start.Parameters![0]);
        var stats = (BnStats)Decode(Encode(new BnStats(1, 1, 0, 2, [0.1], [0.2])));
        Assert.Equal(0.1, stats.Mean[0]);
        Assert.Equal(2, stats.Count);
        // [type 47, …]: the mean is a bin8 of 8 bytes holding 0.1 as little-endian float64.
        var bytes = Encode(new BnStats(1, 1, 0, 2, [0.1], [0.2]));
        int at = Array.IndexOf(bytes, (byte)0xc4);
        Assert.Equal(8, bytes[at + 1]);
        Assert.Equal(BitConverter.GetBytes(0.1), bytes[(at + 2)..(at + 10)]);
    }

    [Fact]
    public void A_sent_message_returns_its_tensors_to_the_pool_and_the_decoder_rents_them_again()
    {
        // A length no other test uses: the pool is process-wide.
        var tensor = TensorPool.Rent(4099);
        for (int i = 0; i < tensor.Length; i++) tensor[i] = i * 0.5f;
        var sent = new StepGradients(1, 1, 1, 1, 1, [tensor], StepTimings.None);
        var bytes = Encode(sent);
        TrainingMessageCodec.Instance.Sent(sent);
        Assert.Equal(1, TensorPool.Pooled(4099));
        Array.Fill(tensor, -1f); // (only a test touches a returned array) so the decoder must write every value
        var received = (StepGradients)Decode(bytes);
        Assert.Same(tensor, received.Tensors[0]); // decoded straight into the pooled array
        Assert.Equal(0, TensorPool.Pooled(4099));
        Assert.Equal(Enumerable.Range(0, 4099).Select(i => i * 0.5f), received.Tensors[0]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_sent_partial_BN_message_returns_its_arrays_and_the_decoder_rents_them_again(bool backward)
    {
        int length = backward ? 4111 : 4127; // lengths no other test uses: the pool is process-wide
        var a = TensorPool.RentDoubles(length);
        var b = TensorPool.RentDoubles(length);
        for (int i = 0; i < length; i++) (a[i], b[i]) = (i * 0.25, -i);
        object sent = backward ? new BnGradStats(1, 1, 0, a, b) : new BnStats(1, 1, 0, 9, a, b);
        var bytes = Encode(sent);
        TrainingMessageCodec.Instance.Sent(sent);
        Assert.Equal(2, TensorPool.PooledDoubles(length));
        Array.Fill(a, double.NaN); // (only a test touches a returned array) so the decoder must write every value
        Array.Fill(b, double.NaN);
        var (first, second) = Decode(bytes) switch
        {
            BnGradStats g => (g.SumDy, g.SumDyXhat),
            BnStats s => (s.Mean, s.M2),
            var other => throw new InvalidOperationException($"decoded {other}"),
        };
        Assert.Equal(0, TensorPool.PooledDoubles(length)); // decoded straight into the pooled arrays
        Assert.Equal(Enumerable.Range(0, length).Select(i => i * 0.25), first);
        Assert.Equal(Enumerable.Range(0, length).Select(i => (double)-i), second);
    }

    [Fact]
    public void A_sent_global_BN_reply_keeps_its_arrays_they_are_the_coordinators_buffers()
    {
        var mean = new double[4133];
        var m2 = new double[4133];
        var reply = new BnGlobal(1, 1, 0, 4, mean, m2);
        Encode(reply);
        TrainingMessageCodec.Instance.Sent(reply);
        TrainingMessageCodec.Instance.Sent(new BnGradGlobal(1, 1, 0, mean, m2));
        Assert.Equal(0, TensorPool.PooledDoubles(4133));
    }

    [Fact]
    public void Unknown_types_and_messages_of_other_protocols_are_not_claimed()
    {
        Assert.False(TrainingMessageCodec.Instance.TryWrite("a string", new MessagePackWriter(new ArrayBufferWriter<byte>())));
        Assert.False(TrainingMessageCodec.Instance.Handles(39));
        Assert.False(TrainingMessageCodec.Instance.Handles(60));
    }

    [Fact]
    public void A_message_with_the_wrong_field_count_or_cut_short_is_refused()
    {
        var buffer = new ArrayBufferWriter<byte>();
        var w = new MessagePackWriter(buffer);
        w.WriteArrayHeader(2);
        w.WriteInt32(52); // StepAborted needs 3 fields
        w.WriteInt64(1);
        var wrongCount = buffer.WrittenSpan.ToArray();
        var e = Assert.Throws<MessagePackException>(() => Decode(wrongCount));
        Assert.Contains("StepAborted", e.Message);

        var full = Encode(new StepGradients(1, 1, 1, 1, 1, [[1f, 2f]], StepTimings.None));
        Assert.Throws<MessagePackException>(() => Decode(full[..^3]));

        var unknown = new ArrayBufferWriter<byte>();
        var u = new MessagePackWriter(unknown);
        u.WriteArrayHeader(1);
        u.WriteInt32(58);
        Assert.Throws<MessagePackException>(() => Decode(unknown.WrittenSpan.ToArray()));
    }
}
