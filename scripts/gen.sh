#!/usr/bin/env bash
# Regenerate the Python code in gen/ from the contracts in proto/: `buf generate` with
# buf.gen.yaml (make gen runs this; a plain `.venv/bin/buf generate` from the repository root
# does the same).
#
#   scripts/gen.sh            # writes gen/shop/...
#   scripts/gen.sh OUT_DIR    # writes OUT_DIR/shop/... instead (used by check_gen.sh)
#
# Produces *_pb2.py (messages), *_pb2_grpc.py (gRPC stubs) and *.pyi (typed stubs,
# mypy-protobuf) for every proto file, plus an empty __init__.py in every package
# directory, so that with gen/ on sys.path modules import as
# `shop.<area>.v1.<file>_pb2`. Deterministic: buf.gen.yaml has `clean: true` (the old tree
# is removed first) and every plugin runs once over all files.
#
# Needs .venv (make deps): buf (buf-bin), grpcio-tools and mypy-protobuf; BUF overrides the buf.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUF="${BUF:-.venv/bin/buf}"
OUT="${1:-}"

for tool in "$BUF" .venv/bin/python .venv/bin/protoc-gen-mypy .venv/bin/protoc-gen-mypy_grpc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "gen.sh: $tool not found (run make deps: it installs buf-bin, grpcio-tools, mypy-protobuf into .venv)" >&2
        exit 1
    fi
done
count="$(find proto -type f -name '*.proto' | wc -l)"
if [ "$count" -eq 0 ]; then
    echo "gen.sh: no .proto files under proto/" >&2
    exit 1
fi

if [ -z "$OUT" ]; then
    "$BUF" generate
    echo "gen.sh: buf generated $count proto files into gen/shop"
    exit 0
fi

# buf writes under OUT_DIR/gen (its --output prefixes the out: of buf.gen.yaml); move it up.
mkdir -p "$OUT"
TMP="$(mktemp -d "$OUT/.gen.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
"$BUF" generate --output "$TMP"
rm -rf "$OUT/shop"
mv "$TMP/gen/shop" "$OUT/shop"
echo "gen.sh: buf generated $count proto files into $OUT/shop"
