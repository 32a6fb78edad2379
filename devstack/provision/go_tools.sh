#!/usr/bin/env bash
# Build the dev stack's Go servers/tools with `go install` into ${SHOP_CACHE:-$HOME/.cache/shop}/bin.
#
#   bash devstack/provision/go_tools.sh [tool ...]
#
#   tools:  ferretdb minio jaeger grpcurl stripe-mock ghz kustomize   ("all" = every one of them)
#   no args = ferretdb minio jaeger grpcurl stripe-mock     (ghz, a benchmark tool, and kustomize,
#             for the deploy checks, only when named or with "all")
#
# Idempotent: a tool whose binary exists and whose stamp $BIN/.<tool>.version holds the pinned
# version is skipped ("cached"). FORCE=1 rebuilds anyway. Prints one line per tool; the go
# command's own output goes to $SHOP_CACHE/logs/go_tools-<tool>.log (its tail is shown on failure).
# Go's module and build caches stay at their defaults (~/go/pkg/mod, ~/.cache/go-build), so a
# rebuild after a version bump or a wiped $SHOP_CACHE is mostly cache hits.
set -euo pipefail

# ---- pins -------------------------------------------------------------------------------------
# FerretDB v2 (MongoDB wire protocol on PostgreSQL with DocumentDB, which
# devstack/provision/documentdb.sh builds for this version): its own command, with
# authentication, built from a copy of its module plus devstack/ferretdb/gomaxprocs_go125.go.
FERRETDB_VERSION=v2.5.0
# MinIO publishes no semver tags; this is the pseudo-version the module proxy serves as @latest.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
# Jaeger: the v2.x tags are not installable (module path has no /v2), but every v2 release is
# tagged v1.x on the same commit: v1.76.0 == v2.13.0, and its cmd/jaeger is the v2 binary.
JAEGER_VERSION=v1.76.0
JAEGER_V2_VERSION=v2.13.0
GRPCURL_VERSION=v1.9.4
# stripe-mock: Stripe's API (its OpenAPI spec and fixtures) on loopback for the Stripe adapter's tests
# and `SHOP_PAYMENT_PROCESSOR=stripe` in the local cluster (devstack/stripe_mock.py). Its fixtures
# file is copied next to the binary: devstack starts it with a variant of them.
STRIPE_MOCK_VERSION=v0.203.0
GHZ_VERSION=v0.121.0
# kustomize renders deploy/k8s (devstack/provision/deploy_tools.sh).
KUSTOMIZE_VERSION=v5.8.1  # v5.8.2+ need Go >= 1.26; this stack asks for 1.25

DEFAULT_TOOLS=(ferretdb minio jaeger grpcurl stripe-mock)
ALL_TOOLS=(ferretdb minio jaeger grpcurl stripe-mock ghz kustomize)
# -----------------------------------------------------------------------------------------------

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${SHOP_CACHE:-$HOME/.cache/shop}
BIN=$CACHE/bin
LOGS=$CACHE/logs
SRC=$CACHE/src
export GOBIN=$BIN
# None of the pins needs a Go newer than 1.25, so never let the go command fetch a toolchain.
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
# -v: the go command logs each package as it compiles it, which the heartbeat lines show.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-v"

if ! command -v go >/dev/null 2>&1; then
    if [[ -x /usr/local/go/bin/go ]]; then
        export PATH=$PATH:/usr/local/go/bin
    else
        echo "go_tools: no 'go' on PATH (need Go >= 1.25)" >&2
        exit 1
    fi
fi

mkdir -p "$BIN" "$LOGS" "$SRC"

# announce, run_logged (a heartbeat while a tool builds; on failure the log's tail), die_with_log.
PROGRESS_NAME=go_tools
# shellcheck source=devstack/provision/progress.sh
source "$REPO_ROOT/devstack/provision/progress.sh"

# What each tool is for, and about how long its first `go install` takes on 2 cores (later runs
# find it cached).
why_for() {
    case $1 in
        ferretdb) echo "the MongoDB-compatible catalog store (product_svc), over DocumentDB" ;;
        minio) echo "the S3-compatible store for product images" ;;
        jaeger) echo "the trace collector and UI (OTLP)" ;;
        grpcurl) echo "grpcurl, to call any service by hand" ;;
        stripe-mock) echo "Stripe's API on loopback for the Stripe payment adapter" ;;
        ghz) echo "the gRPC load generator of the benchmarks" ;;
        kustomize) echo "renders deploy/k8s for the deploy checks" ;;
    esac
}
eta_for() {
    case $1 in
        ferretdb) echo "2 min" ;;
        minio) echo "6 min" ;;
        jaeger) echo "8 min" ;;
        grpcurl | stripe-mock | kustomize) echo "1 min" ;;
        ghz) echo "2 min" ;;
    esac
}

# What $BIN/.<tool>.version must hold for <tool> to count as up to date.
stamp_for() {
    case $1 in
        ferretdb)
            # The added file is part of the pin: editing it triggers a rebuild.
            local h
            h=$(sha256sum <"$REPO_ROOT/devstack/ferretdb/gomaxprocs_go125.go" | cut -c1-12)
            echo "$FERRETDB_VERSION+cmd.$h" ;;
        minio) echo "$MINIO_VERSION" ;;
        jaeger) echo "$JAEGER_VERSION" ;;
        grpcurl) echo "$GRPCURL_VERSION" ;;
        stripe-mock) echo "$STRIPE_MOCK_VERSION" ;;
        ghz) echo "$GHZ_VERSION" ;;
        kustomize) echo "$KUSTOMIZE_VERSION" ;;
        *) echo "go_tools: unknown tool '$1' (known: ${ALL_TOOLS[*]} all)" >&2; return 1 ;;
    esac
}

build_ferretdb() {
    # FerretDB's own command: authentication on by default (the embeddable package, the
    # alternative, always runs without).  Plain `go install .../cmd/ferretdb@v2.5.0` does not
    # compile with Go >= 1.25 (see devstack/ferretdb/gomaxprocs_go125.go), so it is built from a
    # copy of the module with that one file added; FerretDB's own go.mod and go.sum pin the rest.
    local mod=github.com/FerretDB/FerretDB/v2 src dir
    src=$(go mod download -json "$mod@$FERRETDB_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [[ -f $src/cmd/ferretdb/main.go ]] || { echo "cannot locate $mod@$FERRETDB_VERSION in the module cache"; return 1; }
    dir=$SRC/ferretdb-$FERRETDB_VERSION
    rm -rf "$dir"
    cp -r "$src" "$dir"
    chmod -R u+w "$dir"
    cp "$REPO_ROOT/devstack/ferretdb/gomaxprocs_go125.go" "$dir/cmd/ferretdb/"
    # What FerretDB's `go generate` would write from git: the version it reports.
    echo "$FERRETDB_VERSION" >"$dir/build/version/version.txt"
    cd "$dir"
    go build -trimpath -buildvcs=false -o "$BIN/ferretdb" ./cmd/ferretdb
}

build_minio() {
    go install -trimpath "github.com/minio/minio@$MINIO_VERSION"
}

build_jaeger() {
    # `go install .../cmd/jaeger@v1.76.0` is refused: jaeger's go.mod has a replace directive.
    # So build it from a throwaway main module that requires jaeger, repeats its replace
    # directives and starts from jaeger's own go.sum (the checksum database does not answer for
    # some of its dependencies here, and go.sum entries need no look-up).
    local mod dir gomod
    mod=github.com/jaegertracing/jaeger
    dir=$SRC/jaeger-$JAEGER_VERSION
    rm -rf "$dir"
    mkdir -p "$dir"
    gomod=$(go mod download -json "$mod@$JAEGER_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [[ -f $gomod/go.mod ]] || { echo "cannot locate $mod@$JAEGER_VERSION in the module cache"; return 1; }
    {
        printf 'module shop-devstack/jaeger-build\n\ngo %s\n\nrequire %s %s\n\n' \
            "$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod/go.mod")" "$mod" "$JAEGER_VERSION"
        # replace directives, single-line or in a block
        awk '/^replace[ \t]*\($/ {b=1; next} b && /^\)/ {b=0; next} b {print "replace " $0; next} /^replace / {print}' \
            "$gomod/go.mod"
    } >"$dir/go.mod"
    cp "$gomod/go.sum" "$dir/go.sum"
    chmod u+w "$dir/go.sum"
    cd "$dir"
    go get "$mod/cmd/jaeger@$JAEGER_VERSION"
    go install -trimpath \
        -ldflags "-X $mod/internal/version.latestVersion=$JAEGER_V2_VERSION" \
        "$mod/cmd/jaeger"
}

build_grpcurl() {
    go install -trimpath -ldflags "-X main.version=$GRPCURL_VERSION" \
        "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
}

build_stripe-mock() {
    local mod=github.com/stripe/stripe-mock dir
    go install -trimpath "$mod@$STRIPE_MOCK_VERSION"
    # The fixtures the binary embeds, for `stripe-mock -fixtures` (devstack/stripe_mock.py).
    dir=$(go mod download -json "$mod@$STRIPE_MOCK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [[ -f $dir/embedded/openapi/fixtures3.json ]] || { echo "no fixtures3.json in $mod@$STRIPE_MOCK_VERSION"; return 1; }
    install -m 644 "$dir/embedded/openapi/fixtures3.json" "$BIN/stripe-mock-fixtures.json"
}

build_ghz() {
    go install -trimpath -ldflags "-X main.version=$GHZ_VERSION" \
        "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
}

build_kustomize() {
    go install -trimpath "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
}

# ---- arguments --------------------------------------------------------------------------------
tools=()
if [[ $# -eq 0 ]]; then
    tools=("${DEFAULT_TOOLS[@]}")
else
    for a in "$@"; do
        if [[ $a == all ]]; then tools+=("${ALL_TOOLS[@]}"); else tools+=("$a"); fi
    done
fi
for t in "${tools[@]}"; do stamp_for "$t" >/dev/null; done # reject unknown names up front

# ---- build ------------------------------------------------------------------------------------
declare -A done_
for t in "${tools[@]}"; do
    [[ -n ${done_[$t]:-} ]] && continue
    done_[$t]=1
    stamp=$(stamp_for "$t")
    stampfile=$BIN/.$t.version
    if [[ ${FORCE:-0} != 1 && -x $BIN/$t && -f $stampfile && $(<"$stampfile") == "$stamp" ]]; then
        printf '%-9s cached  %s  %s\n' "$t" "$stamp" "$BIN/$t"
        continue
    fi
    rm -f "$stampfile"
    log=$LOGS/go_tools-$t.log
    start=$SECONDS
    announce "building $t $stamp" "$(why_for "$t")" "$(eta_for "$t")"
    : >"$log"
    # A heartbeat line every 20 s: the elapsed time and the log's last line (the package compiling).
    run_logged "building $t" "$log" "build_$t"
    [[ -x $BIN/$t ]] || die_with_log "$t" "$log"
    echo "$stamp" >"$stampfile"
    printf '%-9s built   %s  %s  (%ss)\n' "$t" "$stamp" "$BIN/$t" "$((SECONDS - start))"
done
progress_done
