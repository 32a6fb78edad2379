#!/usr/bin/env bash
# Set up everything the cluster and the tests need on a fresh Debian/Ubuntu
# machine, idempotently; a second run only checks.
#
#   devstack/provision.sh            # system packages, .venv, servers, tools
#   devstack/provision.sh bench      # ... plus the load tools (wrk, ghz)
#
# Downloads and builds are cached in ${SHOP_CACHE:-~/.cache/shop} (Go binaries,
# Kafka jars) and in the usual pip / Go / Maven caches.
#
# Progress (devstack/provision/progress.sh): each step that has work to do says what, why and
# about how long it takes the first time before it starts (about 20 minutes in all on 2 cores,
# most of it building the Go servers); a heartbeat line at least every 20 s while it runs; the
# total time at the end. A failed step names its log (in ~/.cache/shop/logs) and shows its tail.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROGRESS_NAME=provision
# shellcheck source=devstack/provision/progress.sh
source devstack/provision/progress.sh
trap 'rc=$?; heartbeat_stop; ((rc == 0)) || echo "provision: FAILED after $((SECONDS - PROGRESS_T0))s" >&2' EXIT
LOGS="${SHOP_CACHE:-$HOME/.cache/shop}/logs"
mkdir -p "$LOGS"

want_bench=0
[ "${1:-}" = "bench" ] && want_bench=1

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. System packages (PostgreSQL, Redis, a JDK and Maven for Kafka).
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v java >/dev/null || missing+=(default-jdk-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v git >/dev/null || missing+=(git)
command -v runuser >/dev/null || missing+=(util-linux)
command -v chromium >/dev/null || missing+=(chromium)  # the browser test of the live stream (headless)
[ "$want_bench" = 1 ] && { command -v wrk >/dev/null || missing+=(wrk); }
if [ ${#missing[@]} -gt 0 ]; then
  log="$LOGS/provision-apt.log"
  : >"$log"
  announce "apt: installing ${missing[*]}" "the servers (PostgreSQL, Redis) and the JDK and Maven for Kafka" "3 min"
  run_logged "apt-get update" "$log" as_root apt-get update -qq
  run_logged "installing ${missing[*]}" "$log" \
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's postgresql package starts a system cluster on 5432; the local
# cluster runs its own PostgreSQL, so stop the packaged one if it runs.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  as_root pg_ctlcluster "$(pg_lsclusters -h | awk '/online/{print $1; exit}')" main stop 2>/dev/null || true
fi
if ! command -v go >/dev/null; then
  [ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin" \
    || { echo "Go >= 1.25 is needed to build the servers (FerretDB, MinIO, Jaeger): install it first" >&2; exit 1; }
fi

# 2. The Python environment.
python="${PYTHON:-python3}"
stamp=.venv/.installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log="$LOGS/provision-python.log"
  : >"$log"
  announce "python: installing .venv" "the packages pinned in pyproject.toml (services, tests, linters, buf)" "3 min"
  run_logged "creating .venv" "$log" "$python" -m venv .venv
  run_logged "upgrading pip" "$log" .venv/bin/pip install --upgrade pip
  run_logged "installing .[dev] into .venv" "$log" .venv/bin/pip install --progress-bar off -e '.[dev]'
  echo "$want" > "$stamp"
else
  echo "python: .venv cached"
fi

# The code is found through a .pth file: the repo root and gen/ (generated stubs).
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n%s\n' "$PWD" "$PWD/gen" > "$site/shop.pth"

# 3. Servers and tools built from the registries.
# DocumentDB (PostgreSQL extensions under FerretDB v2) builds from upstream tarballs; a local
# mirror of them (../shared/vendor, with its SHA256SUMS) stands in for the download.
if [ -z "${SHOP_SOURCE_MIRROR:-}" ] && [ -f ../shared/vendor/SHA256SUMS ]; then
  SHOP_SOURCE_MIRROR="$(cd ../shared/vendor && pwd)"
  export SHOP_SOURCE_MIRROR
fi
echo "sources: ${SHOP_SOURCE_MIRROR:+mirror }${SHOP_SOURCE_MIRROR:-upstream downloads (no SHOP_SOURCE_MIRROR)}"
bash devstack/provision/documentdb.sh
tools=(ferretdb minio jaeger grpcurl stripe-mock)
[ "$want_bench" = 1 ] && tools+=(ghz)
bash devstack/provision/go_tools.sh "${tools[@]}"
bash devstack/provision/kafka.sh
bash devstack/provision/zipkin.sh
# Offline validators of compose/ and deploy/k8s (docker-compose from apt, kustomize).
bash devstack/provision/deploy_tools.sh
progress_done
