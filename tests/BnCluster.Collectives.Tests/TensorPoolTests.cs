using BnCluster.Core.Model;
using BnCluster.Core.Training;
using Xunit;

namespace BnCluster.Collectives.Tests;

// The pool is process-wide: each test uses lengths no other test rents.
public sealed class TensorPoolTests
{
    [Fact]
    public void A_returned_array_is_rented_again_instead_of_allocating()
    {
        var first = TensorPool.Rent(7901);
        Assert.Equal(7901, first.Length);
        TensorPool.Return(first);
        long allocations = TensorPool.Allocations;
        var again = TensorPool.Rent(7901);
        Assert.Same(first, again);
        Assert.Equal(allocations, TensorPool.Allocations);
        Assert.NotSame(again, TensorPool.Rent(7901)); // the pool is empty now: a new array
    }

    [Fact]
    public void The_pool_keeps_a_bounded_number_of_arrays_per_length_and_refuses_a_double_return()
    {
        var arrays = Enumerable.Range(0, TensorPool.ArraysPerLength + 5).Select(_ => new float[7907]).ToList();
        foreach (var a in arrays.Take(TensorPool.ArraysPerLength)) TensorPool.Return(a);
        var e = Assert.Throws<InvalidOperationException>(() => TensorPool.Return(arrays[0]));
        Assert.Contains("7907", e.Message);
        foreach (var a in arrays.Skip(TensorPool.ArraysPerLength)) TensorPool.Return(a);
        Assert.Equal(TensorPool.ArraysPerLength, TensorPool.Pooled(7907));
    }

    [Fact]
    public void Float64_arrays_are_pooled_apart_from_float_arrays_of_the_same_length()
    {
        var values = Enumerable.Range(0, 7937).Select(i => i * -1.5).ToArray();
        var copy = TensorPool.RentCopy(values);
        Assert.Equal(values, copy);
        TensorPool.Return(copy);
        Assert.Equal(1, TensorPool.PooledDoubles(7937));
        Assert.Equal(0, TensorPool.Pooled(7937));
        var e = Assert.Throws<InvalidOperationException>(() => TensorPool.Return(copy));
        Assert.Contains("7937 Double", e.Message);
        long allocations = TensorPool.Allocations;
        Assert.Same(copy, TensorPool.RentDoubles(7937));
        Assert.Equal(allocations, TensorPool.Allocations);
        Assert.Empty(TensorPool.RentDoubles(0));
    }

    [Fact]
    public void A_shared_set_goes_back_to_the_pool_at_its_last_release_only()
    {
        var set = TensorPool.RentSet([7919, 7927]);
        TensorPool.Share(set, holders: 3);
        TensorPool.Release(set);
        TensorPool.Release(set);
        Assert.Equal(0, TensorPool.Pooled(7919));
        TensorPool.Release(set);
        Assert.Equal(1, TensorPool.Pooled(7919));
        Assert.Equal(1, TensorPool.Pooled(7927));
        Assert.Same(set[0], TensorPool.Rent(7919));

        var unshared = TensorPool.RentSet([7933]);
        TensorPool.Release(unshared); // not shared: one holder
        Assert.Same(unshared[0], TensorPool.Rent(7933));
    }

    [Fact]
    public void A_snapshot_restores_the_exact_parameters_and_its_arrays_are_reused_by_the_next_capture()
    {
        var spec = new NetworkSpec(13, [11, 7], 3, Activation.Relu, BatchNormPlacement.Before);
        var source = Parameters.Initialize(spec, seed: 5);
        var snapshot = ParameterSnapshot.Capture(source);
        var target = new Parameters(spec);
        ParameterSnapshot.Restore(target, snapshot);
        for (int i = 0; i < source.Trainable.Count; i++) Assert.Equal(source.Trainable[i].Values, target.Trainable[i].Values);
        Assert.Equal(source.RunningVar[0], target.RunningVar[0]);

        TensorPool.Release(snapshot);
        long allocations = TensorPool.Allocations;
        var next = ParameterSnapshot.Capture(source);
        Assert.Equal(allocations, TensorPool.Allocations);
        Assert.Same(snapshot[0], next[0]);
    }
}
