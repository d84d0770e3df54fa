#!/usr/bin/env bash
# bench/compare.sh: POST /egfr on several builds of this service and on the bare net/http floor
# (../shared/bench/anchor/gohttp_limit), interleaved in one run, each start rotated through the
# order, with every build's median req/s and p99 as a ratio of the floor's. For deciding whether a
# change to the hot path pays for itself: build the variants, then compare them side by side.
#
#   git worktree add /tmp/old HEAD~1 && (cd /tmp/old && go build -o /tmp/old.bin .)
#   go build -o /tmp/new.bin .
#   bash bench/compare.sh old=/tmp/old.bin new=/tmp/new.bin   # ROUNDS=3 DUR=10 WARM=2 CONNS=64 BENCH_PORT=18500
#
# Each build runs with request logging on (to a file) and an empty DATA_DIR. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd ../shared/bench && pwd)}
ROUNDS=${ROUNDS:-3} DUR=${DUR:-10} WARM=${WARM:-2} CONNS=${CONNS:-64} PORT=${BENCH_PORT:-18500}
OUT=${BENCH_OUT:-/tmp/bench-results}/compare-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 2; }
(cd "$SHARED/anchor/gohttp_limit" && go build -o "$OUT/floor" .)
labels=(floor) cmds=("$OUT/floor -addr 127.0.0.1:{PORT}")
for arg in "$@"; do
  labels+=("${arg%%=*}") cmds+=("env DATA_DIR=$OUT/data-${arg%%=*} ${arg#*=} >>$OUT/requests.log")
done
n=${#labels[@]}
for ((r = 0; r < ROUNDS; r++)); do
  for ((i = 0; i < n; i++)); do
    k=$(( (i + r) % n ))
    echo "-- round $((r + 1))/$ROUNDS: ${labels[$k]}" >&2
    "$SHARED/serve_bench.sh" -p "$PORT" -l "${labels[$k]}" -c "$CONNS" -d "$DUR" -w "$WARM" \
      -- bash -c "exec ${cmds[$k]}" 2>>"$OUT/bench.log" | tail -n1 >>"$OUT/raw.jsonl"
    sleep 2
  done
done
python3 - "$OUT/raw.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
labels = list(dict.fromkeys(r["label"] for r in rows))
med = lambda l, k: statistics.median(r[k] for r in rows if r["label"] == l)
f_rps, f_p99 = med("floor", "rps"), med("floor", "p99_ms")
print(f"{'build':12s} {'req/s':>9s} {'x floor':>8s} {'p99 ms':>8s} {'x floor':>8s}  ({len(rows)//len(labels)} rounds, medians)")
for l in labels:
    print(f"{l:12s} {med(l,'rps'):9.0f} {med(l,'rps')/f_rps:8.2f} {med(l,'p99_ms'):8.2f} {med(l,'p99_ms')/f_p99:8.2f}")
PY
echo "results: $OUT" >&2
