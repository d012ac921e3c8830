using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace BnCluster.Core.Kernels;

/// <summary>Which micro-kernel the products use. Injectable (internal constructor of <see cref="MatMul"/>)
/// so the tests exercise every path on an AVX-512 machine.</summary>
internal enum KernelPath { Avx512, Avx2, Scalar }

internal static class KernelPaths
{
    public static bool IsSupported(KernelPath path) => path switch
    {
        KernelPath.Avx512 => Avx512F.IsSupported && Vector512.IsHardwareAccelerated,
        KernelPath.Avx2 => Avx2.IsSupported && Fma.IsSupported,
        KernelPath.Scalar => true,
        _ => false,
    };

    /// <summary>The fastest path this CPU runs.</summary>
    public static KernelPath Best =>
        IsSupported(KernelPath.Avx512) ? KernelPath.Avx512 :
        IsSupported(KernelPath.Avx2) ? KernelPath.Avx2 : KernelPath.Scalar;
}
