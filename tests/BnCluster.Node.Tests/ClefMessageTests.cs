using System.Text.Json;
using BnCluster.Node.Logging;

namespace BnCluster.Node.Tests;

public sealed class ClefMessageTests
{
    private static string Render(string clefLine)
    {
        using var doc = JsonDocument.Parse(clefLine);
        return ClefMessage.Render(doc.RootElement);
    }

    [Theory]
    // Unformatted tokens take the top-level property; strings are quoted, as Serilog renders them.
    [InlineData("""{"@t":"2026-11-21T10:00:00Z","@mt":"Worker {Worker} on {Node}","Worker":3,"Node":"n3"}""", "Worker 3 on \"n3\"")]
    // A formatted token takes the writer's rendering from @r, one per formatted token in order.
    [InlineData("""{"@t":"2026-11-21T10:00:00Z","@mt":"{A:F1} {B} {C:l}","@r":["1.5","x y"],"A":1.54,"B":2,"C":"ignored"}""", "1.5 2 x y")]
    // Without @r, a :l string is the string itself.
    [InlineData("""{"@t":"2026-11-21T10:00:00Z","@mt":"left: {Reason:l}","Reason":"timeout"}""", "left: timeout")]
    // Doubled braces are literal ones; a token without a property stays as written.
    [InlineData("""{"@t":"2026-11-21T10:00:00Z","@mt":"{{0}} is {Missing} and [{0}]","0":"a"}""", "{0} is {Missing} and [\"a\"]")]
    // Alignment pads; destructuring markers, booleans, nulls and structured values.
    [InlineData("""{"@t":"2026-11-21T10:00:00Z","@mt":"[{N,4}][{N,-4}] {@O} {B} {Z}","N":7,"O":{"a":1},"B":true,"Z":null}""", "[   7][7   ] {\"a\":1} True null")]
    // Not a token: a lone brace, an empty or invalid name.
    [InlineData("""{"@t":"2026-11-21T10:00:00Z","@mt":"a { b } {} {a b}","a":1}""", "a { b } {} {a b}")]
    // An already rendered @m wins; no message at all is empty.
    [InlineData("""{"@t":"2026-11-21T10:00:00Z","@m":"done","@mt":"{X}","X":1}""", "done")]
    [InlineData("""{"@t":"2026-11-21T10:00:00Z"}""", "")]
    public void Renders_the_template_from_the_properties(string clefLine, string expected) =>
        Assert.Equal(expected, Render(clefLine));
}
