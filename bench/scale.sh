#!/usr/bin/env bash
# bench/scale.sh: the embedded Patient store at NHS-trust scale. Measures a store of N realistic
# Patients (default 1,000,000) side by side with a 1,000-Patient store, in one run, and prints
# figure | 1k | 1M | ratio. Loopback only; wrk on the same machine, as in bench/run.sh.
#
#   apt-get install -y wrk
#   bash bench/scale.sh                      # N=1000000 ROUNDS=3 DUR=10; ~12 min on 2 cores with seeding
#   N=100000 ROUNDS=1 DUR=5 bash bench/scale.sh
#
# 1. Seeding (skipped when SEED_DIR already holds a completely seeded store of that size): a fresh
#    service on an empty DATA_DIR takes SMALL and N Patients through POST /Patient from SEED_CONNS
#    (32) concurrent clients (wrk -t2, bench/scale.lua): ~930-byte UK Core-style Patients with a
#    unique valid NHS number (Modulus 11), accented names, address with a postcode, phone and email,
#    marital status and a GP practice (ODS code). creates/s = Patients / (first POST sent .. last
#    answer). Then the store count is checked (_count=0) and SAMPLE (10,000) Patients spread over the
#    store are looked up by NHS number, which gives the "id nhs-number" list the reads pick from.
# 2. ROUNDS interleaved rounds (the order of the stores and of the routes alternates): for each store
#    a fresh process (same binary and environment for both): launch to first /readyz 200, VmRSS after
#    ready + 2 s idle, then GET /Patient/{id} and GET /Patient?identifier=<nhs-number system>|<n>,
#    each wrk -t2 -c64 for WARM (2) s of warm-up then DUR (10) s, every request a random Patient of
#    the sample; VmHWM after the load; journal bytes on disk (du of DATA_DIR).
# Output: JSON lines in $OUT, logs and the service's start-up log lines next to it (${OUT%.jsonl}.d),
# and the table (medians over the rounds) on stdout.
#
# Tokens come from bench/issuer.py (Python stdlib; any port), not `clinicalapi dev-issuer`, whose
# 127.0.0.1:9000 may be in use on a shared machine. Environment (defaults):
#   N=1000000 SMALL=1000 ROUNDS=3 DUR=10 WARM=2 THREADS=2 CONNS=64 SEED_CONNS=32 SAMPLE=10000
#   SEED_DIR=<repo>/../<repo name>-data   seeded stores, reused between runs: SEED_DIR/n<count>/{data,sample.txt,seed.json}
#   PORT_BASE=18400                       issuer PORT_BASE+40, seeding PORT_BASE+10, measured service PORT_BASE+11
#   OUT=/tmp/bench-results/scale-<UTC time>.jsonl   BIN (default: go build into the log dir)
#   REPORT=<a results .jsonl>             only print the table of an earlier run
#   SEED_COMPARE="old=BIN new=BIN"        only seeding, each build in turn over ROUNDS (see below)
set -euo pipefail
cd "$(dirname "$0")/.."
# report JSONL: the table, medians over the rounds, from a results file (this run's, or REPORT=file).
report() {
python3 - "$1" <<'PY'
import json, statistics, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(out)]
small, big = sorted({r["store"] for r in rows if r["kind"] == "start"})
bad = [r for r in rows if r["kind"] == "load" and (r["errors"] or r["status_errors"])]
def med(kind, store, key, route=None):
    v = [r[key] for r in rows if r["kind"] == kind and r["store"] == store and (route is None or r.get("route") == route)]
    return statistics.median(v) if v else float("nan")
label = lambda n: f"{n // 1000000}M" if n % 1000000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)
figures = [
    ("creates/s while seeding (%d clients)" % med("seed", big, "clients"), lambda s: med("seed", s, "creates_per_s"), "{:,.0f}"),
    ("served Patient, bytes (mean)", lambda s: med("seed", s, "patient_bytes_mean"), "{:,.0f}"),
    ("ready after restart, s", lambda s: med("start", s, "ready_ms") / 1000, "{:,.2f}"),
    ("idle RSS (ready + 2 s), MiB", lambda s: med("start", s, "idle_rss_kb") / 1024, "{:,.0f}"),
    ("journal on disk (du), MB", lambda s: med("start", s, "journal_bytes") / 1e6, "{:,.1f}"),
    ("GET /Patient/{id} req/s", lambda s: med("load", s, "rps", "read"), "{:,.0f}"),
    ("GET /Patient/{id} p50, ms", lambda s: med("load", s, "p50_ms", "read"), "{:,.2f}"),
    ("GET /Patient/{id} p99, ms", lambda s: med("load", s, "p99_ms", "read"), "{:,.2f}"),
    ("identifier search req/s", lambda s: med("load", s, "rps", "search"), "{:,.0f}"),
    ("identifier search p50, ms", lambda s: med("load", s, "p50_ms", "search"), "{:,.2f}"),
    ("identifier search p99, ms", lambda s: med("load", s, "p99_ms", "search"), "{:,.2f}"),
    ("peak RSS after the loads, MiB", lambda s: med("peak", s, "peak_rss_kb") / 1024, "{:,.0f}"),
]
rounds = len({r["round"] for r in rows if r["kind"] == "start"})
print(f"\nstore scale: medians of {rounds} rounds; {out}")
print(f"| figure | {label(small)} | {label(big)} | ratio |\n|---|---:|---:|---:|")
for name, f, fmt in figures:
    a, b = f(small), f(big)
    print(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f}× |" if a else f"| {name} | {fmt.format(a)} | {fmt.format(b)} | |")
for r in rows:
    if r["kind"] == "seed" and r.get("reused"):
        print(f"(store {label(r['store'])} seeded {r['date']} by an earlier run, load then {r['load']})")
if bad:
    print(f"WARNING: {len(bad)} load runs had errors: {bad}")
    sys.exit(1)
PY
}
if [[ -n ${REPORT:-} ]]; then report "$REPORT"; exit; fi
REPO=$PWD
N=${N:-1000000} SMALL=${SMALL:-1000} ROUNDS=${ROUNDS:-3} DUR=${DUR:-10} WARM=${WARM:-2}
THREADS=${THREADS:-2} CONNS=${CONNS:-64} SEED_CONNS=${SEED_CONNS:-32} SAMPLE=${SAMPLE:-10000}
SEED_DIR=${SEED_DIR:-$(dirname "$REPO")/$(basename "$REPO")-data}
PORT_BASE=${PORT_BASE:-18400}
ISSUER_PORT=$((PORT_BASE + 40)) SEED_PORT=$((PORT_BASE + 10)) SVC_PORT=$((PORT_BASE + 11))
OUT=${OUT:-/tmp/bench-results/scale-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
LOG=${OUT%.jsonl}.d
mkdir -p "$(dirname "$OUT")" "$LOG" "$SEED_DIR"
: >"$OUT"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 2; }
if [[ -z ${BIN:-} ]]; then BIN=$LOG/clinicalapi; go build -o "$BIN" .; fi
say() { echo "== $*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

for p in $ISSUER_PORT $SEED_PORT $SVC_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p is in use; set PORT_BASE" >&2; exit 2; fi
done
python3 bench/issuer.py "$ISSUER_PORT" clinicalapi >"$LOG/issuer.log" 2>&1 & pids+=($!)
for _ in $(seq 300); do curl -fs -o /dev/null "127.0.0.1:$ISSUER_PORT/token" && break; sleep 0.05; done
TOKEN=$(curl -fsS "127.0.0.1:$ISSUER_PORT/token")
export OIDC_ISSUER=http://127.0.0.1:$ISSUER_PORT OIDC_AUDIENCE=clinicalapi

# start_svc DATA_DIR PORT: sets SVC and READY_MS (launch to first /readyz 200). Polls every 2 ms for
# the first half second, then every 20 ms, so polling costs little CPU during a long journal replay.
start_svc() {
  local t0 t1 i=0
  : >"$LOG/current.log"
  t0=$(date +%s%N)
  DATA_DIR=$1 PORT=$2 "$BIN" >>"$LOG/current.log" 2>&1 & SVC=$!; pids+=("$SVC")
  until curl -fs -o /dev/null "127.0.0.1:$2/readyz"; do
    kill -0 "$SVC" 2>/dev/null || { tail -5 "$LOG/current.log" >&2; echo "service exited" >&2; exit 1; }
    if (( i++ < 250 )); then sleep 0.002; else sleep 0.02; fi
  done
  t1=$(date +%s%N)
  READY_MS=$(( (t1 - t0) / 1000000 ))
}
# stop_svc: SIGTERM, wait; keep the service's own log lines (not the per-request ones) in service.log.
stop_svc() {
  kill "$SVC"; wait "$SVC" 2>/dev/null || true
  grep -v '"msg":"request"' "$LOG/current.log" >>"$LOG/service.log" || true
  rm -f "$LOG/current.log"
}
wrk_result() { sed -n 's/^WRK_RESULT //p' "$1"; }

# seed COUNT: make SEED_DIR/n<COUNT> unless it is complete (seed.json is written last).
seed() {
  local count=$1 dir=$SEED_DIR/n$1 w res
  if [[ -f $dir/seed.json && -f $dir/sample.txt && -f $dir/data/patients.journal ]]; then
    say "seed $count: reusing $dir (seeded $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["date"])' "$dir/seed.json"))"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["reused"]=True; print(json.dumps(d))' \
      "$dir/seed.json" >>"$OUT"
    return
  fi
  rm -rf "$dir" && mkdir -p "$dir/data" "$LOG/done-$count"
  say "seed $count: POST /Patient, $SEED_CONNS clients (load $(load))"
  local ld; ld=$(load)
  start_svc "$dir/data" "$SEED_PORT"
  BENCH_MODE=seed BENCH_TOKEN=$TOKEN BENCH_N=$count BENCH_THREADS=2 BENCH_DONE_DIR=$LOG/done-$count \
    wrk -t2 -c"$SEED_CONNS" -d$(( count / 500 + 120 ))s -s bench/scale.lua "http://127.0.0.1:$SEED_PORT" \
    >"$LOG/seed-$count.txt" 2>&1 & w=$!; pids+=("$w")
  # wrk runs for its whole -d; the script's threads stop once all their creates are answered
  until [[ -e $LOG/done-$count/thread-1 && -e $LOG/done-$count/thread-2 ]] || ! kill -0 "$w" 2>/dev/null; do sleep 0.05; done
  kill -INT "$w" 2>/dev/null || true; wait "$w" || true
  res=$(wrk_result "$LOG/seed-$count.txt")
  [[ -n $res ]] || { cat "$LOG/seed-$count.txt" >&2; exit 1; }
  say "seed $count: $res"
  # check the count, and look SAMPLE Patients up by NHS number (the same walk as bench/scale.lua)
  BENCH_TOKEN=$TOKEN python3 - "$count" "$SAMPLE" "$SEED_PORT" "$dir/sample.txt" "$res" "$ld" >"$dir/seed.json.tmp" <<'PY'
import datetime, http.client, json, os, random, sys
count, sample, port, out, res, ld = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5]), sys.argv[6]
if res["created"] != count or res["failed"]:
    sys.exit(f"seeding created {res['created']} of {count} Patients, {res['failed']} failed (see the seed log)")
def nhs_numbers(t, T, quota):  # thread t (1-based) of T: as nhs_number() and next_patient() in scale.lua
    out, k = [], t - 1
    while len(out) < quota:
        p = 400000000 + (k * 7919) % 400000000
        d = [int(c) for c in "%09d" % p]
        check = 11 - sum(x * (10 - i) for i, x in enumerate(d)) % 11
        check = 0 if check == 11 else check
        if check != 10:
            out.append("%09d%d" % (p, check))
        k += T
    return out
T = 2
numbers = [n for t in range(1, T + 1) for n in nhs_numbers(t, T, count // T + (1 if t <= count % T else 0))]
assert len(set(numbers)) == count
conn = http.client.HTTPConnection("127.0.0.1", port)
hdr = {"Authorization": "Bearer " + os.environ["BENCH_TOKEN"]}
def get(path):
    conn.request("GET", path, headers=hdr)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"GET {path}: {r.status} {body[:300]!r}")
    return body
total = json.loads(get("/Patient?_count=0"))["total"]
if total != count:
    sys.exit(f"the store holds {total} Patients, expected {count}")
picked = random.Random(11).sample(numbers, min(sample, count))
sizes = []
with open(out, "w") as f:
    for i, n in enumerate(picked):
        b = json.loads(get("/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C" + n))
        if b.get("total") != 1 or len(b.get("entry", [])) != 1:
            sys.exit(f"NHS number {n}: {b.get('total')} matches, expected 1")
        pid = b["entry"][0]["resource"]["id"]
        if i < 500:
            sizes.append(len(get("/Patient/" + pid)))
        f.write(f"{pid} {n}\n")
print(json.dumps({"kind": "seed", "store": count, "clients": int(os.environ.get("SEED_CONNS", 32)), **res,
                  "patient_bytes_mean": round(sum(sizes) / len(sizes)), "sample": len(picked),
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "load": ld, "reused": False}))
PY
  stop_svc
  mv "$dir/seed.json.tmp" "$dir/seed.json"
  cat "$dir/seed.json" >>"$OUT"
}
export SEED_CONNS
# SEED_COMPARE="old=/path/to/bin new=/path/to/bin": only the seeding of N Patients, by each build in
# turn (the order rotating), ROUNDS times, each into a fresh directory that is removed afterwards;
# prints creates/s per build (medians) and the ratios. For "creates at least as fast" side by side.
if [[ -n ${SEED_COMPARE:-} ]]; then
  read -r -a builds <<<"$SEED_COMPARE"
  for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < ${#builds[@]}; i++)); do
      b=${builds[$(( (i + r) % ${#builds[@]} ))]}
      BIN=${b#*=} SEED_DIR=$LOG/seed-${b%%=*}
      seed "$N"
      sed -i '$ s/^{/{"build":"'"${b%%=*}"'",/' "$OUT"
      rm -rf "$SEED_DIR"
    done
  done
  python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"build"' in l]
med = {b: statistics.median(r["creates_per_s"] for r in rows if r["build"] == b) for b in dict.fromkeys(r["build"] for r in rows)}
first = next(iter(med))
for b, v in med.items():
    print(f"{b:10s} {v:9,.0f} creates/s  {v / med[first]:.2f}x {first}  ({sum(r['build'] == b for r in rows)} rounds)")
PY
  exit 0
fi
seed "$SMALL"
seed "$N"

# measure ROUND COUNT: one fresh process on the store of COUNT; start-up, idle RSS, then both routes.
measure() {
  local r=$1 count=$2 dir=$SEED_DIR/n$2 ld rss bytes mode routes res
  ld=$(load)
  say "round $r, store $count: restart (load $ld)"
  start_svc "$dir/data" "$SVC_PORT"
  sleep 2
  rss=$(awk '/^VmRSS/{print $2}' "/proc/$SVC/status")
  bytes=$(du -sB1 "$dir/data" | cut -f1)
  echo "{\"kind\":\"start\",\"round\":$r,\"store\":$count,\"ready_ms\":$READY_MS,\"idle_rss_kb\":$rss,\"journal_bytes\":$bytes,\"load\":\"$ld\"}" | tee -a "$OUT" >&2
  routes=(read search); (( r % 2 == 0 )) && routes=(search read)
  for mode in "${routes[@]}"; do
    ld=$(load)
    BENCH_MODE=$mode BENCH_TOKEN=$TOKEN BENCH_SAMPLE=$dir/sample.txt \
      wrk -t"$THREADS" -c"$CONNS" -d"$WARM"s -s bench/scale.lua "http://127.0.0.1:$SVC_PORT" >/dev/null
    BENCH_MODE=$mode BENCH_TOKEN=$TOKEN BENCH_SAMPLE=$dir/sample.txt \
      wrk -t"$THREADS" -c"$CONNS" -d"$DUR"s -s bench/scale.lua "http://127.0.0.1:$SVC_PORT" >"$LOG/wrk.txt"
    res=$(wrk_result "$LOG/wrk.txt")
    [[ -n $res ]] || { cat "$LOG/wrk.txt" >&2; exit 1; }
    echo "{\"kind\":\"load\",\"round\":$r,\"store\":$count,\"route\":\"$mode\",\"load\":\"$ld\",${res#\{}" | tee -a "$OUT" >&2
  done
  echo "{\"kind\":\"peak\",\"round\":$r,\"store\":$count,\"peak_rss_kb\":$(awk '/^VmHWM/{print $2}' "/proc/$SVC/status")}" | tee -a "$OUT" >&2
  stop_svc
}
for ((r = 1; r <= ROUNDS; r++)); do
  if (( r % 2 )); then measure "$r" "$SMALL"; measure "$r" "$N"; else measure "$r" "$N"; measure "$r" "$SMALL"; fi
done

report "$OUT"
