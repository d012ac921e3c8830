using System.Text.RegularExpressions;
using Serilog.Events;
using Serilog.Parsing;
using Spectre.Console;

namespace BnCluster.Node.Tests;

public sealed class TrainingProgressTests
{
    [Fact]
    public void Plain_mode_prints_occasional_batch_lines_and_leaves_the_epoch_line_to_the_log()
    {
        var output = new StringWriter();
        var now = TimeSpan.Zero;
        using (var progress = new TrainingProgress(output, interactive: false, epochs: 2, TimeSpan.FromSeconds(10), () => now))
        {
            for (int b = 1; b <= 5; b++)
            {
                now += TimeSpan.FromSeconds(3); // a batch line at 12 s (b = 4), none before
                progress.OnBatch(1, b, b, 5, 1.0 / b, 0.5, 2000);
            }
            progress.OnEpoch(new EpochMetrics(1, 5, 0.25, 0.9, double.NaN, 0.875, 1234.4, 15));
            now += TimeSpan.FromSeconds(9); // 9 s after the epoch, not after the last batch line: none
            progress.OnBatch(2, 6, 1, 5, 0.5, 0.5, 2000);
        }
        var lines = output.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(new[] { "epoch 1/2 step 4 (4/5): loss 0.2500 accuracy 50.00% 2000 samples/s" }, lines);
    }

    [Fact]
    public void Row_shows_step_eta_loss_accuracy_and_samples_per_second()
    {
        var running = new TrainingProgress.Bar(2, 7, 14, TimeSpan.FromSeconds(4.25), null, 0.43214, 0.875, 5123.4);
        Assert.Equal("epoch 2/8 [yellow]━━━━━━━━━━━━━━━━━━━━[/][grey]━━━━━━━━━━━━━━━━━━━━[/] 7/14 ETA 4.2s loss 0.4321 acc 87.50% 5123 samples/s",
            TrainingProgress.Row(running, 8, unicode: true, width: 200));
        var finished = running with { Step = 14, Remaining = null, Took = TimeSpan.FromSeconds(75) };
        Assert.Equal("epoch 2/8 [green]---------------[/] 14/14 took 1:15 loss 0.4321 acc 87.50% 5123 samples/s",
            TrainingProgress.Row(finished, 8, unicode: false, width: 80));
        var first = running with { Step = 1, Remaining = null, SamplesPerSecond = double.NaN };
        Assert.Contains(" 1/14 ETA -:-- loss 0.4321 acc 87.50% n/a samples/s", TrainingProgress.Row(first, 8, true, 200));
    }

    [Theory]
    [InlineData(40)]
    [InlineData(80)]
    [InlineData(100)]
    [InlineData(300)]
    public void Row_is_narrower_than_the_terminal(int width)
    {
        var bar = new TrainingProgress.Bar(10, 469, 469, TimeSpan.FromHours(2), null, 12.345678, 0.5, 1_234_567);
        string plain = Markup.Remove(TrainingProgress.Row(bar, 10, true, width));
        Assert.True(plain.Length < width, $"{plain.Length} columns: {plain}");
        Assert.StartsWith("epoch 10/10 ━━━━━━━━━━", plain);
    }

    [Theory]
    [InlineData(0, "0.0s")]
    [InlineData(4.25, "4.2s")]
    [InlineData(59.99, "1:00")]
    [InlineData(605, "10:05")]
    [InlineData(3600 * 26 + 62, "26:01:02")]
    public void Clock_reads_like_a_clock(double seconds, string expected) =>
        Assert.Equal(expected, TrainingProgress.Clock(TimeSpan.FromSeconds(seconds)));

    [Fact]
    public void Live_mode_prints_each_epoch_s_final_bar_once_and_clears_the_live_rows()
    {
        var output = new StringWriter();
        var now = TimeSpan.Zero;
        using (var progress = new TrainingProgress(output, interactive: true, epochs: 2, clock: () => now))
        {
            Assert.True(progress.Interactive);
            for (int epoch = 1; epoch <= 2; epoch++)
            {
                for (int b = 1; b <= 4; b++)
                {
                    now += TimeSpan.FromSeconds(1);
                    progress.OnBatch(epoch, (epoch - 1) * 4 + b, b, 4, 0.5 / epoch, 0.25 * epoch, 100);
                }
                progress.OnEpoch(new EpochMetrics(epoch, epoch * 4, 0.5 / epoch, 0.25 * epoch, 0.6, 0.7, 105, 4 * epoch));
            }
        }
        string text = Regex.Replace(output.ToString(), @"\x1b\[[0-9;?]*[A-Za-z]", ""); // without the terminal's control codes
        // Epoch 1 ran from its first step (after 1 s) to its end (4 s); epoch 2 from there to 8 s.
        Assert.Single(Regex.Matches(text, @"epoch 1/2 [━-]+ 4/4 took 3\.0s loss 0\.5000 acc 25\.00% 105 samples/s"));
        Assert.Single(Regex.Matches(text, @"epoch 2/2 [━-]+ 4/4 took 4\.0s loss 0\.2500 acc 50\.00% 105 samples/s"));
        Assert.EndsWith("\u001b[?25h", output.ToString()); // the cursor is back
    }

    private static (IAnsiConsole Console, StringWriter Output) Terminal20()
    {
        var output = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output), Ansi = AnsiSupport.Yes, ColorSystem = ColorSystemSupport.NoColors });
        console.Profile.Width = 20;
        return (console, output);
    }

    [Fact]
    public void A_screen_line_as_wide_as_the_terminal_keeps_its_last_character()
    {
        var (console, output) = Terminal20();
        console.Write(new ScreenLine(new Text(new string('x', 20) + "\nab")));
        Assert.Equal("\u001b[K" + new string('x', 20) + "\n\u001b[Kab\u001b[K\n", output.ToString().ReplaceLineEndings("\n"));
    }

    [Fact]
    public void Screen_lines_erase_the_old_live_rows_and_are_not_wrapped()
    {
        var (console, output) = Terminal20();
        var sink = new ScreenLogSink(console);
        sink.Emit(new LogEvent(new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero).ToLocalTime(), LogEventLevel.Warning, null,
            new MessageTemplateParser().Parse("a [bracketed] message longer than twenty columns"), []));
        string text = output.ToString();
        Assert.Matches(@"^\x1b\[K\d\d:\d\d:05 WRN a \[bracketed\] message longer than twenty columns\x1b\[K\r?\n$", text);
    }
}
