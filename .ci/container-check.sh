#!/usr/bin/env bash
# No Docker engine runs here, so this proves the Dockerfile's steps instead: it builds the binary with
# the Dockerfile's own build command and Go release (its GOTOOLCHAIN), checks it is static, and runs
# it from an otherwise empty root directory (chroot) as uid 65532, the distroless nonroot user, until
# /livez answers; the only other thing in that root is the nonroot user's home, as the distroless
# image has it, for DATA_DIR. Then it checks the Patient routes refuse without auth configured and the
# journal is in DATA_DIR. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
build_cmd=$(sed -n 's/^RUN \(CGO_ENABLED=0 go build .*\) -o \/out\/clinicalapi \.$/\1/p' Dockerfile)
[ -n "$build_cmd" ] || { echo "container-check: build command not found in Dockerfile" >&2; exit 1; }
# The Dockerfile names the Go release that compiles the binary; build with exactly that one.
release_go=$(sed -n 's/^ENV GOTOOLCHAIN=\(go[0-9.]*\)$/\1/p' Dockerfile)
[ -n "$release_go" ] || { echo "container-check: ENV GOTOOLCHAIN not found in Dockerfile" >&2; exit 1; }
root=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$root" "$root.log"' EXIT
pid=
env GOTOOLCHAIN="$release_go" $build_cmd -o "$root/clinicalapi" .
built_with=$(go version "$root/clinicalapi" | cut -d' ' -f2)
[ "$built_with" = "$release_go" ] || { echo "container-check: built with $built_with, want $release_go" >&2; exit 1; }
if ldd "$root/clinicalapi" >/dev/null 2>&1; then
  echo "container-check: binary is dynamically linked" >&2; exit 1
fi
data_dir=$(sed -n 's/^ENV DATA_DIR=\(.*\)$/\1/p' Dockerfile)
[ -n "$data_dir" ] || { echo "container-check: ENV DATA_DIR not found in Dockerfile" >&2; exit 1; }
chmod 0755 "$root"
install -d -o 65532 -g 65532 -m 0700 "$root/home/nonroot"
port=18099
DATA_DIR=$data_dir PORT=$port chroot --userspec=65532:65532 "$root" /clinicalapi >"$root.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  if body=$(curl -fsS "http://127.0.0.1:$port/livez" 2>/dev/null); then
    echo "container-check: /livez from an empty root as uid $(stat -c %u /proc/$pid) -> $body"
    [ "$(stat -c %u /proc/$pid)" = 65532 ] || { echo "container-check: not running as 65532" >&2; exit 1; }
    # Secure by default: no OIDC settings, so the Patient routes refuse, naming what to set.
    body=$(curl -sS -w ' %{http_code}' -X POST "http://127.0.0.1:$port/Patient" \
      -H 'Content-Type: application/fhir+json' -d '{"resourceType":"Patient","gender":"unknown"}')
    case "$body" in
      *OIDC_ISSUER*OIDC_AUDIENCE*' 401') ;;
      *) echo "container-check: POST /Patient without auth configured gave: $body" >&2; exit 1 ;;
    esac
    [ -f "$root$data_dir/patients.journal" ] || { echo "container-check: no journal in $data_dir" >&2; exit 1; }
    echo "container-check: POST /Patient -> 401 until OIDC is configured; journal at $data_dir: $(stat -c 'owner %u, mode %a' "$root$data_dir/patients.journal")"
    exit 0
  fi
  sleep 0.1
done
echo "container-check: /livez never answered" >&2
cat "$root.log" >&2
exit 1
