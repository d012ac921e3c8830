using System.Text.Json;
using BnCluster.Node.Logging;
using Serilog;
using Serilog.Events;
using Serilog.Formatting.Compact;
using Serilog.Parsing;

namespace BnCluster.Node.Tests;

/// <summary>Akka-style positional events (made up here; no Akka needed) as they reach the run log's sinks.</summary>
public sealed class PositionalTemplateRewritingSinkTests
{
    /// <summary>Events as the wrapped sink receives them, each also as its CLEF line.</summary>
    private static (IReadOnlyList<LogEvent> Events, string[] Clef) Through(Action<ILogger> log)
    {
        var captured = new CapturedLogEvents();
        using (var logger = new LoggerConfiguration().MinimumLevel.Debug()
                   .WriteTo.Sink(new PositionalTemplateRewritingSink(captured)).CreateLogger())
            log(logger);
        var clef = new StringWriter();
        captured.WriteJsonLines(clef, _ => true);
        return (captured.Events, clef.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public void An_akka_style_event_reaches_the_run_log_as_text_with_its_other_properties()
    {
        using var dir = new TempDir();
        string path = dir.File("log.jsonl");
        var console = new StringWriter();
        using (var log = RunLogging.Create(path, "node-a", console))
            log.ForContext("SourceContext", "Akka.Cluster.Cluster").ForContext("ActorPath", "akka://bn/system/cluster")
                .ForContext("LogSource", "Cluster (akka://bn)")
                .Information("Cluster Node [{0}] - Started up successfully", "akka.tcp://bn@10.0.0.1:4053");

        const string text = "Cluster Node [akka.tcp://bn@10.0.0.1:4053] - Started up successfully";
        using var doc = JsonDocument.Parse(Assert.Single(File.ReadAllLines(path)));
        var e = doc.RootElement;
        Assert.False(e.TryGetProperty("0", out _), e.ToString());
        Assert.Equal(text, e.GetProperty("@mt").GetString());
        Assert.Equal(text, ClefMessage.Render(e));
        Assert.Equal("Akka.Cluster.Cluster", e.GetProperty("SourceContext").GetString());
        Assert.Equal("akka://bn/system/cluster", e.GetProperty("ActorPath").GetString());
        Assert.Equal("Cluster (akka://bn)", e.GetProperty("LogSource").GetString());
        Assert.Equal("node-a", e.GetProperty("Node").GetString());
        Assert.DoesNotContain(text, console.ToString()); // Akka's information goes to the file only
    }

    [Fact]
    public void Akkas_warnings_show_on_the_console_its_information_does_not()
    {
        var console = new StringWriter();
        using (var log = RunLogging.Create(null, "node-a", console))
        {
            var akka = log.ForContext("SourceContext", "Akka.Remote.EndpointWriter");
            akka.Information("Remoting started; listening on addresses : [{0}]", "akka.tcp://bn@10.0.0.1:4053");
            akka.Warning("Association with remote system {0} has failed", "akka.tcp://bn@10.0.0.2:4053");
            log.Information("Worker {Worker} joined", 1);
        }
        string screen = console.ToString();
        Assert.DoesNotContain("Remoting started", screen);
        Assert.Contains("WRN Association with remote system akka.tcp://bn@10.0.0.2:4053 has failed", screen);
        Assert.Contains("INF Worker 1 joined", screen);
    }

    [Fact]
    public void Braces_in_the_values_are_escaped_so_the_template_renders_as_the_text()
    {
        var error = new InvalidOperationException("gone");
        var (events, clef) = Through(log => log.ForContext("ActorPath", "akka://bn/user/w")
            .Warning(error, "{0} took {1:F1} ms, {2,-4}|{3,3}|, missing {4}", "set {a}", 2.345, "x", 7));

        const string text = "set {a} took 2.3 ms, x   |  7|, missing {4}";
        var e = Assert.Single(events);
        Assert.Equal("set {{a}} took 2.3 ms, x   |  7|, missing {{4}}", e.MessageTemplate.Text);
        var token = Assert.Single(e.MessageTemplate.Tokens);
        Assert.Equal(text, Assert.IsType<TextToken>(token).Text);
        // Serilog's own parser reads the template back as that text alone.
        Assert.Equal(text, new MessageTemplateParser().Parse(e.MessageTemplate.Text).Render(e.Properties));
        Assert.Equal(text, e.RenderMessage());
        Assert.Equal(["ActorPath"], e.Properties.Keys);
        Assert.Equal(LogEventLevel.Warning, e.Level);
        Assert.Same(error, e.Exception);

        using var doc = JsonDocument.Parse(Assert.Single(clef));
        Assert.Equal(text, ClefMessage.Render(doc.RootElement));
        Assert.False(doc.RootElement.TryGetProperty("@r", out _));
        foreach (var name in new[] { "0", "1", "2", "3" }) Assert.False(doc.RootElement.TryGetProperty(name, out _), name);
    }

    [Fact]
    public void Named_templates_pass_through_untouched()
    {
        var captured = new CapturedLogEvents();
        var sink = new PositionalTemplateRewritingSink(captured);
        var template = new MessageTemplateParser().Parse("Step {Step} took {{0}} {ElapsedMs:F3} ms");
        var named = new LogEvent(DateTimeOffset.UnixEpoch, LogEventLevel.Debug, null, template,
            [new LogEventProperty("Step", new ScalarValue(3)), new LogEventProperty("ElapsedMs", new ScalarValue(1.5))]);

        sink.Emit(named);

        Assert.Same(named, Assert.Single(captured.Events));
    }

    [Fact]
    public void A_mixed_template_keeps_its_named_properties()
    {
        var (events, _) = Through(log => log.Information("{0} joined as {Role}", "node-3", "worker"));
        var e = Assert.Single(events);
        Assert.Equal("node-3 joined as worker", e.MessageTemplate.Text);
        Assert.Equal(["Role"], e.Properties.Keys);
    }
}
