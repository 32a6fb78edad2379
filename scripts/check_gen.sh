#!/usr/bin/env bash
# Fail when gen/ is stale: regenerate from proto/ into a temporary directory, with the same
# `buf generate` (buf.gen.yaml) as make gen, and compare with the committed gen/ (caches
# such as __pycache__ are ignored).
# Never modifies the working tree. Exit 0 when up to date, 1 when not.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/shop-check-gen.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# A copy of the committed tree, and a fresh generation from proto/.
mkdir -p "$TMP/committed" "$TMP/fresh"
if [ -d gen/shop ]; then
    cp -R gen/shop "$TMP/committed/shop"
fi
scripts/gen.sh "$TMP/fresh" >/dev/null

clean() { find "$1" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} + 2>/dev/null || true; }
clean "$TMP/committed"
clean "$TMP/fresh"

if diff -r -q "$TMP/committed" "$TMP/fresh" >"$TMP/diff.txt" 2>&1; then
    echo "check_gen.sh: gen/ is up to date with proto/"
    exit 0
fi

echo "check_gen.sh: gen/ is stale: it differs from a fresh generation of proto/." >&2
echo "Run scripts/gen.sh (make gen) and commit the result. Differences:" >&2
sed -e "s#$TMP/committed#gen#g" -e "s#$TMP/fresh#fresh#g" "$TMP/diff.txt" >&2
exit 1
