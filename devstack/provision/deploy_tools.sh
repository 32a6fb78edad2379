#!/usr/bin/env bash
# The tools of the deploy checks (`make deploy-check`, tests/integration/test_deploy.py), on a
# fresh Debian/Ubuntu machine, idempotently.  No Docker engine is needed by any of them.
#
#   bash devstack/provision/deploy_tools.sh
#
#   * Compose, for `config` validation of compose/docker-compose.yml: the `docker compose`
#     plugin or `docker-compose` when one is there, else apt's docker-compose (1.29 on Debian 12;
#     it validates and renders without an engine).
#   * kustomize, pinned, built with `go install` into ${SHOP_CACHE:-~/.cache/shop}/bin by
#     devstack/provision/go_tools.sh (the deploy checks use it before any `kubectl kustomize`).
#   * kubernetes-validate (with its bundled schemas) is in the dev extra of pyproject.toml, so
#     .venv has it after `make deps`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
PROGRESS_NAME=deploy_tools
# shellcheck source=devstack/provision/progress.sh
source devstack/provision/progress.sh

if docker compose version >/dev/null 2>&1; then
  echo "compose   found   $(docker compose version --short 2>/dev/null || echo plugin) (docker compose)"
elif command -v docker-compose >/dev/null 2>&1; then
  echo "compose   found   $(docker-compose version --short 2>/dev/null || echo '?') ($(command -v docker-compose))"
else
  log="${SHOP_CACHE:-$HOME/.cache/shop}/logs/deploy_tools-apt.log"
  mkdir -p "$(dirname "$log")"
  : >"$log"
  announce "apt: installing docker-compose" "validates compose/docker-compose.yml without a Docker engine" "1 min"
  run_logged "apt-get update" "$log" as_root apt-get update -qq
  run_logged "installing docker-compose" "$log" \
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose
  echo "compose   installed $(docker-compose version --short 2>/dev/null || echo '?')"
fi

bash devstack/provision/go_tools.sh kustomize
