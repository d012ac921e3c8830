using BnCluster.Coordinator.Messages;
using BnCluster.Node.Backends;
using BnCluster.Node.Commands;

namespace BnCluster.Node.Tests;

/// <summary>`bncluster status`: its command line, and what it prints of an answer.</summary>
public sealed class StatusCommandTests
{
    private static (int Exit, StatusOptions? Options, string Error) Parse(params string[] args)
    {
        StatusOptions? seen = null;
        var backends = new CliBackends { Status = (o, _, _) => { seen = o; return Task.FromResult(0); } };
        var stderr = new StringWriter();
        int exit = Cli.Run(["status", .. args], TextWriter.Null, stderr, backends);
        return (exit, seen, stderr.ToString().Trim());
    }

    [Fact]
    public void Watch_takes_an_optional_number_of_seconds_before_or_after_the_address()
    {
        Assert.Equal(new StatusOptions(new HostPort("10.0.0.1", 7077), null, false, TimeSpan.FromSeconds(10)), Parse("10.0.0.1:7077").Options);
        Assert.Equal(TimeSpan.FromSeconds(StatusOptions.DefaultWatchSeconds), Parse("10.0.0.1:7077", "--watch").Options!.Watch);
        Assert.Equal(TimeSpan.FromSeconds(StatusOptions.DefaultWatchSeconds), Parse("--watch", "10.0.0.1:7077").Options!.Watch);
        Assert.Equal(TimeSpan.FromSeconds(5), Parse("--watch", "5", "10.0.0.1:7077").Options!.Watch);
        var all = Parse("[::1]:7077", "--watch", "0.5", "--json", "--timeout", "2").Options!;
        Assert.Equal((new HostPort("::1", 7077), TimeSpan.FromSeconds(0.5), true, TimeSpan.FromSeconds(2)), (all.Coordinator, all.Watch, all.Json, all.Timeout));
    }

    [Theory]
    [InlineData("bncluster: HOST:PORT: \"10.0.0.1\" is not HOST:PORT with a port in 1..65535", "10.0.0.1")]
    [InlineData("bncluster: HOST:PORT: \"10.0.0.1:0\" is not HOST:PORT with a port in 1..65535", "10.0.0.1:0")]
    [InlineData("bncluster: --watch: 0.1 is not in [0.2, 86400] seconds", "10.0.0.1:7077", "--watch", "0.1")]
    [InlineData("bncluster: --timeout: 0 is not in (0, 3600]", "10.0.0.1:7077", "--timeout", "0")]
    [InlineData("bncluster: HOST:PORT: missing argument (see bncluster status --help)")]
    [InlineData("bncluster: HOST:PORT: missing argument (see bncluster status --help)", "--watch", "3")]
    [InlineData("bncluster: HOST:PORT: given twice (see bncluster status --help)", "--watch", "10.0.0.1:7077", "10.0.0.2:7077")]
    [InlineData("bncluster: --watch: \"1.2.3\" is neither a number of seconds nor HOST:PORT", "--watch", "1.2.3")]
    public void A_bad_address_or_value_is_one_line_and_exit_2(string error, params string[] args)
    {
        var (exit, options, stderr) = Parse(args);
        Assert.Equal(2, exit);
        Assert.Null(options);
        Assert.Equal(error, stderr);
    }

    private static readonly ClusterStatus Answer = new(ProtocolInfo.Version, "akka.tcp://bncluster@10.0.0.1:7077",
        [
            new MemberEntry("akka.tcp://bncluster@10.0.0.1:7077", ["coordinator"], "Up", true),
            new MemberEntry("akka.tcp://bncluster@10.0.0.2:4000", ["worker"], "Up", false),
        ],
        new TrainingStatus("training", 2, 5, 37, 0, 7, 15, 12345.6, 0.41234, double.NaN, 1, [new RosterEntry(0, "akka.tcp://bncluster@10.0.0.2:4000")], 12.34));

    [Fact]
    public void The_text_has_a_line_for_the_run_and_one_per_member_naming_its_worker()
    {
        var lines = StatusBackend.FormatText(Answer).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("coordinator akka.tcp://bncluster@10.0.0.1:7077", lines[0]);
        Assert.Equal("  training: epoch 2/5, step 37 (batch 7/15 of the epoch), 12346 samples/s, last loss 0.4123, accuracy -, 1 worker(s) of 1 needed, 12.3 s since the coordinator started", lines[1]);
        Assert.Equal("  2 member(s):", lines[2]);
        Assert.Equal("    akka.tcp://bncluster@10.0.0.1:7077  coordinator  Up        reachable", lines[3]);
        Assert.Equal("    akka.tcp://bncluster@10.0.0.2:4000  worker       Up        UNREACHABLE  worker 0", lines[4]);
        Assert.Contains("did not answer", StatusBackend.FormatText(Answer with { Training = null }));
    }

    [Fact]
    public void The_json_is_one_object_with_null_for_what_is_not_known()
    {
        string json = StatusBackend.FormatJson(Answer);
        Assert.DoesNotContain('\n', json);
        var root = System.Text.Json.JsonDocument.Parse(json).RootElement;
        Assert.Equal(2, root.GetProperty("members").GetArrayLength());
        Assert.False(root.GetProperty("members")[1].GetProperty("reachable").GetBoolean());
        var training = root.GetProperty("training");
        Assert.Equal(37, training.GetProperty("step").GetInt64());
        Assert.Equal(System.Text.Json.JsonValueKind.Null, training.GetProperty("last_accuracy").ValueKind);
        Assert.Equal(System.Text.Json.JsonValueKind.Null, System.Text.Json.JsonDocument.Parse(StatusBackend.FormatJson(Answer with { Training = null })).RootElement.GetProperty("training").ValueKind);
    }
}
