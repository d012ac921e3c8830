#!/usr/bin/python3
"""PyTorch reference for bench/compare.sh: the 784-512-256-10 MLP with BatchNorm before ReLU.

Each hidden layer is Linear(no bias) -> BatchNorm1d -> ReLU, then Linear(bias) and softmax
cross-entropy (mean over the batch); Adam; inputs normalized per feature with the training set's
mean and variance (a zero-variance feature is only centred), as in docs/design.md.

Throughput mode (default): W warm-up steps, then N timed steps over random-permutation batches
of the global batch; prints ONE JSON object {samples_per_second, ms_per_step, threads, processes,
steps, batch}. With --ddp K, K processes (1 thread each, gloo on 127.0.0.1) each take batch/K rows
of every global batch under DistributedDataParallel. PyTorch's SyncBatchNorm refuses CPU tensors,
so under DDP each process normalizes with its own shard's statistics (plain BatchNorm1d).

Accuracy mode (--epochs E, single process only): trains E epochs and adds test_accuracy.
"""
import argparse
import gzip
import json
import os
import socket
import struct
import sys
import time

# Thread counts must be in the environment before numpy/torch load their BLAS and OpenMP runtimes:
# this torch (Debian) calls OpenBLAS (pthreads) for GEMM and OpenMP for element-wise work, and
# an OpenBLAS left at its default (all cores) inside each of K DDP processes would oversubscribe.
def _preset_threads(argv):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=2)
    pre.add_argument("--ddp", type=int, default=0)
    known, _ = pre.parse_known_args(argv)
    threads = str(1 if known.ddp else known.threads)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, threads)


_preset_threads(sys.argv[1:])

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn as nn  # noqa: E402


def read_idx(path, expected_magic):
    """Reads a gzip'd IDX file: big-endian magic (0x0803 images, 0x0801 labels), dims, uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: truncated header ({len(data)} bytes)")
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise ValueError(f"{path}: magic 0x{magic:08x} at offset 0, expected 0x{expected_magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated header, {ndim} dimensions need {header} bytes")
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    count = int(np.prod(dims))
    if len(data) - header != count:
        raise ValueError(f"{path}: {len(data) - header} data bytes after offset {header}, dims {dims} need {count}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(folder):
    def images(name):
        x = read_idx(os.path.join(folder, name), 0x00000803)
        return x.reshape(x.shape[0], -1).astype(np.float32) / 255.0

    def labels(name):
        return read_idx(os.path.join(folder, name), 0x00000801).astype(np.int64)

    x_train, y_train = images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz")
    x_test, y_test = images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz")
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(f"{folder}: image and label counts differ")
    # Per-feature normalization with the training set's statistics; zero variance -> centred only.
    mean = x_train.mean(axis=0, dtype=np.float64)
    var = x_train.var(axis=0, dtype=np.float64)
    std = np.where(var > 0, np.sqrt(var), 1.0)
    x_train = ((x_train - mean) / std).astype(np.float32)
    x_test = ((x_test - mean) / std).astype(np.float32)
    return torch.from_numpy(x_train), torch.from_numpy(y_train), torch.from_numpy(x_test), torch.from_numpy(y_test)


def build_model(dims):
    layers = []
    for fan_in, fan_out in zip(dims[:-2], dims[1:-1]):
        linear = nn.Linear(fan_in, fan_out, bias=False)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")  # He normal, as docs/design.md
        layers += [linear, nn.BatchNorm1d(fan_out, eps=1e-5, momentum=0.1), nn.ReLU()]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=True))
    return nn.Sequential(*layers)


class Batches:
    """Random-permutation batches; rank r of k takes rows [r*b/k, (r+1)*b/k) of each global batch."""

    def __init__(self, n, batch, seed, rank=0, world=1):
        self.n, self.batch, self.rank, self.world = n, batch, rank, world
        self.gen = torch.Generator().manual_seed(seed)  # same seed on every rank: same permutation
        self.perm, self.pos = torch.randperm(n, generator=self.gen), 0

    def next(self):
        if self.pos + self.batch > self.n:  # drop the ragged tail, start a new epoch
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos:self.pos + self.batch]
        self.pos += self.batch
        shard = self.batch // self.world
        return idx[self.rank * shard:(self.rank + 1) * shard]


def train_steps(model, opt, x, y, batches, steps):
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        idx = batches.next()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    return loss


def run_single(args, data):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = data
    model = build_model(args.dims)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    batches = Batches(len(x_train), args.batch, args.seed)
    result = {"threads": args.threads, "processes": 1, "batch": args.batch}
    if args.epochs:
        steps = args.epochs * (len(x_train) // args.batch)
        start = time.perf_counter()
        train_steps(model, opt, x_train, y_train, batches, steps)
        elapsed = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
        result.update(epochs=args.epochs, test_accuracy=round(accuracy, 4))
    else:
        steps = args.steps
        train_steps(model, opt, x_train, y_train, batches, args.warmup)
        start = time.perf_counter()
        train_steps(model, opt, x_train, y_train, batches, steps)
        elapsed = time.perf_counter() - start
    result.update(steps=steps, samples_per_second=round(args.batch * steps / elapsed, 1),
                  ms_per_step=round(1000 * elapsed / steps, 3))
    return result


def ddp_worker(rank, args, port, queue):
    if args.pin:  # each rank on a core of its own (of the cores this process may use), as BnCluster pins its workers
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) >= args.ddp:
            os.sched_setaffinity(0, {cores[rank]})
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=args.ddp)
    try:
        torch.manual_seed(args.seed)  # same init everywhere (DDP also broadcasts rank 0's)
        x_train, y_train, _, _ = load_fashion_mnist(args.data)
        model = nn.parallel.DistributedDataParallel(build_model(args.dims))
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
        batches = Batches(len(x_train), args.batch, args.seed, rank, args.ddp)
        train_steps(model, opt, x_train, y_train, batches, args.warmup)
        dist.barrier()
        start = time.perf_counter()
        train_steps(model, opt, x_train, y_train, batches, args.steps)
        dist.barrier()  # the step is done when the slowest rank is done
        elapsed = time.perf_counter() - start
        if rank == 0:
            queue.put({"threads": 1, "processes": args.ddp, "batch": args.batch, "steps": args.steps,
                       "samples_per_second": round(args.batch * args.steps / elapsed, 1),
                       "ms_per_step": round(1000 * elapsed / args.steps, 3),
                       "batchnorm": "per-process (SyncBatchNorm refuses CPU tensors)", "pinned": bool(args.pin)})
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--hidden", default="512,256")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ddp", type=int, default=0, help="K > 0: DistributedDataParallel over K processes")
    p.add_argument("--pin", action="store_true", help="with --ddp: pin rank i to the i-th allowed core")
    p.add_argument("--epochs", type=int, default=0, help="train E epochs and report test accuracy")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    args.dims = [784] + [int(h) for h in args.hidden.split(",") if h] + [10]
    if args.ddp and args.batch % args.ddp:
        p.error(f"--batch {args.batch} is not divisible by --ddp {args.ddp}")
    if args.ddp and args.epochs:
        p.error("--epochs runs in one process only")
    if args.ddp:
        ctx = mp.get_context("spawn")
        queue = ctx.SimpleQueue()
        mp.spawn(ddp_worker, args=(args, free_port(), queue), nprocs=args.ddp, join=True)
        result = queue.get()
    else:
        result = run_single(args, load_fashion_mnist(args.data))
    result["torch"] = torch.__version__
    result["env"] = {k: os.environ.get(k, "") for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY")}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as e:  # a missing or malformed data file: one line, no traceback
        sys.exit(f"train_mlp.py: {e}")
