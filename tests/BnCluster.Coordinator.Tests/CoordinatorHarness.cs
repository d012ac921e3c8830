using System.Collections.Concurrent;
using Akka.Actor;
using BnCluster.Collectives;
using BnCluster.Coordinator;
using BnCluster.Core.Model;
using BnCluster.Core.Optimizers;
using BnCluster.Coordinator.Messages;
using BnCluster.Core.Training;
using Akka.TestKit;
using Serilog;
using Serilog.Core;
using Serilog.Events;

namespace BnCluster.Coordinator.Tests;

internal sealed class CollectingSink : ILogEventSink
{
    public ConcurrentQueue<LogEvent> Events { get; } = new();
    public void Emit(LogEvent logEvent) => Events.Enqueue(logEvent);
}

/// <summary>
/// A coordinator over a tiny network (2 inputs → 3 hidden with BN → 2 classes; 8 train rows, 4 test rows,
/// batch 4) with TestProbes standing in for workers.
/// </summary>
internal sealed class CoordinatorHarness
{
    public static readonly NetworkSpec Spec = new(2, [3], 2, Activation.Relu, BatchNormPlacement.Before);
    public const int BnFeatures = 3;

    private readonly Akka.TestKit.Xunit2.TestKit _kit;

    public CoordinatorHarness(Akka.TestKit.Xunit2.TestKit kit, int workers, int minWorkers = 1, TimeSpan? stepTimeout = null, long maxSteps = 2, string sha = "abc",
        IProgress<EpochMetrics>? epochProgress = null)
    {
        _kit = kit;
        var trainer = new TrainerOptions(Spec, new OptimizerSettings(OptimizerKind.Gd, 0.1f), BatchSize: 4, Epochs: 1, MaxSteps: maxSteps, Seed: 3);
        // The message protocol: the probes play workers that take no shared-memory file.
        var options = new ClusterTrainingOptions(trainer, workers, minWorkers, stepTimeout ?? TimeSpan.FromSeconds(30), "job", sha) { SharedMemory = false };
        var log = new LoggerConfiguration().MinimumLevel.Debug().WriteTo.Sink(Sink).CreateLogger();
        Coordinator = kit.Sys.ActorOf(Props.Create(() => new CoordinatorActor(options, new ClusterDataShape(8, 4, 2), Completion, log, epochProgress)), "coordinator");
    }

    public IActorRef Coordinator { get; }
    public TaskCompletionSource<TrainingResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public CollectingSink Sink { get; } = new();

    public TestProbe Join(string name, string sha = "abc")
    {
        var probe = _kit.CreateTestProbe(name);
        Coordinator.Tell(new RegisterWorker(ProtocolInfo.Version, "job", sha, name), probe.Ref);
        probe.ExpectMsg<WorkerRegistered>();
        return probe;
    }

    /// <summary>Answers the input-statistics round for every probe and swallows the normalization.</summary>
    public static void AnswerInputStats(params TestProbe[] probes)
    {
        var requests = probes.Select(p => p.ExpectMsg<InputStatsRequest>()).ToArray();
        for (int i = 0; i < probes.Length; i++)
            probes[i].Reply(new InputStatsReply(requests[i].Round, requests[i].Count, [0.5, -0.5], [requests[i].Count, requests[i].Count]));
        foreach (var p in probes) p.ExpectMsg<SetInputNormalization>();
    }

    public static BnStats Stats(StartStep s, long? count = null, double value = 1) =>
        new(s.Step, s.Attempt, 0, count ?? s.Rows.Length, Filled(BnFeatures, value), Filled(BnFeatures, 2));

    public static BnGradStats GradStats(StartStep s, double value = 0.25) =>
        new(s.Step, s.Attempt, 0, Filled(BnFeatures, value), Filled(BnFeatures, value));

    public static StepGradients Gradients(StartStep s, float value = 0.01f)
    {
        var shape = new Parameters(Spec);
        var tensors = shape.Trainable.Select(t => Enumerable.Repeat(value, t.Values.Length).ToArray()).ToArray();
        return new StepGradients(s.Step, s.Attempt, s.Rows.Length * 0.7, s.Rows.Length / 2, s.Rows.Length, tensors, StepTimings.None);
    }

    /// <summary>Two workers joined, through the input statistics, and their first StartStep.</summary>
    public (TestProbe A, TestProbe B, StartStep Sa, StartStep Sb) StartTwo()
    {
        var a = Join("a");
        var b = Join("b");
        AnswerInputStats(a, b);
        return (a, b, a.ExpectMsg<StartStep>(), b.ExpectMsg<StartStep>());
    }

    /// <summary>Plays the BN reductions of a step two probes run, up to their gradients.</summary>
    public static void ReduceBatchNorm(TestProbe a, StartStep sa, TestProbe b, StartStep sb)
    {
        a.Reply(Stats(sa)); b.Reply(Stats(sb));
        a.ExpectMsg<BnGlobal>(); b.ExpectMsg<BnGlobal>();
        a.Reply(GradStats(sa)); b.Reply(GradStats(sb));
        a.ExpectMsg<BnGradGlobal>(); b.ExpectMsg<BnGradGlobal>();
    }

    /// <summary>Plays the rest of a step one probe runs alone.</summary>
    public static void FinishAlone(TestProbe probe, StartStep start)
    {
        probe.Reply(Stats(start));
        probe.ExpectMsg<BnGlobal>();
        probe.Reply(GradStats(start));
        probe.ExpectMsg<BnGradGlobal>();
        probe.Reply(Gradients(start));
    }

    private static double[] Filled(int n, double v) => Enumerable.Repeat(v, n).ToArray();
}
