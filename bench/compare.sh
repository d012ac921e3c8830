#!/usr/bin/env bash
# bench/compare.sh — BnCluster against PyTorch on the same machine, same network, data, batch and
# optimizer (issue 5). One command; runs every measurement one after the other (never two at once)
# and prints a Markdown report on stdout (progress goes to stderr).
#
#   bench/compare.sh                 # defaults: STEPS=200 WARMUP=20 ROUNDS=3
#   STEPS=30 WARMUP=5 ROUNDS=1 bench/compare.sh
#   OUT=/tmp/cmp bench/compare.sh     # also keep every raw JSON/stderr file in /tmp/cmp
#   ACCURACY=1 bench/compare.sh       # also train PyTorch 2 epochs and report its test accuracy
#   BNCLUSTER="path/to/bncluster" bench/compare.sh   # another BnCluster command (default: the Release build)
#
# Network 784-512-256-10: per hidden layer Linear(no bias) → BatchNorm1d → ReLU, then Linear(bias),
# softmax cross-entropy; Fashion-MNIST (IDX gz from the Debian package dataset-fashion-mnist),
# global batch 256, Adam lr 1e-3. Measured: samples/s of one process with 2 threads and of 2 worker
# processes with 1 thread each (PyTorch: DistributedDataParallel, gloo), and GEMM GFLOP/s of
# BnCluster's kernels against numpy on OpenBLAS. A BnCluster or PyTorch run that fails shows
# "n/a (reason)" in its cell; the rest of the comparison still runs.
# The host is shared and its speed drifts within minutes, so every throughput run is repeated ROUNDS times, the
# rounds interleaved (BnCluster, PyTorch, BnCluster, …): a slow minute hits both sides. Each side's figure is its best
# round (as each GEMM figure is the best of its rounds), every round is listed, and the gen0 and RSS targets take the
# worst round.
set -euo pipefail

STEPS=${STEPS:-200}
WARMUP=${WARMUP:-20}
ROUNDS=${ROUNDS:-3}
BATCH=256
HIDDEN=512,256
LR=1e-3
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
RUN_TIMEOUT=${RUN_TIMEOUT:-900}  # seconds per single run, so a hung run cannot stall the script
ACCURACY=${ACCURACY:-0}
PY=/usr/bin/python3               # Debian's python3-torch/-numpy live here, not in a pyenv on PATH

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
NODE_DLL=src/BnCluster.Node/bin/Release/net10.0/bncluster.dll
BENCH_DLL=bench/BnCluster.Benchmarks/bin/Release/net10.0/BnCluster.Benchmarks.dll

if [[ -n "${OUT:-}" ]]; then
    WORK=$OUT
    mkdir -p "$WORK"
    rm -f "$WORK"/*.out "$WORK"/*.err "$WORK"/*.fail  # a reused folder must not leak old results
else
    WORK=$(mktemp -d -t bncluster-compare.XXXXXX)
    trap 'rm -rf "$WORK"' EXIT
fi

log() { echo "[compare $(date -u +%H:%M:%S)] $*" >&2; }
die() { echo "compare.sh: $*" >&2; exit 1; }

case "$STEPS$WARMUP$ROUNDS" in *[!0-9]*) die "STEPS, WARMUP and ROUNDS must be whole numbers (got STEPS=$STEPS WARMUP=$WARMUP ROUNDS=$ROUNDS)";; esac
(( STEPS > 0 )) || die "STEPS must be positive"
(( ROUNDS > 0 )) || die "ROUNDS must be positive"

# ---------------------------------------------------------------- prerequisites
PACKAGES=(python3-torch python3-numpy libopenblas0-pthread dataset-fashion-mnist)
missing_prerequisites() {
    local missing=()
    [[ -x $PY ]] && "$PY" -c 'import torch' 2>/dev/null || missing+=(python3-torch)
    [[ -x $PY ]] && "$PY" -c 'import numpy' 2>/dev/null || missing+=(python3-numpy)
    compgen -G '/usr/lib/*/openblas-pthread/libopenblas*.so*' >/dev/null || missing+=(libopenblas0-pthread)
    for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
        [[ -f $DATA/$f ]] || { missing+=(dataset-fashion-mnist); break; }
    done
    echo "${missing[@]}"
}
MISSING=$(missing_prerequisites)
if [[ -n $MISSING ]]; then
    if [[ $(id -u) -eq 0 ]]; then
        log "installing missing packages: $MISSING"
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${PACKAGES[@]}" >&2
        MISSING=$(missing_prerequisites)
        [[ -z $MISSING ]] || die "still missing after apt-get install: $MISSING"
    else
        die "missing: $MISSING. Install as root: apt-get update && apt-get install -y ${PACKAGES[*]}"
    fi
fi
command -v dotnet >/dev/null || die "dotnet (SDK 10) is not on PATH"

# ---------------------------------------------------------------- build (not measured)
NODE_BUILD=ok BENCH_BUILD=ok
log "building BnCluster.Node (Release)"
dotnet build -c Release -nologo -v q src/BnCluster.Node >"$WORK/build-node.log" 2>&1 || NODE_BUILD="build failed (see build-node.log)"
log "building BnCluster.Benchmarks (Release)"
dotnet build -c Release -nologo -v q bench/BnCluster.Benchmarks >"$WORK/build-bench.log" 2>&1 || BENCH_BUILD="build failed (see build-bench.log)"
[[ $NODE_BUILD == ok ]] || log "BnCluster.Node: $NODE_BUILD"
[[ $BENCH_BUILD == ok ]] || log "BnCluster.Benchmarks: $BENCH_BUILD"

# ---------------------------------------------------------------- runs
# run NAME CMD...: stdout → NAME.out, stderr → NAME.err; on failure NAME.fail holds one reason line.
run() {
    local name=$1; shift
    log "run $name: $*"
    local rc=0
    timeout --kill-after=10 "$RUN_TIMEOUT" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || rc=$?
    if (( rc != 0 )); then
        local reason
        if (( rc == 124 )); then reason="timed out after ${RUN_TIMEOUT}s"
        else reason="exit $rc: $(awk 'NF && !/^[[:space:]]*at /{print; exit}' "$WORK/$name.err" | cut -c1-120)"
        fi
        echo "$reason" >"$WORK/$name.fail"
        log "run $name failed: $reason"
    fi
}
skip() { echo "$2" >"$WORK/$1.fail"; log "skip $1: $2"; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
stat_before=$(head -n 1 /proc/stat)  # CPU time by kind; steal = time the hypervisor gave our vCPUs to others
BN_ARGS=(bench --dataset fashion-mnist --hidden "$HIDDEN" --batch "$BATCH" --optimizer adam --lr "$LR" --steps "$STEPS" --warmup "$WARMUP" --json)
read -r -a BN_CMD <<<"${BNCLUSTER:-dotnet $NODE_DLL}"
PT_ARGS=(bench/pytorch/train_mlp.py --data "$DATA" --hidden "$HIDDEN" --batch "$BATCH" --lr "$LR" --steps "$STEPS" --warmup "$WARMUP")
for (( r = 1; r <= ROUNDS; r++ )); do
    if [[ $NODE_BUILD == ok || -n ${BNCLUSTER:-} ]]; then
        run bn_1p.$r "${BN_CMD[@]}" "${BN_ARGS[@]}" --workers 1 --threads 2
    else
        skip bn_1p.$r "$NODE_BUILD"
    fi
    # Two OpenMP wait policies for the single process; the report keeps the faster (PyTorch's best).
    run pt_1p.$r "$PY" "${PT_ARGS[@]}" --threads 2
    OMP_WAIT_POLICY=PASSIVE run pt_1p_passive.$r "$PY" "${PT_ARGS[@]}" --threads 2
    if [[ $NODE_BUILD == ok || -n ${BNCLUSTER:-} ]]; then
        # The cluster path of `train --workers 2 --processes`: a coordinator here, 2 worker processes over loopback.
        run bn_2p.$r "${BN_CMD[@]}" "${BN_ARGS[@]}" --workers 2 --processes --threads 1
    else
        skip bn_2p.$r "$NODE_BUILD"
    fi
    run pt_ddp.$r "$PY" "${PT_ARGS[@]}" --ddp 2
    # BnCluster pins its worker processes to CPUs of their own by default; PyTorch's ranks pinned the same way too,
    # and the report keeps the faster.
    run pt_ddp_pin.$r "$PY" "${PT_ARGS[@]}" --ddp 2 --pin
    if [[ $NODE_BUILD == ok || -n ${BNCLUSTER:-} ]]; then
        # The same with every tensor over TCP (what a worker on another machine does), to show what shared memory saves.
        run bn_2p_tcp.$r "${BN_CMD[@]}" "${BN_ARGS[@]}" --workers 2 --processes --threads 1 --no-shared-memory
    else
        skip bn_2p_tcp.$r "$NODE_BUILD"
    fi
done
if [[ $ACCURACY == 1 ]]; then
    run pt_accuracy "$PY" bench/pytorch/train_mlp.py --data "$DATA" --hidden "$HIDDEN" --batch "$BATCH" --lr "$LR" --threads 2 --epochs 2
fi

# GEMM runs interleaved too (a few seconds each): a disturbed stretch of a few seconds once cost one side 40% on a
# 2-thread shape when each side ran once.
for (( r = 1; r <= ROUNDS; r++ )); do
    if [[ $BENCH_BUILD == ok ]]; then
        run gemm_bn.$r dotnet "$BENCH_DLL" gemm --json
    else
        skip gemm_bn.$r "$BENCH_BUILD"
    fi
    OPENBLAS_NUM_THREADS=1 run gemm_np1.$r "$PY" bench/pytorch/gemm.py
    OPENBLAS_NUM_THREADS=2 run gemm_np2.$r "$PY" bench/pytorch/gemm.py
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
stat_after=$(head -n 1 /proc/stat)
steal=$(awk -v a="$stat_before" -v b="$stat_after" 'BEGIN { n = split(a, x); split(b, y); t = 0
    for (i = 2; i <= n; i++) t += y[i] - x[i]; printf "%.0f%%", (t > 0 ? 100 * (y[9] - x[9]) / t : 0) }')

# ---------------------------------------------------------------- report
CPU_MODEL=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
CPUS=$(nproc --all)
if grep -qw avx512f /proc/cpuinfo; then SIMD="AVX-512"; elif grep -qw avx2 /proc/cpuinfo; then SIMD="AVX2, no AVX-512"; else SIMD="no AVX2"; fi
export WORK STEPS WARMUP ROUNDS BATCH CPU_MODEL CPUS SIMD load_before load_after steal
"$PY" - <<'EOF'
import glob, json, os

work = os.environ["WORK"]


def cell(name):
    """(last JSON object printed by run NAME, None) or (None, reason)."""
    fail = os.path.join(work, name + ".fail")
    if os.path.exists(fail):
        return None, open(fail).read().strip() or "failed"
    path = os.path.join(work, name + ".out")
    if not os.path.exists(path):
        return None, "not run"
    objs = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            try:
                objs.append(json.loads(line))
            except ValueError:
                pass
    if not objs:
        return None, "no JSON output"
    return objs, None


def one(name, key="samples_per_second"):
    objs, reason = cell(name)
    if objs is None:
        return None, reason, None
    obj = objs[-1]
    value = obj.get(key)
    if not isinstance(value, (int, float)):
        return None, f"no numeric '{key}' in output", obj
    return float(value), None, obj


ROUNDS = int(os.environ["ROUNDS"])


def rounds(name, key="samples_per_second"):
    """[(value, reason, obj)] of run NAME.1 … NAME.ROUNDS, in run order."""
    return [one(f"{name}.{r}", key) for r in range(1, ROUNDS + 1)]


def best(name, key="samples_per_second"):
    """(best value, reason when no round gave one, that round's object, every round's (value, reason, obj))."""
    all_rounds = rounds(name, key)
    good = [x for x in all_rounds if x[0] is not None]
    if not good:
        return None, all_rounds[-1][1], None, all_rounds
    value, _, obj = max(good, key=lambda x: x[0])
    return value, None, obj, all_rounds


def na(reason):
    return f"n/a ({reason.replace('|', '/')})"


def fmt(value, reason, digits=0):
    return f"{value:,.{digits}f}" if value is not None else na(reason)


# `bench --workers 1` warms up until its JIT is quiet (at least WARMUP steps): say how many steps that took.
bn_warm = [o["warmup_steps"] for _, _, o in rounds("bn_1p") if isinstance(o, dict) and isinstance(o.get("warmup_steps"), (int, float))]
bn_warm_range = (f"{min(bn_warm):.0f}" if min(bn_warm) == max(bn_warm) else f"{min(bn_warm):.0f}–{max(bn_warm):.0f}") if bn_warm else ""
bn_warm_text = (f"; BnCluster's 1-process runs after {bn_warm_range} warm-up steps ({os.environ['WARMUP']},"
                f" then until its JIT had compiled nothing for 0.25 s), its 2-process runs after {os.environ['WARMUP']}") if bn_warm else ""

print(f"## BnCluster vs PyTorch — {os.popen('date -u +%Y-%m-%dT%H:%MZ').read().strip()}")
print()
print(f"Machine: {os.environ['CPU_MODEL']}, {os.environ['CPUS']} CPUs, {os.environ['SIMD']}; load average "
      f"{os.environ['load_before']} before, {os.environ['load_after']} after; CPU steal over the runs "
      f"{os.environ['steal']} (time the hypervisor gave this machine's vCPUs to others; a shared host can be slow "
      f"without it too: the single-thread GEMM figures below tell how fast the cores were). "
      f"Network 784-512-256-10 (Linear no-bias → BatchNorm → ReLU), Fashion-MNIST, global batch "
      f"{os.environ['BATCH']}, Adam lr 1e-3; {os.environ['STEPS']} timed steps per run, {ROUNDS} round(s)"
      f" (PyTorch after {os.environ['WARMUP']} warm-up steps{bn_warm_text}).")
print()

# -- throughput
bn1, bn1_why, bn1_obj, bn1_rounds = best("bn_1p")
bn2, bn2_why, bn2_obj, bn2_rounds = best("bn_2p")
bn2_tcp, bn2_tcp_why, bn2_tcp_obj, bn2_tcp_rounds = best("bn_2p_tcp")
pt_default, pt_default_why, pt_default_obj, pt_default_rounds = best("pt_1p")
pt_passive, pt_passive_why, pt_passive_obj, pt_passive_rounds = best("pt_1p_passive")
candidates = [(v, o, "default") for v, o in [(pt_default, pt_default_obj)] if v is not None]
candidates += [(v, o, "OMP_WAIT_POLICY=PASSIVE") for v, o in [(pt_passive, pt_passive_obj)] if v is not None]
if candidates:
    pt1, _, pt1_policy = max(candidates, key=lambda c: c[0])
    pt1_why = None
else:
    pt1, pt1_policy, pt1_why = None, None, pt_default_why
ddp_free, ddp_free_why, _, ddp_rounds = best("pt_ddp")
ddp_pin, ddp_pin_why, _, ddp_pin_rounds = best("pt_ddp_pin")
if ddp_free is None and ddp_pin is None:
    ddp, ddp_why, ddp_pinned = None, ddp_free_why, None
elif ddp_pin is not None and (ddp_free is None or ddp_pin > ddp_free):
    ddp, ddp_why, ddp_pinned = ddp_pin, None, True
else:
    ddp, ddp_why, ddp_pinned = ddp_free, None, False


def ratio_row(label, bn, bn_why, pt, pt_why, target):
    if bn is not None and pt is not None:
        r = bn / pt
        ratio, met = f"{r:.2f}×", ("met" if target is None or r >= target else "missed")
    else:
        ratio, met = "n/a", "n/a"
    if target is None:
        met = "(no target)"
    print(f"| {label} | {fmt(bn, bn_why)} | {fmt(pt, pt_why)} | {ratio} | {'—' if target is None else f'≥ {target}×'} | {met} |")


print("| Configuration | BnCluster samples/s | PyTorch samples/s | BnCluster / PyTorch | Target | |")
print("|---|---:|---:|---:|---:|---|")
ratio_row("1 process, 2 threads", bn1, bn1_why, pt1, pt1_why, 2.0)
ratio_row("2 processes × 1 thread (PyTorch: DDP gloo¹)", bn2, bn2_why, ddp, ddp_why, 1.5)
ratio_row("2 processes × 1 thread, BnCluster tensors over TCP² (PyTorch: DDP gloo¹)", bn2_tcp, bn2_tcp_why, ddp, ddp_why, None)
print()
notes = ["¹ PyTorch's SyncBatchNorm refuses CPU tensors, so its DDP run normalizes each process's "
         "128-row shard with that shard's own statistics (plain BatchNorm1d) — less work than "
         "BnCluster's synchronized batch norm, which exchanges statistics per BN layer per step.",
         "² `--no-shared-memory`: the step's gradients, parameters and BN statistics go over the loopback socket, "
         "and the coordinator makes the whole optimizer update, as with workers on other machines; by default the "
         "worker processes on the coordinator's machine all-reduce their BN statistics and their gradients among "
         "themselves through shared-memory files and each updates its slice of the parameters there (control "
         "messages always use the socket)."]
if pt1_policy:
    other = {"default": pt_passive, "OMP_WAIT_POLICY=PASSIVE": pt_default}[pt1_policy]
    other_txt = f"{other:,.0f}" if other is not None else "failed"
    notes.append(f"PyTorch 1-process figure: the faster of libgomp's default wait policy and "
                 f"OMP_WAIT_POLICY=PASSIVE (this run: {pt1_policy}; the other's best round gave {other_txt} samples/s); "
                 f"OMP_NUM_THREADS and OPENBLAS_NUM_THREADS = threads per process.")


def listed(all_rounds):
    return " / ".join(f"{v:,.0f}" if v is not None else na(why) for v, why, _ in all_rounds)


notes.append(f"Each figure is the best of {ROUNDS} round(s), the rounds interleaved with the other side's; every round, "
             f"in run order (samples/s): BnCluster 1 process {listed(bn1_rounds)}; PyTorch 1 process "
             f"{listed(pt_default_rounds)} (default), {listed(pt_passive_rounds)} (PASSIVE); BnCluster 2 processes "
             f"{listed(bn2_rounds)}; over TCP {listed(bn2_tcp_rounds)}; PyTorch DDP {listed(ddp_rounds)} (ranks not "
             f"pinned), {listed(ddp_pin_rounds)} (rank i pinned to CPU i, as BnCluster pins its worker processes by default"
             f"{'' if ddp_pinned is None else '; the table has the ' + ('pinned' if ddp_pinned else 'unpinned') + ' figure, the faster'}).")
for n in notes:
    print(n)
    print()

# -- targets beyond throughput (issue 5)
def target_row(label, value, why, limit, unit, fmt_value):
    bound = f"= {limit}{unit}" if limit == 0 else f"≤ {limit}{unit}"
    if value is None:
        print(f"| {label} | {na(why)} | {bound} | n/a |")
    else:
        print(f"| {label} | {fmt_value(value)} | {bound} | {'met' if value <= limit else 'missed'} |")


def measured(obj, why, key, what):
    """(number or None, reason): obj[key] when numeric."""
    if obj is None:
        return None, why
    value = obj.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), None
    return None, what


print("| Target | Measured | Target | |")
print("|---|---:|---:|---|")
waiting, waiting_why = measured(bn2_obj, bn2_why, "waiting_percent",
                                "no per-worker phase events reached the coordinator")
target_row("waiting for reductions and gradients, 2 processes (mean over workers, % of step; the best round)", waiting, waiting_why, 10, "%",
           lambda v: f"{v:.1f}%")
# RSS and gen0: the worst round (the best round's figure could hide a collection another round had).
rss_all = [m for _, _, o in bn2_rounds if o for m in (o.get("worker_peak_rss_mb") or [])]
if rss_all and all(isinstance(m, (int, float)) for m in rss_all):
    worst, worst_why = float(max(rss_all)), None
else:
    worst, worst_why = None, (bn2_why if bn2_obj is None else "worker peak RSS not read")
target_row(f"worker process peak RSS (VmHWM, largest of the 2 workers over {ROUNDS} round(s))", worst, worst_why, 200, " MB",
           lambda v: f"{v:.0f} MB")
for lbl, all_rounds, why in [("1 process", bn1_rounds, bn1_why), ("2 processes, coordinator", bn2_rounds, bn2_why)]:
    counts = [measured(o, None, "gen0", "no gen0 count") for _, _, o in all_rounds if o]
    values = [v for v, _ in counts if v is not None]
    gen0, gen0_why = (max(values), None) if values else (None, why or "no gen0 count")
    target_row(f"gen0 collections in {os.environ['STEPS']} steady-state steps, {lbl} (worst of {ROUNDS} round(s): "
               + ", ".join(f"{v:.0f}" for v in values) + ")", gen0, gen0_why, 0, "", lambda v: f"{v:.0f}")
# The worker processes' own gen0 (from the GC counters each sends with its steps): the largest of the 2 over the rounds.
worker_gen0 = [g for _, _, o in bn2_rounds if o for g in (o.get("worker_gen0") or [])]
if worker_gen0 and all(isinstance(g, int) for g in worker_gen0):
    wg, wg_why = max(worker_gen0), None
else:
    wg, wg_why = None, (bn2_why if bn2_obj is None else "no per-worker GC counters reached the coordinator")
target_row(f"gen0 collections in {os.environ['STEPS']} steady-state steps, 2 processes, each worker process (largest over "
           f"{ROUNDS} round(s))", wg, wg_why, 0, "", lambda v: f"{v:.0f}")
print()

# -- BnCluster breakdown
rows = [(lbl, o) for lbl, o in [("1 process, 2 threads", bn1_obj), ("2 processes × 1 thread", bn2_obj),
                                 ("2 processes × 1 thread, tensors over TCP²", bn2_tcp_obj)] if o]
if rows:
    keys = ["ms_per_step", "compute_ms", "bn_wait_ms", "grad_exchange_ms", "other_ms", "waiting_percent", "allocated_bytes_per_step",
            "gen0", "gen1", "gen2", "peak_rss_mb", "worker_peak_rss_mb", "worker_gen0", "worker_allocated_bytes_per_step"]

    def show(v):
        if v is None:
            return "n/a"
        if isinstance(v, list):
            return ", ".join(show(x) for x in v) or "—"
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    print("BnCluster step breakdown of each configuration's best round (times per step; compute, bn_wait, grad_exchange "
          "and waiting_percent per worker, averaged over the workers, from the run's own step-phase log events; other_ms = "
          "ms_per_step minus those three phases: with worker processes, the shared-memory copies, the messages and the "
          "coordinator's share of the CPUs; n/a = no "
          "per-worker events reached the coordinator; GC and allocation of the process running `bench` — the "
          "coordinator with --processes; worker_gen0 and worker_allocated_bytes_per_step: each worker process's own, "
          "from the GC counters it sends with its steps):")
    print()
    print("| Configuration | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for lbl, o in rows:
        print(f"| {lbl} | " + " | ".join(show(o.get(k, "—")) for k in keys) + " |")
    print()

# -- accuracy (optional)
acc, acc_why, acc_obj = one("pt_accuracy", "test_accuracy")
if acc is not None or (acc_why and acc_why != "not run"):
    print(f"PyTorch test accuracy after 2 epochs: {fmt(acc, acc_why, 4)}")
    print()

# -- GEMM
def gemm_objects(name):
    """Every JSON object of runs NAME.1 … NAME.ROUNDS, and the last round's reason when none gave any."""
    runs = [cell(f"{name}.{r}") for r in range(1, ROUNDS + 1)]
    objs = [o for round_objs, _ in runs for o in round_objs or []]
    return objs, (None if objs else runs[-1][1])


def gemm_table(objs):
    """{(product, shape, threads): best GFLOP/s} over the JSON objects of every round."""
    table = {}
    for o in objs:
        key, value = (o.get("product"), o.get("shape"), str(o.get("threads"))), o.get("gflops")
        if isinstance(value, (int, float)) and value > (table.get(key) or 0):
            table[key] = value
    return table


bn_objs, bn_g_why = gemm_objects("gemm_bn")
bn_g = gemm_table(bn_objs)
np_g = {}
np_why = {}
np_objs = {}
for t in ("1", "2"):
    np_objs[t], np_why[t] = gemm_objects(f"gemm_np{t}")
    np_g.update(gemm_table(np_objs[t]))
blas = ""
objs = np_objs["1"]
if objs:
    libs = [l for l in objs[0].get("blas", []) if "libopenblas" in l] or objs[0].get("blas", [])
    blas = f" numpy {objs[0].get('numpy')} on {', '.join(os.path.basename(l) for l in libs) or 'unknown BLAS'}."

kernels = sorted({o.get("kernel") for o in bn_objs if o.get("kernel")})
kernel = f" BnCluster's micro-kernel: {', '.join(kernels)}." if kernels else ""
print(f"GEMM, float32, GFLOP/s (best of {ROUNDS} run(s) of 15 rounds each, BnCluster's and numpy's runs interleaved; "
      f"m×n×k of C[m×n] = op(A)·op(B)).{blas}{kernel}")
print()
print("| Product | m×n×k | Threads | BnCluster | numpy/OpenBLAS | BnCluster / OpenBLAS | Target ≥ 70% |")
print("|---|---|---:|---:|---:|---:|---|")
shapes = [("NN", "256x784x512", True), ("NN", "1024x1024x1024", True),
          ("NT", "256x512x784", False), ("TN", "512x784x256", False)]
for op, shape, targeted in shapes:
    for t in ("1", "2"):
        b = bn_g.get((op, shape, t))
        n = np_g.get((op, shape, t))
        b_txt = f"{b:.1f}" if isinstance(b, (int, float)) else na(bn_g_why or "not measured")
        n_txt = f"{n:.1f}" if isinstance(n, (int, float)) else na(np_why[t] or "not measured")
        if isinstance(b, (int, float)) and isinstance(n, (int, float)) and n > 0:
            pct = b / n * 100
            pct_txt = f"{pct:.0f}%"
            met = ("met" if pct >= 70 else "missed") if targeted else "(training shape, no target)"
        else:
            pct_txt, met = "n/a", ("n/a" if targeted else "(training shape, no target)")
        print(f"| {op} | {shape.replace('x', '×')} | {t} | {b_txt} | {n_txt} | {pct_txt} | {met} |")
print()
print("Threads for numpy = OPENBLAS_NUM_THREADS; for BnCluster = MatMul(threads).")
EOF
