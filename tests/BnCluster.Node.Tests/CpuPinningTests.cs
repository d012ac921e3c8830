using System.Diagnostics;
using BnCluster.Node.Backends;

namespace BnCluster.Node.Tests;

/// <summary>Worker processes pinned to CPUs of their own (Linux): the plan, and a real child started pinned.</summary>
public sealed class CpuPinningTests
{
    private static int[] Allowed() =>
        CpuPinning.AllowedCpus() ?? throw new InvalidOperationException("these tests need Linux (sched_getaffinity)");

    [Fact]
    public void The_plan_gives_each_worker_consecutive_cpus_of_its_own_and_nothing_when_they_do_not_fit()
    {
        var allowed = Allowed();
        Assert.NotEmpty(allowed);
        Assert.Equal(allowed.Order(), allowed);

        var singles = CpuPinning.Plan(allowed.Length, 1)!;
        Assert.Equal(allowed, singles.Select(cpus => Assert.Single(cpus)));
        Assert.Equal(allowed, Assert.Single(CpuPinning.Plan(1, allowed.Length)!));
        if (allowed.Length >= 2)
        {
            var two = CpuPinning.Plan(2, allowed.Length / 2)!;
            Assert.Empty(two[0].Intersect(two[1]));
            Assert.Equal(allowed[..(allowed.Length / 2)], two[0]);
        }

        Assert.Null(CpuPinning.Plan(allowed.Length + 1, 1)); // more worker threads than CPUs: the scheduler places them
        Assert.Null(CpuPinning.Plan(1, allowed.Length + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => CpuPinning.Plan(0, 1));
    }

    [Fact]
    public void A_child_started_pinned_runs_on_those_cpus_only_and_the_starting_thread_gets_its_own_back()
    {
        var allowed = Allowed();
        int cpu = allowed[^1];
        Process? child = null;
        try
        {
            CpuPinning.StartPinned([cpu], () => child = Process.Start(new ProcessStartInfo("sleep", "30") { UseShellExecute = false }));
            Assert.NotNull(child);
            Assert.Equal(allowed, CpuPinning.AllowedCpus()); // the calling thread is back on all its CPUs
            string status = File.ReadAllText($"/proc/{child!.Id}/status");
            string line = status.Split('\n').Single(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal));
            Assert.Equal(cpu.ToString(System.Globalization.CultureInfo.InvariantCulture), line.Split('\t')[^1].Trim());
        }
        finally
        {
            if (child is { HasExited: false }) child.Kill();
            child?.WaitForExit();
            child?.Dispose();
        }
    }

    [Fact]
    public void A_cpu_the_system_refuses_fails_naming_it_and_starts_nothing()
    {
        var allowed = Allowed();
        int missing = Enumerable.Range(0, 1024).First(c => !allowed.Contains(c));
        bool started = false;
        var e = Assert.Throws<InvalidOperationException>(() => CpuPinning.StartPinned([missing], () => started = true));
        Assert.Contains($"cannot pin to CPUs {missing}", e.Message);
        Assert.False(started);
        Assert.Equal(allowed, CpuPinning.AllowedCpus());
        Assert.Throws<ArgumentOutOfRangeException>(() => CpuPinning.StartPinned([1024], () => started = true));
    }
}
