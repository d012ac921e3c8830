using System.Globalization;
using Serilog.Core;
using Serilog.Events;
using Serilog.Parsing;

namespace BnCluster.Node.Logging;

/// <summary>
/// A sink wrapper that rewrites events whose message template has positional tokens — Akka.Logger.Serilog passes
/// Akka's string.Format-style messages ("Cluster Node [{0}] - Started up successfully") to Serilog, which makes them
/// properties named "0", "1", … — before they reach <paramref name="inner"/>: the template becomes the message's
/// rendered text with its braces escaped (so it renders as itself, in CLEF readers too), the positional properties
/// are dropped, and every other property (SourceContext, ActorPath, LogSource, Node, …), the level, the exception
/// and the trace context stay. Other events pass through untouched.
/// </summary>
public sealed class PositionalTemplateRewritingSink(ILogEventSink inner) : ILogEventSink
{
    public void Emit(LogEvent logEvent) => inner.Emit(Rewrite(logEvent));

    /// <summary>The event as it reaches the inner sink: <paramref name="logEvent"/> itself unless it has positional tokens.</summary>
    public static LogEvent Rewrite(LogEvent logEvent)
    {
        if (!MayBePositional(logEvent.MessageTemplate.Text)) return logEvent;
        var positional = logEvent.MessageTemplate.Tokens.OfType<PropertyToken>().Where(t => t.IsPositional)
            .Select(t => t.PropertyName).ToHashSet(StringComparer.Ordinal);
        if (positional.Count == 0) return logEvent;

        string text = Render(logEvent.MessageTemplate, logEvent.Properties);
        string escaped = text.Replace("{", "{{", StringComparison.Ordinal).Replace("}", "}}", StringComparison.Ordinal);
        var template = new MessageTemplate(escaped, text.Length == 0 ? [] : [new TextToken(text)]);
        var properties = logEvent.Properties.Where(p => !positional.Contains(p.Key)).Select(p => new LogEventProperty(p.Key, p.Value));
        return new LogEvent(logEvent.Timestamp, logEvent.Level, logEvent.Exception, template, properties,
            logEvent.TraceId ?? default, logEvent.SpanId ?? default);
    }

    /// <summary>
    /// A cheap, allocation-free pre-check on the template text (a '{', maybe '@' or '$', then a digit), so that the
    /// trainer's per-step events, whose templates are named, do not pay for walking the tokens.
    /// </summary>
    private static bool MayBePositional(string text)
    {
        for (int i = text.IndexOf('{'); i >= 0; i = text.IndexOf('{', i + 1))
        {
            int next = i + 1 < text.Length && text[i + 1] is '@' or '$' ? i + 2 : i + 1;
            if (next < text.Length && char.IsAsciiDigit(text[next])) return true;
        }
        return false;
    }

    /// <summary>
    /// The text as string.Format would give it (what Akka's own loggers print): strings without Serilog's quotes, other
    /// values with the token's format and alignment, invariant culture; a token without a value stays as written.
    /// </summary>
    private static string Render(MessageTemplate template, IReadOnlyDictionary<string, LogEventPropertyValue> properties)
    {
        var text = new StringWriter(CultureInfo.InvariantCulture);
        foreach (var token in template.Tokens)
        {
            if (token is not PropertyToken property) { token.Render(properties, text, CultureInfo.InvariantCulture); continue; }
            if (!properties.TryGetValue(property.PropertyName, out var value)) { text.Write(property.ToString()); continue; }
            string rendered;
            if (value is ScalarValue { Value: string s }) rendered = s;
            else
            {
                var one = new StringWriter(CultureInfo.InvariantCulture);
                value.Render(one, property.Format, CultureInfo.InvariantCulture);
                rendered = one.ToString();
            }
            text.Write(property.Alignment is { } a
                ? a.Direction == AlignmentDirection.Left ? rendered.PadRight(a.Width) : rendered.PadLeft(a.Width)
                : rendered);
        }
        return text.ToString();
    }
}
