using System.Text.Json;
using BnCluster.Node.Commands;
using BnCluster.Node.Logging;

namespace BnCluster.Node.Tests;

public sealed class LogSummaryTests
{
    private static string Event(string time, string template, string properties, string level = "Debug") =>
        $"{{\"Timestamp\":\"2026-11-21T10:00:{time}+00:00\",\"Level\":\"{level}\",\"MessageTemplate\":\"{template}\",\"RenderedMessage\":\"rendered {template}\",\"Properties\":{{{properties}}}}}";

    /// <summary>
    /// Two committed steps (1 and 2) plus one aborted attempt, 10 s apart; worker 1 computes 30+50 ms,
    /// worker 2 computes 10+20 ms; one member leaves.
    /// </summary>
    private static string SyntheticLog() => string.Join("\n",
        Event("00.000", "start", "\"Node\":\"coordinator\"", "Information"),
        Event("01.000", "phase", "\"Step\":1,\"Worker\":1,\"Phase\":\"compute\",\"ElapsedMs\":30.0"),
        Event("01.100", "phase", "\"Step\":1,\"Worker\":2,\"Phase\":\"compute\",\"ElapsedMs\":10"),
        Event("01.200", "phase", "\"Step\":1,\"Worker\":2,\"Phase\":\"bn-wait\",\"ElapsedMs\":20"),
        Event("01.300", "phase", "\"Step\":1,\"Worker\":1,\"Phase\":\"grad-exchange\",\"ElapsedMs\":4"),
        Event("01.400", "phase", "\"Step\":1,\"Worker\":2,\"Phase\":\"grad-exchange\",\"ElapsedMs\":5"),
        Event("01.500", "commit", "\"Step\":1,\"Epoch\":1,\"Phase\":\"commit\",\"Loss\":2.3"),
        "",
        Event("02.000", "phase", "\"Step\":2,\"Worker\":1,\"Phase\":\"compute\",\"ElapsedMs\":50"),
        Event("02.100", "phase", "\"Step\":2,\"Worker\":2,\"Phase\":\"compute\",\"ElapsedMs\":20"),
        Event("03.000", "left", "\"Worker\":3,\"Node\":\"n3\",\"Phase\":\"membership\"", "Warning"),
        Event("04.000", "aborted", "\"Step\":2,\"Epoch\":1,\"Phase\":\"abort\",\"Reason\":\"worker 3 left\"", "Warning"),
        Event("05.000", "commit", "\"Step\":2,\"Epoch\":1,\"Phase\":\"commit\"") ,
        Event("10.000", "done", "", "Information")) + "\n";

    [Fact]
    public void Summary_figures_of_a_synthetic_log()
    {
        var s = LogSummary.Read(new StringReader(SyntheticLog()), "log.jsonl");
        Assert.Equal(13, s.Events);
        Assert.Equal(10.0, s.Seconds, 9);
        Assert.Equal(2, s.CommittedSteps);
        Assert.Equal(0.2, s.StepsPerSecond, 9);
        Assert.Equal(new[] { "1", "2" }, s.Workers.Select(w => w.Worker).ToArray());
        Assert.Equal(80, s.Workers[0].ComputeMs);
        Assert.Equal(4, s.Workers[0].WaitingMs);
        Assert.Equal(30, s.Workers[1].ComputeMs);
        Assert.Equal(25, s.Workers[1].WaitingMs);
        var (slow, fast) = s.SlowestWorker!.Value;
        Assert.Equal(("1", "2"), (slow.Worker, fast.Worker));
        Assert.Single(s.Membership);
        Assert.Equal("rendered left", s.Membership[0].Message);
        Assert.Single(s.Aborted);
        Assert.Equal(2, s.Aborted[0].Step);
    }

    [Fact]
    public void Text_and_json_output()
    {
        var s = LogSummary.Read(new StringReader(SyntheticLog()), "log.jsonl");
        var text = new StringWriter();
        s.WriteText(text);
        string t = text.ToString();
        Assert.Contains("2 committed, 0.20 steps/s, 1 aborted", t);
        Assert.Contains("slowest worker: 1, compute 80.0 ms, +50.0 ms (+166.7%) over the fastest, worker 2", t);
        Assert.Contains("membership changes: 1", t);

        var json = new StringWriter();
        s.WriteJson(json);
        var lines = json.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        using var doc = JsonDocument.Parse(lines[0]);
        var root = doc.RootElement;
        Assert.Equal(2, root.GetProperty("committed_steps").GetInt64());
        Assert.Equal(0.2, root.GetProperty("steps_per_second").GetDouble(), 9);
        Assert.Equal(50, root.GetProperty("slowest_worker").GetProperty("excess_ms").GetDouble());
        Assert.Equal(20, root.GetProperty("workers")[1].GetProperty("phases_ms").GetProperty("bn-wait").GetDouble());
        Assert.Equal(2, root.GetProperty("aborted_steps")[0].GetProperty("step").GetInt64());
    }

    [Theory]
    [InlineData("{not json", 2, "not valid JSON")]
    [InlineData("[1,2]", 2, "not a JSON object")]
    [InlineData("{\"Level\":\"Debug\"}", 2, "no valid \"Timestamp\"")]
    [InlineData("{\"Timestamp\":\"2026-11-21T10:00:00Z\"}", 2, "no \"MessageTemplate\"")]
    public void Bad_line_is_named_by_number(string badLine, int lineNumber, string what)
    {
        string log = Event("00.000", "ok", "") + "\n" + badLine + "\n";
        var ex = Assert.Throws<LogFormatException>(() => LogSummary.Read(new StringReader(log), "run/log.jsonl"));
        Assert.StartsWith($"run/log.jsonl line {lineNumber}: {what}", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void Logs_command_prints_summary_or_one_line_error()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("log.jsonl"), SyntheticLog());
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.Equal(0, Cli.Run(["logs", dir.Path, "--json"], stdout, stderr)); // a run folder works too
        Assert.Equal("", stderr.ToString());
        using (var doc = JsonDocument.Parse(stdout.ToString())) Assert.Equal(13, doc.RootElement.GetProperty("events").GetInt32());

        File.AppendAllText(dir.File("log.jsonl"), "garbage\n");
        stdout = new StringWriter();
        stderr = new StringWriter();
        Assert.Equal(2, Cli.Run(["logs", dir.File("log.jsonl")], stdout, stderr));
        Assert.StartsWith($"bncluster: {dir.File("log.jsonl")} line 15: not valid JSON", stderr.ToString());
        Assert.Single(stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public void Run_logger_writes_serilog_json_that_the_summary_reads()
    {
        using var dir = new TempDir();
        string path = dir.File("log.jsonl");
        var console = new StringWriter();
        using (var log = RunLogging.Create(path, "node-a", console))
        {
            log.WorkerJoined(1, "node-a", 1);
            log.WorkerJoined(2, "node-b", 2);
            for (int step = 1; step <= 3; step++)
            {
                log.StepPhase(step, 1, 1, "node-a", LogEvents.Phases.Compute, 10);
                log.StepPhase(step, 1, 2, "node-b", LogEvents.Phases.Compute, 15);
                log.StepPhase(step, 1, 1, "node-a", LogEvents.Phases.BnWait, 5, layer: 1);
                log.StepCommitted(step, 1, 2.0 / step, 0.5, 40);
            }
            log.StepAborted(4, 1, "worker 2 left");
            log.WorkerLeft(2, "node-b", "heartbeat lost", 1);
            log.EpochCompleted(new EpochMetrics(1, 3, 0.7, 0.8, 0.75, 0.79, 900, 1.5));
        }

        var lines = File.ReadAllLines(path);
        Assert.Equal(17, lines.Length);
        foreach (var line in lines)
        {
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            foreach (var key in new[] { "Timestamp", "Level", "MessageTemplate", "RenderedMessage", "Properties" })
                Assert.True(root.TryGetProperty(key, out _), key + " missing in " + line);
        }
        using (var phase = JsonDocument.Parse(lines[2]))
        {
            var p = phase.RootElement.GetProperty("Properties");
            Assert.Equal(1, p.GetProperty("Step").GetInt32());
            Assert.Equal(1, p.GetProperty("Worker").GetInt32());
            Assert.Equal("compute", p.GetProperty("Phase").GetString());
            Assert.Equal(10, p.GetProperty("ElapsedMs").GetDouble());
            Assert.Equal("node-a", p.GetProperty("Node").GetString());
        }

        var s = LogSummary.Read(path);
        Assert.Equal(3, s.CommittedSteps);
        Assert.Equal(30, s.Workers.Single(w => w.Worker == "1").ComputeMs);
        Assert.Equal(15, s.Workers.Single(w => w.Worker == "1").WaitingMs);
        Assert.Equal(45, s.Workers.Single(w => w.Worker == "2").ComputeMs);
        Assert.Equal("2", s.SlowestWorker!.Value.Slowest.Worker);
        Assert.Equal(3, s.Membership.Count);
        Assert.Single(s.Aborted);
        Assert.Equal(4, s.Aborted[0].Step);

        // The console got the Information+ events only, as plain lines.
        var consoleLines = console.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(5, consoleLines.Length);
        Assert.Contains(consoleLines, l => l.Contains("Worker 2 on node-b left: heartbeat lost"));
        Assert.DoesNotContain(consoleLines, l => l.Contains('\u001b'));
    }
}
