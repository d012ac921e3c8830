#!/usr/bin/python3
"""numpy float32 GEMM GFLOP/s (the BLAS numpy is linked to: OpenBLAS on Debian) for bench/compare.sh.

Shapes are "m×n×k" of C[m×n] = op(A)·op(B) over depth k, the same products and names as
`BnCluster.Benchmarks gemm --json`: NN 256×784×512 and 1024³, and the training products
NT 256×512×784 (forward), TN 512×784×256 (weight gradient). Set OPENBLAS_NUM_THREADS before
running (the BLAS reads it when it loads). Prints one JSON object per product/shape per line.
"""
import argparse
import json
import os
import time

import numpy as np

SHAPES = [("NN", 256, 784, 512), ("NN", 1024, 1024, 1024), ("NT", 256, 512, 784), ("TN", 512, 784, 256)]


def blas_library():
    """The BLAS shared object actually mapped into this process (after numpy has used it)."""
    with open("/proc/self/maps") as maps:
        names = {line.split()[-1] for line in maps if "blas" in line.lower() and "/" in line}
    return sorted(names)


def measure(op, m, n, k, rounds):
    rng = np.random.default_rng(1)
    # Stored layouts as the C# products take them: NT's B is [n×k], TN's A is [k×m].
    a = rng.uniform(-1, 1, (k, m) if op == "TN" else (m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (n, k) if op == "NT" else (k, n)).astype(np.float32)
    lhs = a.T if op == "TN" else a
    rhs = b.T if op == "NT" else b
    c = np.empty((m, n), dtype=np.float32)
    flop = 2.0 * m * n * k
    for _ in range(5):
        np.matmul(lhs, rhs, out=c)
    reps = max(1, int(6e9 / flop))  # ~60 ms per round at 100 GFLOP/s
    best = 0.0
    for _ in range(rounds):  # best round: the least disturbed on a shared machine
        start = time.perf_counter()
        for _ in range(reps):
            np.matmul(lhs, rhs, out=c)
        best = max(best, flop * reps / (time.perf_counter() - start) / 1e9)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--shape", default="", help="only this m x n x k, e.g. 256x784x512")
    args = p.parse_args()
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "")
    for op, m, n, k in SHAPES:
        if args.shape and args.shape != f"{m}x{n}x{k}":
            continue
        gflops = measure(op, m, n, k, args.rounds)
        print(json.dumps({"impl": "numpy", "product": op, "shape": f"{m}x{n}x{k}", "threads": threads,
                          "gflops": round(gflops, 2), "numpy": np.__version__, "blas": blas_library()}),
              flush=True)


if __name__ == "__main__":
    main()
