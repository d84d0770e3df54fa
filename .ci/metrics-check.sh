#!/usr/bin/env bash
# The metrics against the real tools (Debian's prometheus package), not against our own parser: runs
# the service binary ($1) with METRICS_PORT set, sends it a known number of requests, checks a live
# scrape with `promtool check metrics`, then starts a real Prometheus server that scrapes the service
# and asks its HTTP API for the request count, which must be exactly what was sent. Loopback only;
# ports 18701-18703.
set -euo pipefail
bin=$(realpath "$1")
n=7 api=18701 metrics=18702 prom=18703
tmp=$(mktemp -d)
svc='' prompid=''
trap 'kill $svc $prompid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
for port in $api $metrics $prom; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "metrics-check: 127.0.0.1:$port is already in use"; exit 1; fi
done
PORT=$api METRICS_PORT=$metrics DATA_DIR="$tmp/data" "$bin" >"$tmp/service.log" 2>&1 &
svc=$!
# until URL answers 200 (at most ~30 s), or fail with the log of the process that should answer it
wait_200() {
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1")" = 200 ] && return 0
    sleep 0.1
  done
  echo "metrics-check: no 200 from $1:"; tail -n 20 "$2"; return 1
}
wait_200 "http://127.0.0.1:$api/readyz" "$tmp/service.log"
for _ in $(seq $n); do
  curl -fsS -o /dev/null -X POST "http://127.0.0.1:$api/egfr" -H 'Content-Type: application/json' \
    -d '{"sex": "female", "serum_creatinine_umol_l": 110, "age": 72}'
done
curl -fsS "http://127.0.0.1:$metrics/metrics" >"$tmp/scrape.txt"
promtool check metrics <"$tmp/scrape.txt"
echo "metrics-check: promtool check metrics passes on a live scrape ($(wc -l <"$tmp/scrape.txt") lines)"

cat >"$tmp/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: clinicalapi
    static_configs:
      - targets: ["127.0.0.1:$metrics"]
YML
promtool check config "$tmp/prometheus.yml" >/dev/null
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
  --web.listen-address="127.0.0.1:$prom" >"$tmp/prometheus.log" 2>&1 &
prompid=$!
wait_200 "http://127.0.0.1:$prom/-/ready" "$tmp/prometheus.log"
query='http_requests_total{job="clinicalapi",route="/egfr",method="POST",status_class="2xx"}'
for _ in $(seq 60); do
  got=$(curl -fsS --max-time 2 -G "http://127.0.0.1:$prom/api/v1/query" --data-urlencode "query=$query" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")')
  if [ "$got" = "$n" ]; then
    echo "metrics-check: Prometheus $(prometheus --version 2>&1 | head -n1 | cut -d' ' -f3) scraped the service; $query = $got"
    exit 0
  fi
  sleep 0.5
done
echo "metrics-check: Prometheus answered '$got' for $query, want $n"; tail -n 20 "$tmp/prometheus.log"
exit 1
