using BnCluster.Core.Kernels;
using Xunit;

namespace BnCluster.Core.Tests.Kernels;

public sealed class ChunkClaimsTests
{
    /// <summary>
    /// The order a part tries the chunks in: every chunk once, its own share ascending, then the others' from the far
    /// end down (with foreign-first, the others' first), for shares that are empty, whole or in the middle.
    /// </summary>
    [Theory]
    [InlineData(0, 1, 5)]
    [InlineData(0, 2, 11)]
    [InlineData(1, 2, 11)]
    [InlineData(1, 3, 10)]
    [InlineData(2, 3, 2)]
    [InlineData(0, 2, 0)]
    public void OrderRunsTheOwnShareUpThenTheOthersDown(int part, int parts, int chunks)
    {
        int own0 = ChunkClaims.ShareStart(part, parts, chunks), own1 = ChunkClaims.ShareStart(part + 1, parts, chunks);
        var own = Enumerable.Range(own0, own1 - own0).ToList();
        var others = Enumerable.Range(0, chunks).Where(c => c < own0 || c >= own1).Reverse().ToList();
        foreach (bool foreignFirst in new[] { false, true })
        {
            var order = new List<int>();
            foreach (int c in ChunkClaims.Order(part, parts, chunks, foreignFirst)) order.Add(c);
            Assert.Equal(foreignFirst ? others.Concat(own) : own.Concat(others), order);
        }
    }

    [Fact]
    public void AChunkIsTakenOnceUntilReset()
    {
        var claims = new ChunkClaims();
        claims.Reset(4, parts: 2);
        Assert.True(claims.TryClaim(3));
        Assert.False(claims.TryClaim(3));
        Assert.True(claims.TryClaim(0));
        claims.Reset(4, parts: 2);
        Assert.True(claims.TryClaim(3));
    }
}
