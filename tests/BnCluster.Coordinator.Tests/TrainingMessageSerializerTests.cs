using System.Buffers;
using Akka.Serialization;
using BnCluster.Collectives;
using BnCluster.Coordinator.Messages;
using MessagePack;
using Xunit;

namespace BnCluster.Coordinator.Tests;

/// <summary>The training protocol on the wire: Akka picks <see cref="TrainingMessageSerializer"/> by cluster.hocon's binding.</summary>
public sealed class TrainingMessageSerializerTests() : Akka.TestKit.Xunit2.TestKit(ClusterConfig.InProcess())
{
    public static TheoryData<object> Messages() =>
    [
        new RegisterWorker(ProtocolInfo.Version, "job-1", "ab12", "node-a"),
        new WorkerRegistered(3, 4),
        new RegistrationRefused("dataset sha256 differs"),
        new WorkerDropped("unreachable (akka.tcp://bncluster@10.0.0.2:4000)"),
        new JobQuery(ProtocolInfo.Version, "ab12", "akka.tcp://bncluster@10.0.0.2:4000"),
        new JobDescription(ProtocolInfo.Version, "bncluster", "ab12", 7, null, [16, 8], "Relu", "Before", 1e-5f, 0.1f),
        new JobDescription(ProtocolInfo.Version, "bncluster", "ab12", 7, "label", [], "Tanh", "None", 1e-3f, 0.2f),
        new TrainingDone(true, ""),
        new TrainingDone(false, "worker 1 sent a non-finite gradient twice"),
        new WorkerFailed("step 3 attempt 1: out of memory"),
        new InputStatsRequest(2, 10, 90),
        new InputStatsReply(2, 90, [1.5, -2e300], [0, 1e-300]),
        new SetInputNormalization([0.5f, -1f], [1f, 2f], 1e-8f),
        new StartStep(17, 2, 3, 13, 1, [5, 9, 200_000], 16, [[1f, -2f], [3.5f]]),
        new StartStep(17, 2, 3, 13, 0, [], 16, null),
        new StartStep(17, 2, 3, 13, 0, [4], 16, null, SharedParameters: true),
        new StartStep(17, 2, 3, 13, 1, [4], 16, null, SharedParameters: true, SharedBatchNormRanks: 2),
        new StartStep(17, 2, 3, 13, 1, [4], 16, null, SharedBatchNormRanks: 2, UpdateStep: 17, NextRows: [8, 1], NextAttempt: 2),
        new SharedMemoryOffer("/dev/shm/bncluster-1-w0.shm", [1, 2, 3, 255]),
        new SharedMemoryAnswer("/dev/shm/bncluster-1-w0.shm", false, "No such file"),
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
        new StatusQuery(ProtocolInfo.Version),
        new TrainingStatus("training", 2, 5, 37, 0, 7, 15, 12345.5, 0.25, double.NaN, 2, [new RosterEntry(0, "akka.tcp://bncluster@10.0.0.2:4000")], 3.5),
        new ClusterStatus(ProtocolInfo.Version, "akka.tcp://bncluster@10.0.0.1:7077",
            [new MemberEntry("akka.tcp://bncluster@10.0.0.1:7077", ["coordinator"], "Up", true), new MemberEntry("akka.tcp://bncluster@10.0.0.2:4000", ["worker"], "Leaving", false)],
            new TrainingStatus("waiting for workers", 0, 5, 0, 100, 0, 0, 0, double.NaN, double.NaN, 2, [], 0)),
        new ClusterStatus(ProtocolInfo.Version, "akka.tcp://bncluster@10.0.0.1:7077", [], null),
    ];

    private SerializerWithStringManifest Serializer(object message) =>
        Assert.IsType<TrainingMessageSerializer>(Sys.Serialization.FindSerializerFor(message));

    private object RoundTrip(object message, out byte[] bytes)
    {
        var serializer = Serializer(message);
        string manifest = serializer.Manifest(message);
        bytes = serializer.ToBinary(message);
        return serializer.FromBinary(bytes, manifest);
    }

    [Theory]
    [MemberData(nameof(Messages))]
    public void Every_message_survives_the_wire_with_every_field(object message)
    {
        byte[] expected = TrainingMessageSerializer.Serialize(message); // (before ToBinary returns its pooled arrays)
        var back = RoundTrip(message, out byte[] bytes);
        Assert.IsType(message.GetType(), back);
        Assert.Equal(expected, bytes);
        Assert.Equal(bytes, TrainingMessageSerializer.Serialize(back)); // every field is written, so equal bytes mean equal fields
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

    [Fact]
    public void Tensors_and_statistics_travel_as_little_endian_bins_of_their_values()
    {
        var start = (StartStep)RoundTrip(new StartStep(1, 1, 1, 4, 0, [3, 1], 0, [[1f, -2f]]), out _);
        Assert.Equal([3, 1], start.Rows);
        Assert.Equal([1f, -2f], start.Parameters![0]);
        var bytes = TrainingMessageSerializer.Serialize(new BnStats(1, 1, 0, 2, [0.1], [0.2]));
        // [step, attempt, layer, count, mean, m2]: the mean is a bin8 of 8 bytes holding 0.1 as little-endian float64.
        var reader = new MessagePackReader(bytes);
        Assert.Equal(6, reader.ReadArrayHeader());
        for (int i = 0; i < 4; i++) reader.Skip();
        Assert.Equal(MessagePackType.Binary, reader.NextMessagePackType);
        Assert.Equal(BitConverter.GetBytes(0.1), reader.ReadBytes()!.Value.ToArray());
        var tensor = TrainingMessageSerializer.Serialize(new SetInputNormalization([1.5f, -2f], [1f, 1f], 0));
        reader = new MessagePackReader(tensor);
        reader.ReadArrayHeader();
        Assert.Equal([.. BitConverter.GetBytes(1.5f), .. BitConverter.GetBytes(-2f)], reader.ReadBytes()!.Value.ToArray());
    }

    [Fact]
    public void A_sent_message_returns_its_tensors_to_the_pool_and_the_receiver_rents_them_again()
    {
        // A length no other test uses: the pool is process-wide.
        var tensor = TensorPool.Rent(4099);
        for (int i = 0; i < tensor.Length; i++) tensor[i] = i * 0.5f;
        var sent = new StepGradients(1, 1, 1, 1, 1, [tensor], StepTimings.None);
        var serializer = Serializer(sent);
        var bytes = serializer.ToBinary(sent);
        Assert.Equal(1, TensorPool.Pooled(4099));
        Array.Fill(tensor, -1f); // (only a test touches a returned array) so the receiver must write every value
        var received = (StepGradients)serializer.FromBinary(bytes, serializer.Manifest(sent));
        Assert.Same(tensor, received.Tensors[0]); // read straight into the pooled array
        Assert.Equal(0, TensorPool.Pooled(4099));
        Assert.Equal(Enumerable.Range(0, 4099).Select(i => i * 0.5f), received.Tensors[0]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_sent_partial_BN_message_returns_its_arrays_and_the_receiver_rents_them_again(bool backward)
    {
        int length = backward ? 4111 : 4127; // lengths no other test uses: the pool is process-wide
        var a = TensorPool.RentDoubles(length);
        var b = TensorPool.RentDoubles(length);
        for (int i = 0; i < length; i++) (a[i], b[i]) = (i * 0.25, -i);
        object sent = backward ? new BnGradStats(1, 1, 0, a, b) : new BnStats(1, 1, 0, 9, a, b);
        var serializer = Serializer(sent);
        string manifest = serializer.Manifest(sent);
        var bytes = serializer.ToBinary(sent);
        Assert.Equal(2, TensorPool.PooledDoubles(length));
        Array.Fill(a, double.NaN); // (only a test touches a returned array) so the receiver must write every value
        Array.Fill(b, double.NaN);
        var (first, second) = serializer.FromBinary(bytes, manifest) switch
        {
            BnGradStats g => (g.SumDy, g.SumDyXhat),
            BnStats s => (s.Mean, s.M2),
            var other => throw new InvalidOperationException($"decoded {other}"),
        };
        Assert.Equal(0, TensorPool.PooledDoubles(length));
        Assert.Equal(Enumerable.Range(0, length).Select(i => i * 0.25), first);
        Assert.Equal(Enumerable.Range(0, length).Select(i => (double)-i), second);
    }

    [Fact]
    public void A_sent_global_BN_reply_keeps_its_arrays_they_are_the_coordinators_buffers()
    {
        var mean = new double[4133];
        var m2 = new double[4133];
        var reply = new BnGlobal(1, 1, 0, 4, mean, m2);
        Serializer(reply).ToBinary(reply);
        Serializer(reply).ToBinary(new BnGradGlobal(1, 1, 0, mean, m2));
        Assert.Equal(0, TensorPool.PooledDoubles(4133));
    }

    [Fact]
    public void A_frame_cut_short_of_another_shape_or_of_an_unknown_type_is_refused_with_an_exception()
    {
        var serializer = Serializer(new StepAborted(1, 1, ""));
        var full = TrainingMessageSerializer.Serialize(new StepGradients(1, 1, 1, 1, 1, [[1f, 2f]], StepTimings.None));
        Assert.Throws<MessagePackSerializationException>(() => serializer.FromBinary(full[..^3], nameof(StepGradients)));
        // A bin that is not a whole number of floats.
        var odd = TrainingMessageSerializer.Serialize(new SetInputNormalization([1f], [1f], 0));
        odd[2] = 3; // bin8 length 4 → 3
        Assert.Throws<MessagePackSerializationException>(() => serializer.FromBinary(odd[..^1], nameof(SetInputNormalization)));
        Assert.Throws<MessagePackSerializationException>(() => serializer.FromBinary([0xc1, 0x00], nameof(StepAborted)));
        Assert.ThrowsAny<Exception>(() => serializer.FromBinary(TrainingMessageSerializer.Serialize(new StepAborted(1, 1, "x")), "NoSuchMessage"));
    }
}
