#!/usr/bin/env bash
# Build and install, into the system PostgreSQL 15, what the document store (FerretDB v2) needs:
# pgvector and DocumentDB (pg_documentdb_core, pg_documentdb), plus
# the apt packages they build against and load with (pg_cron, PostGIS, RUM, ...).
#
#   bash devstack/provision/documentdb.sh
#
# Sources are tag tarballs, checked against the sha256 pins below. They are taken from
# $SHOP_SOURCE_MIRROR/<file> when that directory holds them, else downloaded from upstream; either
# way they are kept in $SHOP_CACHE/downloads. Builds live in $SHOP_CACHE/src.
#
# Idempotent: a component whose stamp ($SHOP_CACHE/src/.<component>.stamp: the pins and the
# recipe) matches and whose .so/.control files are installed is skipped ("cached"); when the build
# tree is cached but the install is gone (a fresh system directory), only `make install` runs.
# FORCE=1 rebuilds anyway. Prints one line per component; build output goes to
# $SHOP_CACHE/logs/documentdb-*.log (its tail is shown on failure).
#
# Never upgrades an installed PostgreSQL: the server headers are pinned to the installed
# postgresql-15's version and RUM to a version that fits it.
set -euo pipefail

# ---- pins -------------------------------------------------------------------------------------
PG_MAJOR=15
PGVECTOR_VERSION=0.8.0 # DocumentDB's scripts/setup_versions.sh pins v0.8.0; not in bookworm's apt
PGVECTOR_FILE=pgvector-$PGVECTOR_VERSION.tar.gz
PGVECTOR_URL=https://github.com/pgvector/pgvector/archive/refs/tags/v$PGVECTOR_VERSION.tar.gz
PGVECTOR_SHA256=93df40ccdaaaa267d1275c1e6e773004a0e5ff8e14227934a4ec7e8205d0f608
# FerretDB's fork of DocumentDB, the tag that FerretDB v2.5.0 is built for (see its
# build/version/documentdb.go: "0.106.0 gitref: HEAD sha:beb9d25d98 buildId:0").
DOCUMENTDB_TAG=v0.106.0-ferretdb-2.5.0
DOCUMENTDB_COMMIT=beb9d25d9845477c85559d3293cd1f929cdf2b9c
DOCUMENTDB_FILE=documentdb-${DOCUMENTDB_TAG#v}.tar.gz
DOCUMENTDB_URL=https://github.com/FerretDB/documentdb/archive/refs/tags/$DOCUMENTDB_TAG.tar.gz
DOCUMENTDB_SHA256=3ba0408eee7c3bc67933da50034092ee77e2aa79b61234c1216b0a1ffac21df1
# Bump to force a rebuild when the build recipe below changes.
RECIPE=2

# Everything but PostgreSQL itself, the server headers and RUM (those three are pinned below).
APT_PACKAGES=(build-essential pkg-config libbson-dev libintelrdfpmath-dev libpcre2-dev libkrb5-dev
    libicu-dev "postgresql-$PG_MAJOR-cron" "postgresql-$PG_MAJOR-postgis-3")
# -----------------------------------------------------------------------------------------------

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${SHOP_CACHE:-$HOME/.cache/shop}
LOGS=$CACHE/logs
SRC=$CACHE/src
DOWNLOADS=$CACHE/downloads
PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PGBIN/pg_config
JOBS=$(nproc)
export PATH=$PATH:/usr/sbin:/sbin

mkdir -p "$LOGS" "$SRC" "$DOWNLOADS"

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# announce, run_logged (a heartbeat while a step runs; on failure the log's tail), die_with_log.
PROGRESS_NAME=documentdb
# shellcheck source=devstack/provision/progress.sh
source "$REPO_ROOT/devstack/provision/progress.sh"

installed_version() { # package -> its installed version, or nothing
    dpkg-query -W -f='${db:Status-Abbrev}|${Version}\n' "$1" 2>/dev/null | awk -F'|' '$1 ~ /^ii/ {print $2}' || true
}

# ---- 1. apt -------------------------------------------------------------------------------------
apt_packages() {
    local server dev missing=() need_rum=0 fresh=0 p
    server=$(installed_version "postgresql-$PG_MAJOR")
    for p in "${APT_PACKAGES[@]}"; do
        [[ -n $(installed_version "$p") ]] || missing+=("$p")
    done
    if [[ -z $server ]]; then
        fresh=1
        missing+=("postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" "postgresql-$PG_MAJOR-rum")
    else
        dev=$(installed_version "postgresql-server-dev-$PG_MAJOR")
        if [[ -z $dev ]]; then
            missing+=("postgresql-server-dev-$PG_MAJOR=$server")
        elif [[ $dev != "$server" ]]; then
            echo "documentdb: note: postgresql-server-dev-$PG_MAJOR $dev differs from postgresql-$PG_MAJOR $server (kept)"
        fi
        [[ -n $(installed_version "postgresql-$PG_MAJOR-rum") ]] || need_rum=1
    fi
    if ((${#missing[@]} == 0 && need_rum == 0)); then
        printf '%-10s cached  apt packages (postgresql-%s %s)\n' apt "$PG_MAJOR" "$server"
        return
    fi

    local log=$LOGS/documentdb-apt.log start=$SECONDS
    : >"$log"
    export DEBIAN_FRONTEND=noninteractive
    run_logged apt "$log" as_root apt-get update -qq
    if ((need_rum)); then
        # The newest RUM that installs beside the pinned headers without upgrading the server
        # (bookworm-security's 1.3.13-1+deb12u1 needs postgresql-15 >> 15.20).
        local rum="" v sim
        for v in $(apt-cache madison "postgresql-$PG_MAJOR-rum" | awk '{print $3}'); do
            if sim=$(apt-get install -s --no-install-recommends "${missing[@]}" "postgresql-$PG_MAJOR-rum=$v" 2>&1) &&
                ! grep -q "^Inst postgresql-$PG_MAJOR " <<<"$sim"; then
                rum=$v
                break
            fi
        done
        if [[ -z $rum ]]; then
            echo "documentdb: no postgresql-$PG_MAJOR-rum version fits the installed postgresql-$PG_MAJOR $server" >&2
            exit 1
        fi
        missing+=("postgresql-$PG_MAJOR-rum=$rum")
    fi
    if [[ -n $server ]]; then # last guard: nothing in the set may upgrade the server
        local sim
        sim=$(apt-get install -s --no-install-recommends "${missing[@]}" 2>&1) || {
            echo "$sim" >>"$log"
            die_with_log apt "$log"
        }
        if grep -q "^Inst postgresql-$PG_MAJOR " <<<"$sim"; then
            echo "documentdb: installing ${missing[*]} would upgrade postgresql-$PG_MAJOR $server; refusing" >&2
            grep "^Inst postgresql" <<<"$sim" >&2
            exit 1
        fi
    fi
    announce "apt: installing ${missing[*]}" "what PostgreSQL $PG_MAJOR and DocumentDB build against and load with" "1 min"
    run_logged "installing packages" "$log" as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
    if [[ -n $server && $(installed_version "postgresql-$PG_MAJOR") != "$server" ]]; then
        echo "documentdb: postgresql-$PG_MAJOR changed from $server: see $log" >&2
        exit 1
    fi
    if ((fresh)) && command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q "^$PG_MAJOR .*online"; then
        # The package starts a system cluster; the local cluster runs its own servers.
        as_root pg_ctlcluster "$PG_MAJOR" main stop 2>/dev/null || true
    fi
    printf '%-10s installed apt packages (postgresql-%s %s)  (%ss)\n' apt "$PG_MAJOR" \
        "$(installed_version "postgresql-$PG_MAJOR")" "$((SECONDS - start))"
}

# ---- 2. sources ---------------------------------------------------------------------------------
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

fetch_source() { # file url sha256 -> $DOWNLOADS/file, checked
    local file=$1 url=$2 sha=$3 dest=$DOWNLOADS/$1 from
    if [[ -f $dest && $(sha256_of "$dest") == "$sha" ]]; then
        return
    fi
    rm -f "$dest" "$dest.part"
    if [[ -n ${SHOP_SOURCE_MIRROR:-} && -f $SHOP_SOURCE_MIRROR/$file ]]; then
        from=$SHOP_SOURCE_MIRROR/$file
        cp "$from" "$dest.part"
    else
        from=$url
        if ! curl -fsSL --retry 2 --connect-timeout 15 --max-time 600 -o "$dest.part" "$url" 2>"$LOGS/documentdb-download.log"; then
            rm -f "$dest.part"
            echo "documentdb: cannot download $url ($(tail -n 1 "$LOGS/documentdb-download.log"))." >&2
            echo "documentdb: set SHOP_SOURCE_MIRROR to a directory holding $file (e.g. the shared vendor mirror)." >&2
            exit 1
        fi
    fi
    local got
    got=$(sha256_of "$dest.part")
    if [[ $got != "$sha" ]]; then
        rm -f "$dest.part"
        echo "documentdb: $from: sha256 $got, expected $sha" >&2
        exit 1
    fi
    chmod 644 "$dest.part"
    mv "$dest.part" "$dest"
}

unpack() { # tarball dir: a fresh tree of the tarball's single top-level directory at dir
    local tarball=$1 dir=$2 tmp top
    rm -rf "$dir" "$dir.tmp"
    tmp=$dir.tmp
    mkdir -p "$tmp"
    tar -xzf "$tarball" -C "$tmp"
    top=$(find "$tmp" -mindepth 1 -maxdepth 1)
    if [[ $(wc -l <<<"$top") != 1 || ! -d $top ]]; then
        echo "documentdb: $tarball does not unpack to a single directory" >&2
        exit 1
    fi
    mv "$top" "$dir"
    rmdir "$tmp"
}

# ---- 3. builds ----------------------------------------------------------------------------------
PKGLIB=
SHAREDIR=

# installed? dir lib... -- every lib.so in pkglibdir (and, when the build tree is there, the same
# file as the one built) and every control file named after "--"
installed() {
    local tree=$1 f
    shift
    while (($#)) && [[ $1 != -- ]]; do
        [[ -f $PKGLIB/$(basename "$1") ]] || return 1
        if [[ -f $tree/$1 ]] && ! cmp -s "$tree/$1" "$PKGLIB/$(basename "$1")"; then
            return 1
        fi
        shift
    done
    shift
    for f in "$@"; do
        [[ -f $SHAREDIR/extension/$f ]] || return 1
    done
}

# What each component is for and about how long its first build takes (2 cores), for announce.
declare -A COMPONENT_WHY=(
    [pgvector]="PostgreSQL's vector extension, which DocumentDB requires"
    [documentdb]="the PostgreSQL extensions that FerretDB v2 (the catalog's document store) runs on"
)
declare -A COMPONENT_ETA=([pgvector]="10 s" [documentdb]="1 min")

# component stamp tree fetch_fn build_fn install_fn sos... -- controls...
component() {
    local name=$1 stamp=$2 tree=$3 fetch=$4 build=$5 install=$6 stampfile=$SRC/.$1.stamp log=$LOGS/documentdb-$1.log
    shift 6
    local start=$SECONDS
    if [[ ${FORCE:-0} != 1 && -f $stampfile && $(<"$stampfile") == "$stamp" ]]; then
        if installed "$tree" "$@"; then
            printf '%-10s cached  %s\n' "$name" "$stamp"
            return
        fi
        if [[ -d $tree ]]; then # built before; the system directory lost it (or holds another build)
            : >"$log"
            run_logged "$name" "$log" "$install" "$tree"
            installed "$tree" "$@" || die_with_log "$name" "$log"
            printf '%-10s installed (cached build)  %s  (%ss)\n' "$name" "$stamp" "$((SECONDS - start))"
            return
        fi
    fi
    rm -f "$stampfile"
    announce "building $name" "${COMPONENT_WHY[$name]}" "${COMPONENT_ETA[$name]}"
    "$fetch"
    : >"$log"
    run_logged "building $name" "$log" "$build" "$tree"
    echo "$stamp" >"$stampfile"
    run_logged "installing $name" "$log" "$install" "$tree"
    installed "$tree" "$@" || die_with_log "$name" "$log"
    printf '%-10s built   %s  (%ss)\n' "$name" "$stamp" "$((SECONDS - start))"
}

# pgvector: OPTFLAGS="" (no -march=native: a portable .so), with_llvm=no (Debian's PGXS asks for
# clang bitcode for JIT, which is not installed).
PGVECTOR_MAKE=(PG_CONFIG="$PG_CONFIG" OPTFLAGS="" with_llvm=no)

fetch_pgvector() { fetch_source "$PGVECTOR_FILE" "$PGVECTOR_URL" "$PGVECTOR_SHA256"; }

build_pgvector() {
    local tree=$1
    unpack "$DOWNLOADS/$PGVECTOR_FILE" "$tree"
    make -C "$tree" "${PGVECTOR_MAKE[@]}" -j"$JOBS"
}

install_pgvector() {
    as_root make -C "$1" "${PGVECTOR_MAKE[@]}" install
}

# DocumentDB's parts, in the order they load.
DOCUMENTDB_PARTS=(pg_documentdb_core pg_documentdb)

documentdb_make_args() {
    # bookworm's libbson is 1.23 (DocumentDB pins 1.28): it lacks BSON_SUBTYPE_SENSITIVE (>= 1.25).
    local copt=""
    if ! grep -qs BSON_SUBTYPE_SENSITIVE /usr/include/libbson-1.0/bson/bson-types.h; then
        copt="-DBSON_SUBTYPE_SENSITIVE=0x08 -Wno-error=switch"
    fi
    printf '%s\n' PG_CONFIG="$PG_CONFIG" with_llvm=no COPT="$copt"
}

documentdb_env() {
    # Debian's libintelrdfpmath-dev ships libbidgcc000.a but no intelmathlib.pc, which
    # Makefile.cflags asks pkg-config for (also when installing: it runs at parse time).
    mkdir -p "$SRC/pkgconfig"
    cat >"$SRC/pkgconfig/intelmathlib.pc" <<EOF
prefix=/usr
libdir=/usr/lib/$(gcc -print-multiarch)
includedir=/usr/include

Name: intelmathlib
Description: Intel Decimal Floating-Point Math Library (Debian libintelrdfpmath-dev, variant 000)
Version: 2.0u2
Cflags: -I\${includedir}
Libs: -L\${libdir} -lbidgcc000
EOF
    export PKG_CONFIG_PATH=$SRC/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    # Makefile.versions regenerates the version header from `git rev-parse` when it finds a
    # repository: keep git from finding one above the unpacked tree (say, $SHOP_CACHE inside a
    # checkout), so the header written below stays.
    export GIT_CEILING_DIRECTORIES=$SRC
    unset GIT_DIR GIT_WORK_TREE
}

fetch_documentdb() { fetch_source "$DOCUMENTDB_FILE" "$DOCUMENTDB_URL" "$DOCUMENTDB_SHA256"; }

build_documentdb() {
    local tree=$1 part args
    unpack "$DOWNLOADS/$DOCUMENTDB_FILE" "$tree"
    # Outside a git checkout the header says "unknown sha:unknown" and FerretDB warns that the
    # DocumentDB version differs; write it as the release build does.
    local ver
    ver=$(sed -n "s/^default_version = '\(.*\)'$/\1/p" "$tree/pg_documentdb/documentdb.control")
    mkdir -p "$tree/pg_documentdb/build/include/metadata"
    printf '// Autogenerated header for versioning\n#define EXTENSION_VERSION_STR "%s"\n#define GIT_VERSION "HEAD sha:%s buildId:0"\n' \
        "${ver/-/.}" "${DOCUMENTDB_COMMIT:0:10}" >"$tree/pg_documentdb/build/include/metadata/documentdb_extension_version.h"

    documentdb_env
    mapfile -t args < <(documentdb_make_args)
    for part in "${DOCUMENTDB_PARTS[@]}"; do
        echo "==== make $part"
        make -C "$tree/$part" "${args[@]}" -j"$JOBS"
    done
}

install_documentdb() {
    local tree=$1 part args
    documentdb_env
    mapfile -t args < <(documentdb_make_args)
    for part in "${DOCUMENTDB_PARTS[@]}"; do
        echo "==== make install $part"
        as_root env PKG_CONFIG_PATH="$PKG_CONFIG_PATH" GIT_CEILING_DIRECTORIES="$GIT_CEILING_DIRECTORIES" \
            make -C "$tree/$part" "${args[@]}" install
    done
}

# ---- main ---------------------------------------------------------------------------------------
apt_packages
[[ -x $PG_CONFIG ]] || { echo "documentdb: $PG_CONFIG missing (postgresql-server-dev-$PG_MAJOR)" >&2; exit 1; }
PKGLIB=$("$PG_CONFIG" --pkglibdir)
SHAREDIR=$("$PG_CONFIG" --sharedir)

component pgvector "pgvector $PGVECTOR_VERSION sha256:${PGVECTOR_SHA256:0:12} pg$PG_MAJOR recipe:$RECIPE" \
    "$SRC/pgvector-$PGVECTOR_VERSION" fetch_pgvector build_pgvector install_pgvector \
    vector.so -- vector.control

component documentdb \
    "documentdb $DOCUMENTDB_TAG (${DOCUMENTDB_COMMIT:0:10}) sha256:${DOCUMENTDB_SHA256:0:12} pg$PG_MAJOR recipe:$RECIPE" \
    "$SRC/documentdb-${DOCUMENTDB_TAG#v}" fetch_documentdb build_documentdb install_documentdb \
    pg_documentdb_core/pg_documentdb_core.so pg_documentdb/pg_documentdb.so \
    -- documentdb_core.control documentdb.control
progress_done
