#!/usr/bin/env bash
# bench/overload.sh BINARY: what MAX_IN_FLIGHT does under overload. For POST /egfr (CPU-bound) and
# durable POST /Patient (waits on fsync), it finds the connection count that saturates the machine
# (the fewest connections within 5% of the best req/s, over 1-64), then runs 10x that many
# connections against the service with its default cap and with the cap lifted, and prints req/s,
# wrk's p99 (every response), the share refused (the service's own counters) and the p99 of
# accepted requests inside the service (its 2xx histogram: the bucket bound at or above). Loopback
# only; ports 18720-18722 and the dev issuer's 127.0.0.1:9000. Hold flock /work/bench.lock around it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1")
DUR=${DUR:-10} SWEEP=${SWEEP:-4}
out=$(mktemp -d)
issuer='' svc=''
trap 'kill $svc $issuer 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$out"' EXIT
"$bin" dev-issuer >/dev/null 2>&1 &
issuer=$!
for _ in $(seq 100); do curl -fs -o /dev/null 127.0.0.1:9000/token && break; sleep 0.1; done
export BENCH_TOKEN=$(curl -fsS 127.0.0.1:9000/token)
echo '{"sex":"female","serum_creatinine_umol_l":80.0,"age":50}' >"$out/egfr.json"
echo '{"resourceType":"Patient","gender":"female","birthDate":"1974-12-25"}' >"$out/patient.json"

start() { # MAX_IN_FLIGHT: a fresh service with an empty store
  rm -rf "$out/data"
  MAX_IN_FLIGHT=$1 PORT=18720 METRICS_PORT=18721 DATA_DIR="$out/data" OIDC_ISSUER=http://127.0.0.1:9000 \
    OIDC_AUDIENCE=clinicalapi "$bin" >/dev/null 2>&1 &
  svc=$!
  for _ in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18720/readyz)" = 200 ] && return; sleep 0.1; done
  echo "service never ready" >&2; exit 1
}
stop() { kill "$svc"; wait "$svc" 2>/dev/null || true; svc=''; }
load() { # PATH BODY CTYPE CONNS SECS: wrk's JSON result line
  BENCH_METHOD=POST BENCH_BODY_FILE=$2 BENCH_CTYPE=$3 wrk -t2 -c"$4" -d"$5"s --timeout 10s \
    -s bench/fhir.lua "http://127.0.0.1:18720$1" | sed -n 's/^WRK_RESULT //p'
}
report() { # LABEL ROUTE WRK_JSON: one line from wrk's result and the service's metrics
  curl -fsS 127.0.0.1:18721/metrics >"$out/metrics.txt"
  python3 - "$1" "$2" "$3" "$out/metrics.txt" <<'PY'
import json, re, sys
label, route, w, path = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
total = refused = 0; buckets = []
for line in open(path):
    m = re.match(r'(\w+)\{(.*)\} (\S+)$', line)
    if not m or f'route="{route}"' not in m[2]: 
        if line.startswith("http_requests_refused_total "): refused = float(line.split()[1])
        continue
    if m[1] == "http_requests_total": total += float(m[3])
    if m[1] == "http_request_duration_seconds_bucket" and 'status_class="2xx"' in m[2]:
        buckets.append((float(re.search(r'le="([^"]+)"', m[2])[1]), float(m[3])))
n = buckets[-1][1] if buckets else 0
p99 = next((le for le, c in buckets if c >= 0.99 * n), float("nan"))
print(f"{label:34s} {w['rps']:8.0f} req/s  wrk p99 {w['p99_ms']:8.2f} ms  refused {100*refused/max(total,1):5.1f} %"
      f"  accepted p99 in service <= {p99*1000:g} ms  errors {w['errors']}")
PY
}
scenario() { # NAME PATH BODY CTYPE
  best=0 sat=0
  declare -A rps
  start 1000000
  for c in 2 4 8 16 32 64; do
    load "$2" "$3" "$4" $c 1 >/dev/null
    rps[$c]=$(load "$2" "$3" "$4" $c "$SWEEP" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["rps"]))')
    [ "${rps[$c]}" -gt "$best" ] && best=${rps[$c]}
  done
  stop
  for c in 2 4 8 16 32 64; do
    if [ $(( rps[$c] * 100 )) -ge $(( best * 95 )) ]; then sat=$c; break; fi
  done
  echo "$1: req/s by connections: $(for c in 2 4 8 16 32 64; do printf '%s:%s ' $c ${rps[$c]}; done)-> saturated at $sat; now $(( sat * 10 ))"
  for cap in default 1000000; do
    if [ $cap = default ]; then start ""; else start $cap; fi
    load "$2" "$3" "$4" $(( sat * 10 )) 2 >/dev/null
    report "  $(( sat * 10 )) conns, MAX_IN_FLIGHT $cap" "$2" "$(load "$2" "$3" "$4" $(( sat * 10 )) "$DUR")"
    stop
  done
}
scenario "POST /egfr" /egfr "$out/egfr.json" application/json
scenario "POST /Patient (durable)" /Patient "$out/patient.json" application/fhir+json
