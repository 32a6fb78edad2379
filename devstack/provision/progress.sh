# Progress for the provisioning scripts, sourced (not run) by devstack/provision.sh and the
# scripts beside this file:
#
#   PROGRESS_NAME=go_tools; source "$(dirname "${BASH_SOURCE[0]}")/progress.sh"
#
#   announce WHAT WHY ETA        one line before a step starts: what, why, about how long the first time
#   run_logged WHAT LOG CMD...   CMD with its output appended to LOG and a heartbeat line (elapsed time,
#                                the log's last line) every $SHOP_PROGRESS_INTERVAL seconds (20) while
#                                it runs; on failure: names LOG, shows its last lines, exits 1
#   heartbeat_start WHAT / heartbeat_stop    the heartbeat alone, around a step run by other means
#   die_with_log WHAT LOG        "WHAT: FAILED, last lines of LOG:" + its tail, exit 1
#   progress_done                "<name>: done in Ns" (seconds since this file was sourced)
#
# Lines go to stdout, failures to stderr; every line starts with "$PROGRESS_NAME: " unless it is a
# table line printed by the script itself.

PROGRESS_NAME=${PROGRESS_NAME:-provision}
PROGRESS_INTERVAL=${SHOP_PROGRESS_INTERVAL:-20}
PROGRESS_T0=${PROGRESS_T0:-$SECONDS}

_progress_heartbeat_pid=

announce() { # what why eta
    echo "$PROGRESS_NAME: $1: $2 (the first time takes about $3)"
}

die_with_log() { # what log
    heartbeat_stop
    echo "$PROGRESS_NAME: $1: FAILED, last lines of $2:" >&2
    tail -n 30 "$2" >&2
    exit 1
}

heartbeat_start() { # what [log]
    heartbeat_stop
    local what=$1 log=${2:-} t0=$SECONDS
    (
        trap 'exit 0' TERM
        while sleep "$PROGRESS_INTERVAL"; do
            local last=""
            if [[ -n $log && -s $log ]]; then
                last=$(tail -n 1 "$log" 2>/dev/null | tr -d '\r' | cut -c1-100)
            fi
            echo "$PROGRESS_NAME:   ... still $what, $((SECONDS - t0))s${last:+ (log: $last)}"
        done
    ) &
    _progress_heartbeat_pid=$!
}

heartbeat_stop() {
    if [[ -n $_progress_heartbeat_pid ]]; then
        kill "$_progress_heartbeat_pid" 2>/dev/null || true
        wait "$_progress_heartbeat_pid" 2>/dev/null || true
        _progress_heartbeat_pid=
    fi
}

# Run "$@" with its output appended to log, with a heartbeat. A background job, so that `set -e`
# holds inside shell functions passed as "$@" (it is off for functions called from `if` or `||`).
run_logged() { # what log cmd...
    local what=$1 log=$2 rc=0
    shift 2
    heartbeat_start "$what" "$log"
    "$@" >>"$log" 2>&1 &
    wait $! || rc=$?
    heartbeat_stop
    ((rc == 0)) || die_with_log "$what" "$log"
}

progress_done() {
    echo "$PROGRESS_NAME: done in $((SECONDS - PROGRESS_T0))s"
}

trap heartbeat_stop EXIT
