#!/usr/bin/env bash
# Regenerate the Python code in gen/ from the contracts in proto/.
#
#   scripts/gen.sh            # writes gen/shop/...
#   scripts/gen.sh OUT_DIR    # writes OUT_DIR/shop/... instead (used by check_gen.sh)
#
# Produces *_pb2.py (messages), *_pb2_grpc.py (gRPC stubs) and *.pyi (typed stubs,
# mypy-protobuf) for every proto file, plus an empty __init__.py in every package
# directory, so that with gen/ on sys.path modules import as
# `shop.<area>.v1.<file>_pb2`. Deterministic: the old tree is removed first and the
# files are compiled in one sorted protoc run.
#
# Environment: PYTHON (default .venv/bin/python) must have grpcio-tools; the
# protoc-gen-mypy / protoc-gen-mypy_grpc plugins (mypy-protobuf) are looked up next
# to PYTHON, in .venv/bin, then on PATH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-.venv/bin/python}"
OUT="${1:-gen}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "gen.sh: python not found: $PYTHON (create .venv or set PYTHON)" >&2
    exit 1
fi
PYTHON_DIR="$(dirname "$(command -v "$PYTHON")")"
export PATH="$PYTHON_DIR:$ROOT/.venv/bin:$PATH"
for plugin in protoc-gen-mypy protoc-gen-mypy_grpc; do
    if ! command -v "$plugin" >/dev/null 2>&1; then
        echo "gen.sh: $plugin not found (install mypy-protobuf next to $PYTHON)" >&2
        exit 1
    fi
done

mapfile -t PROTOS < <(find proto -type f -name '*.proto' | LC_ALL=C sort)
if [ "${#PROTOS[@]}" -eq 0 ]; then
    echo "gen.sh: no .proto files under proto/" >&2
    exit 1
fi

rm -rf "$OUT/shop"
mkdir -p "$OUT"

"$PYTHON" -m grpc_tools.protoc \
    -Iproto \
    --python_out="$OUT" \
    --grpc_python_out="$OUT" \
    --mypy_out=quiet:"$OUT" \
    --mypy_grpc_out=quiet:"$OUT" \
    "${PROTOS[@]}"

# Every generated directory is a regular package (gen/ itself is the import root).
find "$OUT/shop" -type d -print0 | LC_ALL=C sort -z | while IFS= read -r -d '' dir; do
    : > "$dir/__init__.py"
done

echo "gen.sh: generated ${#PROTOS[@]} proto files into $OUT/shop"
