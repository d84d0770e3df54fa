#!/usr/bin/env bash
# bench/run.sh: load-test this service side by side with the performance anchors, in one run, and
# print the ratios the performance targets are stated in (README, "Performance"). Loopback only.
#
#   apt-get install -y wrk python3-fastapi python3-uvicorn python3-httptools python3-uvloop
#   bash bench/run.sh            # ROUNDS=3 DUR=10 by default; about 10 minutes on 2 cores
#
# Part 1 runs the shared harness (../shared/bench/anchor/run_anchors.sh): POST /egfr on the bare
# net/http floor server, FastAPI 1 worker sync, FastAPI 2 workers async, and this service with request
# logging on (to a file), interleaved over ROUNDS rounds, with start-up time and RSS.
# Part 2 measures this service alone, interleaved: POST /egfr, GET /Patient/{id}, and
# GET /Patient?identifier=… with 1k and with 100k stored patients (tokens from the dev issuer);
# the start-up of each run includes replaying its journal. Part 3 is the durable-create benchmark
# (16 concurrent clients, group commit against one fsync per create) from go test.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd ../shared/bench && pwd)}
PARTS=${PARTS:-123}  # which parts to run, e.g. PARTS=2
ROUNDS=${ROUNDS:-3} DUR=${DUR:-10} WARM=${WARM:-2} CONNS=${CONNS:-64} THREADS=${THREADS:-2}
OUT=${BENCH_OUT:-/tmp/bench-results}/clinicalapi-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 2; }
BIN=$OUT/clinicalapi
go build -o "$BIN" .
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

if [[ $PARTS == *1* ]]; then
echo "== part 1: POST /egfr against the anchors (shared harness)" >&2
CANDIDATE="env DATA_DIR=$OUT/egfr-data $BIN >>$OUT/requests.log" \
  CONFIGS="go-egfr fastapi-1w fastapi-2w-async candidate" ROUNDS=$ROUNDS DUR=$DUR WARM=$WARM \
  BENCH_OUT=$OUT/anchors "$SHARED/anchor/run_anchors.sh" | tee "$OUT/part1.txt"
fi

if [[ $PARTS == *2* ]]; then
echo "== part 2: Patient routes" >&2
"$BIN" dev-issuer >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fs -o /dev/null 127.0.0.1:9000/token && break; sleep 0.1; done
TOKEN=$(curl -fsS 127.0.0.1:9000/token)
export OIDC_ISSUER=http://127.0.0.1:9000 OIDC_AUDIENCE=clinicalapi

start_svc() {  # DATA_DIR PORT -> sets SVC and STARTUP_MS (launch to first /readyz 200)
  local t0 t1
  t0=$(date +%s%N)
  DATA_DIR=$1 PORT=$2 "$BIN" >>"$OUT/requests.log" 2>&1 & SVC=$!; pids+=("$SVC")
  until curl -fs -o /dev/null "127.0.0.1:$2/readyz"; do sleep 0.002; done
  t1=$(date +%s%N)
  STARTUP_MS=$(( (t1 - t0) / 1000000 ))
}
stop_svc() { kill "$SVC"; wait "$SVC" 2>/dev/null || true; }

seed() {  # DATA_DIR COUNT: COUNT patients (plus the one searched for) through POST /Patient
  start_svc "$1" 18200
  curl -fsS -o /dev/null -X POST 127.0.0.1:18200/Patient -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/fhir+json' \
    -d '{"resourceType":"Patient","identifier":[{"system":"urn:bench","value":"target"}],"gender":"female"}'
  BENCH_SEED=1 BENCH_SEED_PER_THREAD=$(( $2 / 2 )) BENCH_TOKEN=$TOKEN \
    wrk -t2 -c16 -d$(( $2 / 1000 + 5 ))s -s bench/fhir.lua http://127.0.0.1:18200 >/dev/null
  stop_svc
}
seed "$OUT/data-1k" 1000
seed "$OUT/data-100k" 100000

id=$(start_svc "$OUT/data-1k" 18201; curl -fsS "127.0.0.1:18201/Patient?identifier=urn:bench|target" \
  -H "Authorization: Bearer $TOKEN" | python3 -c 'import json,sys; print(json.load(sys.stdin)["entry"][0]["resource"]["id"])'; stop_svc)
printf '{"sex":"female","serum_creatinine_umol_l":80.0,"age":50}' >"$OUT/egfr.json"

load() {  # LABEL DATA_DIR METHOD PATH [BODY]
  local label=$1 dir=$2 method=$3 path=$4 body=${5:-} line rss
  start_svc "$dir" 18202
  BENCH_METHOD=$method BENCH_TOKEN=$TOKEN BENCH_BODY_FILE=$body BENCH_CTYPE=application/json \
    wrk -t"$THREADS" -c"$CONNS" -d"$WARM"s -s bench/fhir.lua "http://127.0.0.1:18202$path" >/dev/null
  line=$(BENCH_METHOD=$method BENCH_TOKEN=$TOKEN BENCH_BODY_FILE=$body BENCH_CTYPE=application/json \
    wrk -t"$THREADS" -c"$CONNS" -d"$DUR"s -s bench/fhir.lua "http://127.0.0.1:18202$path" | sed -n 's/^WRK_RESULT //p')
  rss=$(awk '/VmHWM/{print $2}' "/proc/$SVC/status")
  stop_svc
  echo "{\"label\":\"$label\",\"startup_ms\":$STARTUP_MS,\"peak_rss_kb\":$rss,${line#\{}" | tee -a "$OUT/part2.jsonl"
}
for ((r = 1; r <= ROUNDS; r++)); do
  configs=(egfr read search-1k search-100k)
  for ((i = 0; i < ${#configs[@]}; i++)); do
    case ${configs[$(( (i + r - 1) % ${#configs[@]} ))]} in
      egfr)        load egfr "$OUT/data-1k" POST /egfr "$OUT/egfr.json" ;;
      read)        load patient-read "$OUT/data-1k" GET "/Patient/$id" ;;
      search-1k)   load search-identifier-1k "$OUT/data-1k" GET "/Patient?identifier=urn:bench%7Ctarget" ;;
      search-100k) load search-identifier-100k "$OUT/data-100k" GET "/Patient?identifier=urn:bench%7Ctarget" ;;
    esac
  done
done

kill "${pids[0]}"
fi

if [[ $PARTS == *3* ]]; then
echo "== part 3: durable POST /Patient, 16 concurrent clients, group commit vs one fsync per create" >&2
go test -run '^$' -bench 'BenchmarkPatientCreate' -benchtime=3s -count="$ROUNDS" . | tee "$OUT/part3.txt"
fi

python3 - "$OUT" <<'PY'
import json, os, re, statistics, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/part2.jsonl")] if os.path.exists(f"{out}/part2.jsonl") else []
med = lambda label, k: statistics.median(r[k] for r in rows if r["label"] == label)
if rows:
  print("\npart 2 (medians of %d rounds)" % len([r for r in rows if r["label"] == "egfr"]))
  for label in ["egfr", "patient-read", "search-identifier-1k", "search-identifier-100k"]:
    print(f"  {label:24s} {med(label,'rps'):9.0f} req/s  p50 {med(label,'p50_ms'):6.2f} ms  p99 {med(label,'p99_ms'):6.2f} ms"
          f"  start-up {med(label,'startup_ms'):5.0f} ms  peak RSS {med(label,'peak_rss_kb')/1024:5.1f} MB")
  print(f"  GET /Patient/{{id}} / POST /egfr throughput     {med('patient-read','rps')/med('egfr','rps'):.2f}x")
  print(f"  identifier search p99, 100k / 1k patients     {med('search-identifier-100k','p99_ms')/med('search-identifier-1k','p99_ms'):.2f}x")
rates = {}
for line in (open(f"{out}/part3.txt") if os.path.exists(f"{out}/part3.txt") else []):
    m = re.match(r"BenchmarkPatientCreate/(\w+)-\d+\s.*?([\d.]+) creates/s", line)
    if m:
        rates.setdefault(m.group(1), []).append(float(m.group(2)))
if len(rates) == 2:
    g, f = statistics.median(rates["GroupCommit"]), statistics.median(rates["FsyncPerWrite"])
    print(f"\npart 3: durable creates/s, 16 clients: group commit {g:.0f}, one fsync per create {f:.0f}: {g/f:.2f}x")
PY
echo "results: $OUT" >&2
