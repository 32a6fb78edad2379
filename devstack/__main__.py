"""``python -m devstack up|down|status|logs NAME``: the local cluster without Docker."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from devstack.cluster import SERVERS, SERVICES, Cluster
from devstack.paths import STATE_DIR
from devstack.process import port_open, stop_group, tail


def _print_table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in [("what", "where (127.0.0.1)", "log"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def up(args: argparse.Namespace) -> int:
    if _running():
        print("a cluster is already running (python -m devstack status); stop it with `make down`", file=sys.stderr)
        return 1
    cluster = Cluster(STATE_DIR, fixed_ports=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cluster.start_servers(list(SERVERS))
        started = cluster.start_services()
        _print_table(cluster.table())
        missing = [spec.name for spec in SERVICES if spec.name not in started]
        if missing:
            print(f"not built yet, skipped: {', '.join(missing)}", flush=True)
        print("the cluster is up; Ctrl-C stops it", flush=True)
        stop.wait()
    finally:
        print("stopping…", flush=True)
        cluster.stop()
    return 0


def _state() -> list[dict[str, object]]:
    try:
        return list(json.loads((STATE_DIR / "state.json").read_text())["processes"])
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _running() -> bool:
    return any(_alive(int(p["pid"])) for p in _state())  # type: ignore[call-overload]


def down(args: argparse.Namespace) -> int:
    processes = _state()
    for process in reversed(processes):
        stop_group(int(process["pid"]))  # type: ignore[call-overload]
    print(f"stopped {len(processes)} processes" if processes else "nothing was running")
    return 0


def status(args: argparse.Namespace) -> int:
    processes = _state()
    if not processes:
        print("no cluster state (start one with `make up`)")
        return 1
    ok = True
    for process in processes:
        pid = int(process["pid"])  # type: ignore[call-overload]
        ports = dict(process["ports"])  # type: ignore[call-overload]
        alive = _alive(pid) and all(port_open(int(port)) for port in ports.values())
        ok &= alive
        where = ", ".join(f"{key} {port}" for key, port in ports.items())
        print(f"{process['name']:<12} {'up' if alive else 'DOWN':<5} pid {pid:<8} {where}")
    return 0 if ok else 1


def logs(args: argparse.Namespace) -> int:
    for process in _state():
        if process["name"] == args.name:
            print(tail(Path(str(process["log"])), args.lines))
            return 0
    print(f"no process named {args.name!r} (see `python -m devstack status`)", file=sys.stderr)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the servers and every built service; Ctrl-C stops them").set_defaults(func=up)
    sub.add_parser("down", help="stop a cluster started by `up` in another terminal").set_defaults(func=down)
    sub.add_parser("status", help="what runs where").set_defaults(func=status)
    log_parser = sub.add_parser("logs", help="the last lines of one process's log")
    log_parser.add_argument("name")
    log_parser.add_argument("-n", "--lines", type=int, default=50)
    log_parser.set_defaults(func=logs)
    args = parser.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
