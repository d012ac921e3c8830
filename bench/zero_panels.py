#!/usr/bin/env python3
"""How much of the first dense layer's work zero skipping can remove on an image dataset.

The GEMM packing marks a depth step as skippable when the packed A panel is all zero there
(README, Performance). For the first layer that is:
  forward  Z = X·Wᵀ        A = X  (batch × pixels): a step is skipped when one pixel is 0 in all MR rows of the panel;
  dW       dWᵀ = Xᵀ·dZ     A = Xᵀ (pixels × batch): a step is skipped when MR consecutive pixels of one sample are 0.
This prints those fractions (the forward one with the batch in random order and in the training step's gather
order, Dataset.ZeroPatternRanks) next to the fraction of zero elements, the bound of a kernel that skipped single
zeros, and the fraction for a few other pixel orders of dWᵀ's panels (a permuted packing).

  /usr/bin/python3 bench/zero_panels.py [--images FILE] [--mr 8] [--batch 256]
"""
import argparse
import gzip

import numpy as np


def read_file(path):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise SystemExit(f"{path}: {e.strerror or e}")


def read_idx_images(path):
    data = read_file(path)
    if len(data) < 16:
        raise SystemExit(f"{path}: too short for an IDX image file ({len(data)} bytes)")
    magic, count, rows, cols = np.frombuffer(data[:16], ">u4")
    if magic != 2051:
        raise SystemExit(f"{path}: not an IDX image file (magic {magic}, expected 2051)")
    if len(data) != 16 + int(count) * rows * cols:
        raise SystemExit(f"{path}: {len(data) - 16} bytes of pixels, the header says {count}×{rows}×{cols}")
    return np.frombuffer(data, np.uint8, offset=16).reshape(count, rows * cols), int(rows), int(cols)


def read_idx_labels(path, count):
    data = read_file(path)
    if len(data) != 8 + count or np.frombuffer(data[:4], ">u4")[0] != 2049:
        raise SystemExit(f"{path}: not an IDX label file of {count} labels")
    return np.frombuffer(data, np.uint8, offset=8)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default="/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    p.add_argument("--labels", help="IDX labels of the images (default: train-labels next to them)")
    p.add_argument("--mr", type=int, default=8, help="rows of a packed A panel (AVX-512: 8, AVX2: 6)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--batches", type=int, default=50, help="random batches sampled for the forward figure")
    a = p.parse_args()
    images, rows, cols = read_idx_images(a.images)
    zero = images == 0
    n, pixels = zero.shape
    mr = a.mr
    if mr < 1 or not 1 <= a.batch <= n or a.batches < 1:
        raise SystemExit(f"--mr, --batches and --batch must be positive, --batch at most {n} (got {mr}, {a.batches}, {a.batch})")

    def panels(z, axis):
        # The packing pads a last partial panel with zeros: padded rows count as zero.
        pad = -z.shape[axis] % mr
        widths = [(0, 0)] * z.ndim
        widths[axis] = (0, pad)
        return np.pad(z, widths, constant_values=True)

    labels = read_idx_labels(a.labels or a.images.replace("images-idx3", "labels-idx1"), n)
    # The training step's gather order (Dataset.ZeroPatternRanks): by label, then number of zeros, then row.
    rank = np.empty(n, np.int64)
    rank[np.lexsort((np.arange(n), zero.sum(axis=1), labels))] = np.arange(n)

    def forward_rate(ordered):
        rng = np.random.default_rng(1)
        rates = []
        for _ in range(a.batches):
            batch = rng.choice(n, a.batch, replace=False)
            if ordered:
                batch = batch[np.argsort(rank[batch])]
            rates.append(panels(zero[batch], 0).reshape(-1, mr, pixels).all(axis=1).mean())
        return np.mean(rates)

    def dw_rate(order):
        return panels(zero[:, order], 1).reshape(n, -1, mr).all(axis=2).mean()

    grid = np.arange(pixels).reshape(rows, cols)
    orders = {"row by row (as stored)": np.arange(pixels), "column by column": grid.T.reshape(-1)}
    for h in (2, 4):
        w = mr // h
        if h * w == mr and rows % h == 0 and cols % w == 0:
            orders[f"{h}×{w} patches"] = grid.reshape(rows // h, h, cols // w, w).transpose(0, 2, 1, 3).reshape(-1)

    print(f"{a.images}: {n} images of {rows}×{cols}, MR = {mr}")
    print(f"zero elements (bound for a kernel skipping single zeros): {zero.mean():.1%}")
    for ordered in (False, True):
        order = "ordered by (label, zeros)" if ordered else "in random order"
        print(f"forward, depth steps skipped ({mr} samples × 1 pixel all zero, batches of {a.batch} {order}): {forward_rate(ordered):.1%}")
    for name, order in orders.items():
        print(f"dW, depth steps skipped ({mr} pixels × 1 sample all zero), pixels {name}: {dw_rate(order):.1%}")


if __name__ == "__main__":
    main()
