using BnCluster.Node;

namespace BnCluster.Node.Tests;

public sealed class ThreadPoolSpinningTests
{
    [Theory]
    [InlineData(new[] { "worker", "--join", "127.0.0.1:5000" }, true)]
    [InlineData(new[] { "train", "--dataset", "digits", "--workers", "2", "--processes" }, true)]
    [InlineData(new[] { "bench", "--workers", "2", "--processes", "--threads", "1" }, true)]
    [InlineData(new[] { "train", "--dataset", "digits" }, false)]                  // the in-process cluster spins
    [InlineData(new[] { "bench", "--workers", "1" }, false)]
    [InlineData(new[] { "coordinator", "--listen", "0.0.0.0:5000" }, false)]       // its workers are elsewhere
    [InlineData(new string[0], false)]
    public void OnlyProcessesThatShareCoresWithWorkersStopSpinning(string[] args, bool expected) =>
        Assert.Equal(expected, ThreadPoolSpinning.SharesCores(args));
}
