using System.Globalization;
using System.Text.Json;
using BnCluster.Node.Commands;
using static System.FormattableString;

namespace BnCluster.Node.Logging;

/// <summary>A log.jsonl line that is not a CLEF event; the message names the file and line.</summary>
public sealed class LogFormatException(string message) : Exception(message);

/// <summary>Time one worker spent per phase, summed over the run.</summary>
public sealed record WorkerTime(string Worker, IReadOnlyDictionary<string, double> PhaseMs)
{
    public double ComputeMs => PhaseMs.TryGetValue(LogEvents.Phases.Compute, out var v) ? v : 0;
    public double WaitingMs => PhaseMs.Where(p => LogEvents.Phases.IsWaiting(p.Key)).Sum(p => p.Value);
}

/// <summary>A notable single event: membership change or aborted step.</summary>
public sealed record LogNote(DateTimeOffset Timestamp, long? Step, string Message);

/// <summary>
/// Summary of a run's log.jsonl (CLEF, one event per line: @t, @mt, @r, @l, @x and the properties at the top level;
/// see <see cref="RunLogging"/>): steps/s, compute vs waiting per worker (ElapsedMs summed by Worker and Phase), the
/// slowest worker, membership changes and aborted steps. Conventions: <see cref="LogEvents"/>.
/// </summary>
public sealed class LogSummary
{
    public required string Source { get; init; }
    public int Events { get; init; }
    /// <summary>From the first to the last event's timestamp.</summary>
    public double Seconds { get; init; }
    /// <summary>Distinct steps with a commit event (or, if the log has none, distinct Step values).</summary>
    public long CommittedSteps { get; init; }
    public double StepsPerSecond => Seconds > 0 ? CommittedSteps / Seconds : double.NaN;
    public required IReadOnlyList<WorkerTime> Workers { get; init; }
    public required IReadOnlyList<LogNote> Membership { get; init; }
    public required IReadOnlyList<LogNote> Aborted { get; init; }

    /// <summary>Worker with the most compute time, and the one with the least (null with fewer than two workers).</summary>
    public (WorkerTime Slowest, WorkerTime Fastest)? SlowestWorker =>
        Workers.Count < 2 ? null
            : (Workers.MaxBy(w => w.ComputeMs)!, Workers.MinBy(w => w.ComputeMs)!);

    public static LogSummary Read(string path)
    {
        using var reader = new StreamReader(path);
        return Read(reader, path);
    }

    public static LogSummary Read(TextReader reader, string source)
    {
        int events = 0, lineNumber = 0;
        DateTimeOffset? first = null, last = null;
        var committed = new HashSet<long>();
        var anySteps = new HashSet<long>();
        var workers = new Dictionary<string, Dictionary<string, double>>();
        var membership = new List<LogNote>();
        var aborted = new List<LogNote>();

        for (string? line; (line = reader.ReadLine()) is not null;)
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(line); }
            catch (JsonException ex) { throw Bad(source, lineNumber, "not valid JSON (" + ex.Message.Split('\n')[0].TrimEnd() + ")"); }
            using (doc)
            {
                var root = doc.RootElement;
                if (root.ValueKind != JsonValueKind.Object) throw Bad(source, lineNumber, "not a JSON object");
                if (!root.TryGetProperty("@t", out var tsElement) || tsElement.ValueKind != JsonValueKind.String
                    || !DateTimeOffset.TryParse(tsElement.GetString(), CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var ts))
                    throw Bad(source, lineNumber, "no valid \"@t\" timestamp (not a CLEF event)");
                bool hasTemplate = root.TryGetProperty("@mt", out var template) && template.ValueKind == JsonValueKind.String;
                if (!hasTemplate && !(root.TryGetProperty("@m", out var rendered) && rendered.ValueKind == JsonValueKind.String))
                    throw Bad(source, lineNumber, "no \"@mt\" message template (not a CLEF event)");
                // An absent @l means Information; the summary does not use the level, but a present one must be a name.
                if (root.TryGetProperty("@l", out var level) && level.ValueKind != JsonValueKind.String)
                    throw Bad(source, lineNumber, "\"@l\" is not a string");
                events++;
                if (first is null || ts < first) first = ts;
                if (last is null || ts > last) last = ts;

                // CLEF keeps the event's properties at the top level, beside the @ fields.
                string? phase = StringProperty(root, LogEvents.Phase);
                long? step = NumberProperty(root, LogEvents.Step) is double s ? (long)s : null;
                string? worker = StringProperty(root, LogEvents.Worker);
                double? elapsed = NumberProperty(root, LogEvents.ElapsedMs);
                bool membershipTemplate = hasTemplate
                    && (template.ValueEquals(LogEvents.WorkerJoinedTemplate) || template.ValueEquals(LogEvents.WorkerLeftTemplate));

                if (step is long st) anySteps.Add(st);
                if (phase == LogEvents.Phases.Commit && step is long cs) committed.Add(cs);
                // Only the notes need the message, so only they pay for rendering it.
                if (phase == LogEvents.Phases.Abort) aborted.Add(new LogNote(ts, step, ClefMessage.Render(root)));
                if (phase == LogEvents.Phases.Membership || membershipTemplate)
                    membership.Add(new LogNote(ts, step, ClefMessage.Render(root)));
                if (worker is not null && phase is not null && elapsed is double ms)
                {
                    if (!workers.TryGetValue(worker, out var phases)) workers[worker] = phases = new Dictionary<string, double>();
                    phases[phase] = phases.GetValueOrDefault(phase) + ms;
                }
            }
        }

        return new LogSummary
        {
            Source = source,
            Events = events,
            Seconds = first is null ? 0 : (last!.Value - first.Value).TotalSeconds,
            CommittedSteps = committed.Count > 0 ? committed.Count : anySteps.Count,
            Workers = workers
                .OrderBy(w => int.TryParse(w.Key, out var n) ? n : int.MaxValue).ThenBy(w => w.Key, StringComparer.Ordinal)
                .Select(w => new WorkerTime(w.Key, w.Value)).ToList(),
            Membership = membership,
            Aborted = aborted,
        };
    }

    private static LogFormatException Bad(string source, int line, string what) => new($"{source} line {line}: {what}");

    private static string? StringProperty(JsonElement props, string name)
    {
        if (props.ValueKind != JsonValueKind.Object || !props.TryGetProperty(name, out var v)) return null;
        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Number => v.GetRawText(),
            _ => null,
        };
    }

    private static double? NumberProperty(JsonElement props, string name)
    {
        if (props.ValueKind != JsonValueKind.Object || !props.TryGetProperty(name, out var v)) return null;
        if (v.ValueKind == JsonValueKind.Number) return v.GetDouble();
        if (v.ValueKind == JsonValueKind.String && double.TryParse(v.GetString(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d)) return d;
        return null;
    }

    public void WriteText(TextWriter output)
    {
        var ic = CultureInfo.InvariantCulture;
        output.WriteLine(Invariant($"log: {Source} ({Events} events over {Seconds:F1} s)"));
        output.WriteLine(Invariant($"steps: {CommittedSteps} committed, {(double.IsNaN(StepsPerSecond) ? "n/a" : StepsPerSecond.ToString("F2", ic))} steps/s, {Aborted.Count} aborted"));
        if (Workers.Count > 0)
        {
            var waitPhases = Workers.SelectMany(w => w.PhaseMs.Keys).Where(LogEvents.Phases.IsWaiting).Distinct().Order(StringComparer.Ordinal).ToList();
            output.WriteLine(Invariant($"{"worker",-8} {"compute ms",12} {"waiting ms",12} {"waiting",8}") + string.Concat(waitPhases.Select(p => $" {p + " ms",15}")));
            foreach (var w in Workers)
            {
                double total = w.ComputeMs + w.WaitingMs;
                string share = total > 0 ? (100 * w.WaitingMs / total).ToString("F1", ic) + "%" : "n/a";
                output.WriteLine(Invariant($"{w.Worker,-8} {w.ComputeMs,12:F1} {w.WaitingMs,12:F1} {share,8}")
                    + string.Concat(waitPhases.Select(p => Invariant($" {w.PhaseMs.GetValueOrDefault(p),15:F1}"))));
            }
        }
        else output.WriteLine("workers: no per-worker timing events");
        if (SlowestWorker is var (slow, fast))
            output.WriteLine(Invariant($"slowest worker: {slow.Worker}, compute {slow.ComputeMs:F1} ms, +{slow.ComputeMs - fast.ComputeMs:F1} ms ({Percent(slow.ComputeMs, fast.ComputeMs)}) over the fastest, worker {fast.Worker}"));
        output.WriteLine(Invariant($"membership changes: {Membership.Count}"));
        // CLEF times are UTC; the text shows the reader's local time, like the console lines of the run.
        foreach (var n in Membership) output.WriteLine(Invariant($"  {n.Timestamp.ToLocalTime():HH:mm:ss.fff} {n.Message}"));
        output.WriteLine(Invariant($"aborted steps: {Aborted.Count}"));
        foreach (var n in Aborted) output.WriteLine(Invariant($"  {n.Timestamp.ToLocalTime():HH:mm:ss.fff} {n.Message}"));
    }

    private static string Percent(double slow, double fast) =>
        fast > 0 ? "+" + (100 * (slow - fast) / fast).ToString("F1", CultureInfo.InvariantCulture) + "%" : "n/a";

    /// <summary>One JSON object (snake_case keys), then a newline.</summary>
    public void WriteJson(TextWriter output) =>
        output.WriteLine(JsonText.Write(json =>
        {
            json.WriteStartObject();
            json.WriteString("file", Source);
            json.WriteNumber("events", Events);
            json.WriteNumber("seconds", Seconds);
            json.WriteNumber("committed_steps", CommittedSteps);
            json.WriteFiniteOrNull("steps_per_second", StepsPerSecond);
            json.WriteStartArray("workers");
            foreach (var w in Workers)
            {
                json.WriteStartObject();
                json.WriteString("worker", w.Worker);
                json.WriteNumber("compute_ms", w.ComputeMs);
                json.WriteNumber("waiting_ms", w.WaitingMs);
                json.WriteStartObject("phases_ms");
                foreach (var (phase, ms) in w.PhaseMs.OrderBy(p => p.Key, StringComparer.Ordinal)) json.WriteNumber(phase, ms);
                json.WriteEndObject();
                json.WriteEndObject();
            }
            json.WriteEndArray();
            if (SlowestWorker is var (slow, fast))
            {
                json.WriteStartObject("slowest_worker");
                json.WriteString("worker", slow.Worker);
                json.WriteNumber("compute_ms", slow.ComputeMs);
                json.WriteString("fastest_worker", fast.Worker);
                json.WriteNumber("fastest_compute_ms", fast.ComputeMs);
                json.WriteNumber("excess_ms", slow.ComputeMs - fast.ComputeMs);
                if (fast.ComputeMs > 0) json.WriteNumber("excess_ratio", (slow.ComputeMs - fast.ComputeMs) / fast.ComputeMs);
                else json.WriteNull("excess_ratio");
                json.WriteEndObject();
            }
            else json.WriteNull("slowest_worker");
            WriteNotes(json, "membership", Membership);
            WriteNotes(json, "aborted_steps", Aborted);
            json.WriteEndObject();
        }));

    private static void WriteNotes(Utf8JsonWriter json, string name, IReadOnlyList<LogNote> notes)
    {
        json.WriteStartArray(name);
        foreach (var n in notes)
        {
            json.WriteStartObject();
            json.WriteString("timestamp", n.Timestamp);
            if (n.Step is long s) json.WriteNumber("step", s);
            else json.WriteNull("step");
            json.WriteString("message", n.Message);
            json.WriteEndObject();
        }
        json.WriteEndArray();
    }
}
