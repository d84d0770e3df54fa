#!/bin/sh
# docs/update.sh [VERSION]: the one command to (re)vendor Swagger UI into docs/.
# Run from the repo root: sh docs/update.sh 5.35.0
# Bump on purpose; commit the vendored files, SWAGGER-UI-VERSION and SHA256SUMS together.
# Uses `npm pack` (downloads the tarball only; installs nothing, runs no scripts, so the
# package's @scarf/scarf analytics dependency never runs). Needs npm, tar, sha256sum, openssl.
# CI re-checks offline with: (cd docs && sha256sum -c SHA256SUMS)
set -eu
VERSION="${1:-5.35.0}"
DEST=docs
FILES="swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png favicon-16x16.png LICENSE NOTICE"

[ -f go.mod ] && [ -d "$DEST" ] || { echo "run from the repo root: sh docs/update.sh [VERSION]" >&2; exit 1; }
for t in npm tar sha256sum openssl base64; do
  command -v "$t" >/dev/null 2>&1 || { echo "missing tool: $t" >&2; exit 1; }
done

tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT INT TERM
( cd "$tmp" && npm pack --silent "swagger-ui-dist@$VERSION" >/dev/null ) ||
  { echo "npm pack swagger-ui-dist@$VERSION failed" >&2; exit 1; }
tgz="$tmp/swagger-ui-dist-$VERSION.tgz"
[ -f "$tgz" ] || { echo "npm pack did not produce $tgz" >&2; exit 1; }

want="$(npm view "swagger-ui-dist@$VERSION" dist.integrity)"
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 | tr -d '\n')"
[ -n "$want" ] && [ "$want" = "$got" ] || {
  echo "integrity mismatch for swagger-ui-dist@$VERSION: registry '$want', tarball '$got'" >&2; exit 1; }

mkdir -p "$tmp/x"
# shellcheck disable=SC2046
tar -xzf "$tgz" -C "$tmp/x" $(for f in $FILES; do printf 'package/%s ' "$f"; done)
for f in $FILES; do cp "$tmp/x/package/$f" "$DEST/$f"; done

printf 'swagger-ui-dist %s\ntarball-sha256 %s\n' "$VERSION" "$(sha256sum "$tgz" | cut -d' ' -f1)" > "$DEST/SWAGGER-UI-VERSION"
# Only the vendored files: our own index.html/init.js change with ordinary edits.
# shellcheck disable=SC2086
( cd "$DEST" && sha256sum $FILES > SHA256SUMS && sha256sum -c --quiet SHA256SUMS )
echo "vendored swagger-ui-dist@$VERSION into $DEST/"
cat "$DEST/SWAGGER-UI-VERSION"
