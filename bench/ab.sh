#!/usr/bin/env bash
# Two BnCluster builds side by side: the cluster rows of compare.sh (one process, two worker processes through shared
# memory, two worker processes over TCP), each run ROUNDS times, A and B interleaved so that a slow minute of a shared
# host hits both. Prints the best samples/s of each side and the waiting share of the multi-process rows.
#   bench/ab.sh "dotnet /path/to/old/bncluster.dll" "dotnet src/BnCluster.Node/bin/Release/net10.0/bncluster.dll"
#   ROUNDS=5 STEPS=200 bench/ab.sh A_CMD B_CMD
set -euo pipefail
[[ $# == 2 ]] || { echo "usage: bench/ab.sh A_COMMAND B_COMMAND" >&2; exit 2; }
ROUNDS=${ROUNDS:-3} STEPS=${STEPS:-200} WARMUP=${WARMUP:-20}
WORK=$(mktemp -d -t bncluster-ab.XXXXXX)
ARGS=(bench --dataset fashion-mnist --hidden 512,256 --batch 256 --optimizer adam --lr 1e-3 --steps "$STEPS" --warmup "$WARMUP" --json)
declare -A ROWS=([1p]="--workers 1 --threads 2" [2p]="--workers 2 --processes --threads 1" [2p_tcp]="--workers 2 --processes --threads 1 --no-shared-memory")
for (( r = 1; r <= ROUNDS; r++ )); do
    for row in 1p 2p 2p_tcp; do
        for side in A B; do
            cmd=$([[ $side == A ]] && echo "$1" || echo "$2")
            read -r -a c <<<"$cmd"
            read -r -a extra <<<"${ROWS[$row]}"
            timeout 600 "${c[@]}" "${ARGS[@]}" "${extra[@]}" >"$WORK/$side.$row.$r.json" 2>"$WORK/$side.$row.$r.err" || echo "{}" >"$WORK/$side.$row.$r.json"
        done
    done
done
WORK=$WORK ROUNDS=$ROUNDS python3 - <<'PY'
import json, os
work, rounds = os.environ["WORK"], int(os.environ["ROUNDS"])
def runs(side, row):
    out = []
    for r in range(1, rounds + 1):
        try: out.append(json.load(open(f"{work}/{side}.{row}.{r}.json")))
        except Exception: out.append({})
    return out
print("| row | A samples/s (best) | B samples/s (best) | B / A | A waiting | B waiting | every round A / B |")
print("|---|---:|---:|---:|---:|---:|---|")
for row in ("1p", "2p", "2p_tcp"):
    a, b = runs("A", row), runs("B", row)
    sa = [x.get("samples_per_second") or 0 for x in a]; sb = [x.get("samples_per_second") or 0 for x in b]
    wa = min((x.get("waiting_percent") for x in a if x.get("waiting_percent") is not None), default=None)
    wb = min((x.get("waiting_percent") for x in b if x.get("waiting_percent") is not None), default=None)
    ratio = max(sb) / max(sa) if max(sa) else float("nan")
    fmt = lambda w: "n/a" if w is None else f"{w:.1f}%"
    print(f"| {row} | {max(sa):,.0f} | {max(sb):,.0f} | {ratio:.2f} | {fmt(wa)} | {fmt(wb)} | "
          + ", ".join(f"{x:,.0f}/{y:,.0f}" for x, y in zip(sa, sb)) + " |")
print(f"\n(raw outputs in {work})")
PY
