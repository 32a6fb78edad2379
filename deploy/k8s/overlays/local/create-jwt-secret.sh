#!/usr/bin/env bash
# Create Secret shop-jwt (jwt_private.pem, jwt_public.pem: a fresh Ed25519 key pair) for the
# local overlay, in namespace ${NAMESPACE:-shop}.  An existing Secret is kept (a new key would
# invalidate every token signed with the old one) unless FORCE=1.  The keys exist only in the
# cluster; a temporary directory holds them for the kubectl call.
#
#   bash deploy/k8s/overlays/local/create-jwt-secret.sh      (needs kubectl and `make deps`)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
ns=${NAMESPACE:-shop}

if [[ ${FORCE:-0} != 1 ]] && kubectl -n "$ns" get secret shop-jwt >/dev/null 2>&1; then
    echo "secret $ns/shop-jwt exists, kept (FORCE=1 replaces it)"
    exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$repo/.venv/bin/python" - "$dir" <<'PY'
import os
import sys
from pathlib import Path

from common.auth import generate_key_pair

keys = Path(sys.argv[1])
private_pem, public_pem = generate_key_pair()
fd = os.open(keys / "jwt_private.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "wb") as out:
    out.write(private_pem)
(keys / "jwt_public.pem").write_bytes(public_pem)
PY
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" create secret generic shop-jwt \
    --from-file=jwt_private.pem="$dir/jwt_private.pem" \
    --from-file=jwt_public.pem="$dir/jwt_public.pem" \
    --dry-run=client -o yaml | kubectl apply -f -
