using System.Text.Json;
using BnCluster.Node.Commands;
using BnCluster.Node.Logging;

namespace BnCluster.Node.Tests;

public sealed class LogSummaryTests
{
    /// <summary>A CLEF line as CompactJsonFormatter writes it: no @l for Information, properties at the top level.</summary>
    private static string Event(string time, string template, string properties, string level = "Debug", string renderings = "") =>
        $"{{\"@t\":\"2026-11-21T10:00:{time}Z\",\"@mt\":\"{template}\""
        + (renderings == "" ? "" : $",\"@r\":[{renderings}]")
        + (level == "Information" ? "" : $",\"@l\":\"{level}\"")
        + (properties == "" ? "" : "," + properties) + "}";

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
        Event("03.000", "Worker {Worker} on {Node} left", "\"Worker\":3,\"Node\":\"n3\",\"Phase\":\"membership\"", "Warning"),
        Event("04.000", "Step {Step} aborted: {Reason:l}", "\"Step\":2,\"Epoch\":1,\"Phase\":\"abort\",\"Reason\":\"worker 3 left\"", "Warning",
            renderings: "\"worker 3 left\""),
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
        Assert.Equal("Worker 3 on \"n3\" left", s.Membership[0].Message); // rendered from @mt: strings quoted, as Serilog does
        Assert.Single(s.Aborted);
        Assert.Equal(2, s.Aborted[0].Step);
        Assert.Equal("Step 2 aborted: worker 3 left", s.Aborted[0].Message); // the formatted token from @r
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
    [InlineData("{\"@l\":\"Debug\",\"@mt\":\"x\"}", 2, "no valid \"@t\" timestamp")]
    [InlineData("{\"@t\":\"yesterday\",\"@mt\":\"x\"}", 2, "no valid \"@t\" timestamp")]
    [InlineData("{\"@t\":\"2026-11-21T10:00:00Z\"}", 2, "no \"@mt\" message template")]
    [InlineData("{\"@t\":\"2026-11-21T10:00:00Z\",\"@mt\":\"x\",\"@l\":3}", 2, "\"@l\" is not a string")]
    // The Serilog JsonFormatter lines log.jsonl held before it was CLEF are not read.
    [InlineData("{\"Timestamp\":\"2026-11-21T10:00:00+00:00\",\"Level\":\"Debug\",\"MessageTemplate\":\"x\",\"Properties\":{}}", 2, "no valid \"@t\"")]
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
    public void Run_logger_writes_clef_that_the_summary_reads()
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
            log.Error(new InvalidOperationException("disk full"), "Saving {File} failed", "model.bnc");
        }

        var lines = File.ReadAllLines(path);
        Assert.Equal(18, lines.Length);
        foreach (var line in lines)
        {
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            foreach (var key in new[] { "@t", "@mt" })
                Assert.True(root.TryGetProperty(key, out _), key + " missing in " + line);
            foreach (var key in new[] { "Timestamp", "Level", "MessageTemplate", "RenderedMessage", "Properties" })
                Assert.False(root.TryGetProperty(key, out _), key + " (the old JsonFormatter layout) in " + line);
            Assert.Equal(JsonValueKind.String, root.GetProperty(LogEvents.Node).ValueKind); // the logger's, or the event's own
        }
        using (var joined = JsonDocument.Parse(lines[0]))
        {
            Assert.False(joined.RootElement.TryGetProperty("@l", out _)); // Information: no @l
            Assert.Equal("Worker 1 on node-a joined (1 members)", ClefMessage.Render(joined.RootElement));
        }
        using (var phase = JsonDocument.Parse(lines[2]))
        {
            var p = phase.RootElement;
            Assert.Equal("Debug", p.GetProperty("@l").GetString());
            Assert.Equal(LogEvents.StepPhaseTemplate, p.GetProperty("@mt").GetString());
            Assert.Equal(1, p.GetProperty("Step").GetInt32());
            Assert.Equal(1, p.GetProperty("Worker").GetInt32());
            Assert.Equal("compute", p.GetProperty("Phase").GetString());
            Assert.Equal(10, p.GetProperty("ElapsedMs").GetDouble());
            Assert.Equal(["node-a", "compute", "10.000"], p.GetProperty("@r").EnumerateArray().Select(r => r.GetString()));
            Assert.Equal("Step 1 epoch 1 worker 1 on node-a: compute 10.000 ms", ClefMessage.Render(p));
        }
        using (var error = JsonDocument.Parse(lines[^1]))
        {
            Assert.Equal("Error", error.RootElement.GetProperty("@l").GetString());
            Assert.StartsWith("System.InvalidOperationException: disk full", error.RootElement.GetProperty("@x").GetString());
        }

        var s = LogSummary.Read(path);
        Assert.Equal(3, s.CommittedSteps);
        Assert.Equal(30, s.Workers.Single(w => w.Worker == "1").ComputeMs);
        Assert.Equal(15, s.Workers.Single(w => w.Worker == "1").WaitingMs);
        Assert.Equal(45, s.Workers.Single(w => w.Worker == "2").ComputeMs);
        Assert.Equal("2", s.SlowestWorker!.Value.Slowest.Worker);
        Assert.Equal(3, s.Membership.Count);
        Assert.Equal("Worker 2 on node-b left: heartbeat lost (1 members)", s.Membership[2].Message);
        Assert.Single(s.Aborted);
        Assert.Equal(4, s.Aborted[0].Step);
        Assert.Equal("Step 4 epoch 1 aborted: worker 2 left", s.Aborted[0].Message);

        // The console got the Information+ events only, as plain lines.
        var consoleLines = console.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(7, consoleLines.Length); // 6 events, and the error's exception on a line of its own
        Assert.Contains(consoleLines, l => l.Contains("ERR Saving model.bnc failed"));
        Assert.Contains(consoleLines, l => l.Contains("Worker 2 on node-b left: heartbeat lost"));
        Assert.DoesNotContain(consoleLines, l => l.Contains('\u001b'));
    }
}
