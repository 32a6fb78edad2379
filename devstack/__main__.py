"""``python -m devstack up|down|status|logs NAME|grpcurl ARGS``: the local cluster without Docker.

``up`` prints each server and service as it becomes ready, then watches them: a process that
dies is reported and started again with backoff (1 s, 2 s, 4 s, … 30 s; back to 1 s once it has
run for a minute). ``down`` stops the ``up`` process and with it the whole cluster; ``status``
tells a live process from a dead or zombie one.  ``grpcurl`` runs grpcurl against the running
cluster with a certificate of its CA filled in (``--as NAME`` picks whose; the edge's by default):
``python -m devstack grpcurl localhost:8081 list``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import tls
from devstack.cluster import SERVERS, SERVICES, Cluster, grpcurl_argv
from devstack.paths import REPO, STATE_DIR
from devstack.process import Process, pid_state, port_open, stop_groups, tail

# The `up` process: its pid, and what its watcher restarted (name -> count), for `down` and `status`.
WATCH_FILE = "up.json"
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0  # a process that ran this long starts again from the shortest backoff


def _print_table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in [("what", "where (127.0.0.1)", "log"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


class Watcher:
    """Restarts the cluster's processes (servers and services alike) when they die."""

    def __init__(self, cluster: Cluster, stop: threading.Event, t0: float) -> None:
        self.cluster = cluster
        self.stop = stop
        self.t0 = t0
        self.names = [*cluster.servers, *cluster.services]
        self.restarts: dict[str, int] = dict.fromkeys(self.names, 0)
        self.deaths: dict[str, int] = dict.fromkeys(self.names, 0)  # in a row, for the backoff
        self.started: dict[str, float] = dict.fromkeys(self.names, time.monotonic())
        self.due: dict[str, float] = {}  # name -> when to start it again

    def say(self, text: str) -> None:
        print(f"{time.monotonic() - self.t0:7.1f}s  {text}", flush=True)

    def process(self, name: str) -> Process | None:
        if name in self.cluster.servers:
            return self.cluster.servers[name].process
        return self.cluster.services.get(name)

    def write(self) -> None:
        _write_watch({"pid": os.getpid(), "restarts": self.restarts})

    def check(self) -> None:
        now = time.monotonic()
        for name in self.names:
            if self.stop.is_set():
                return
            process = self.process(name)
            if process is not None and process.alive():
                if now - self.started[name] >= HEALTHY_AFTER:
                    self.deaths[name] = 0
                continue
            if name not in self.due:
                code = process.popen.returncode if process and process.popen else None
                delay = min(BACKOFF_MAX, 2.0 ** self.deaths[name])
                self.deaths[name] += 1
                self.due[name] = now + delay
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                log = f"; log {process.log}" if process else ""
                self.say(f"{name} died ({how}); restarting in {delay:.0f}s{log}")
            elif now >= self.due[name]:
                del self.due[name]
                self.restart(name, process)

    def restart(self, name: str, old: Process | None) -> None:
        t0 = time.monotonic()
        if old is not None and old.pid is not None:
            stop_groups([old.pid], timeout=5)  # what is left of its process group
        try:
            if name in self.cluster.servers:
                self.cluster.servers[name].restart()
                self.cluster.write_state()
            else:
                self.cluster.services.pop(name, None)
                self.cluster.start_service(name)
        except Exception as exc:  # noqa: BLE001 - reported; the next check schedules another try
            new = self.process(name)
            if new is not None:
                new.stop(timeout=5)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.say(f"{name} did not come back: {first}")
            return
        self.restarts[name] += 1
        self.started[name] = time.monotonic()
        self.write()
        new = self.process(name)
        pid = new.pid if new else "?"
        self.say(f"{name} restarted (pid {pid}, {time.monotonic() - t0:.1f}s, restart {self.restarts[name]})")


def _stop_cluster(cluster: Cluster) -> None:
    """The services, then the servers, each group all at once; then the cluster's bookkeeping."""
    services = list(cluster.services.values())
    servers = [server.process for server in cluster.servers.values() if server.process]
    for processes, timeout in ((services, 5.0), (servers, 10.0)):
        live = [p for p in processes if p.alive()]
        stop_groups([p.pid for p in live if p.pid is not None], timeout)
        for p in live:
            if p.popen is not None:
                with contextlib.suppress(Exception):
                    p.popen.wait(timeout=5)
    cluster.stop()


class _InterruptedError(Exception):
    pass


def up(args: argparse.Namespace) -> int:
    if _running() or _up_pid() is not None:
        print("a cluster is already running (python -m devstack status); stop it with `make down`", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    cluster = Cluster(STATE_DIR, fixed_ports=True)

    def ready(name: str, seconds: float) -> None:
        if name in cluster.servers:
            where = ", ".join(f"{key} {port}" for key, port in cluster.servers[name].ports.items())
        else:
            where = f"port {cluster.service_ports[name]}"
        print(f"{time.monotonic() - t0:7.1f}s  {name:<12} ready in {seconds:5.1f}s  ({where})", flush=True)

    cluster.on_ready = ready
    stop, watching = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        if not watching.is_set():  # still starting: give up at once
            raise _InterruptedError

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    _write_watch({"pid": os.getpid(), "restarts": {}})
    try:
        print(f"starting the servers: {', '.join(SERVERS)}", flush=True)
        cluster.start_servers(list(SERVERS))
        print("starting the services", flush=True)
        started = cluster.start_services()
        _print_table(cluster.table())
        missing = [spec.name for spec in SERVICES if spec.name not in started]
        if missing:
            print(f"not built yet, skipped: {', '.join(missing)}", flush=True)
        print(f"the cluster is up after {time.monotonic() - t0:.0f}s; Ctrl-C (or `make down`) stops it", flush=True)
        watcher = Watcher(cluster, stop, t0)
        watcher.write()
        watching.set()
        while not stop.wait(1.0):
            watcher.check()
    except _InterruptedError:
        print("interrupted while starting", flush=True)
    finally:
        watching.set()  # a second Ctrl-C while stopping only sets `stop` again
        print("stopping…", flush=True)
        _stop_cluster(cluster)
        (STATE_DIR / WATCH_FILE).unlink(missing_ok=True)
        print("stopped", flush=True)
    return 0


def _state() -> list[dict[str, object]]:
    try:
        return list(json.loads((STATE_DIR / "state.json").read_text())["processes"])
    except FileNotFoundError:
        return []


def _watch() -> dict[str, object]:
    try:
        return dict(json.loads((STATE_DIR / WATCH_FILE).read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def _write_watch(data: dict[str, object]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = STATE_DIR / WATCH_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _up_pid() -> int | None:
    """The pid of a live `up` process, if there is one."""
    pid = _watch().get("pid")
    if isinstance(pid, int) and pid != os.getpid() and pid_state(pid) == "alive":
        return pid
    return None


def _alive(pid: int) -> bool:
    return pid_state(pid) == "alive"


def _running() -> bool:
    return any(_alive(int(p["pid"])) for p in _state())  # type: ignore[call-overload]


def down(args: argparse.Namespace) -> int:
    """Stop the `up` process (it stops its cluster and reaps it), then whatever is left."""
    t0 = time.monotonic()
    watcher = _up_pid()
    if watcher is not None:
        os.kill(watcher, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while pid_state(watcher) == "alive" and time.monotonic() < deadline:
            time.sleep(0.1)
    # Left over: no `up` process (it crashed), or it did not finish in time.
    left = [int(p["pid"]) for p in _state() if _alive(int(p["pid"]))]  # type: ignore[call-overload]
    stop_groups(left, timeout=5)
    if watcher is not None and pid_state(watcher) == "alive":
        with contextlib.suppress(ProcessLookupError):
            os.kill(watcher, signal.SIGKILL)
    if watcher is None and not left:
        print("nothing was running")
    else:
        what = "the up process and its cluster" if watcher is not None else f"{len(left)} processes"
        print(f"stopped {what} in {time.monotonic() - t0:.1f}s")
    return 0


def status(args: argparse.Namespace) -> int:
    processes = _state()
    if not processes:
        print("no cluster state (start one with `make up`)")
        return 1
    restarts = _watch().get("restarts")
    if not isinstance(restarts, dict):
        restarts = {}
    watcher = _up_pid()
    ok = watcher is not None
    if watcher is not None:
        print(f"{'up':<12} {'up':<7} pid {watcher:<8} watching: restarts a process that dies")
    else:
        print(f"{'up':<12} {'DEAD':<7} {'':<12} no `make up` process: nothing restarts a process that dies")
    for process in processes:
        pid = int(process["pid"])  # type: ignore[call-overload]
        ports = dict(process["ports"])  # type: ignore[call-overload]
        state = pid_state(pid)
        if state == "alive":
            closed = [key for key, port in ports.items() if not port_open(int(port))]
            word = "up" if not closed else "NOT LISTENING"
        else:
            word = "ZOMBIE" if state == "zombie" else "DEAD"
        ok &= word == "up"
        where = ", ".join(f"{key} {port}" for key, port in ports.items())
        count = int(restarts.get(str(process["name"]), 0))
        again = f"  (restarted {count}x)" if count else ""
        print(f"{process['name']:<12} {word:<7} pid {pid:<8} {where}{again}")
    return 0 if ok else 1


def logs(args: argparse.Namespace) -> int:
    for process in _state():
        if process["name"] == args.name:
            print(tail(Path(str(process["log"])), args.lines))
            return 0
    print(f"no process named {args.name!r} (see `python -m devstack status`)", file=sys.stderr)
    return 1


def grpcurl(argv: list[str]) -> int:
    """grpcurl with -cacert/-cert/-key of the `make up` cluster (its state directory);
    ``--as NAME`` first picks whose certificate (the edge's by default)."""
    identity = "edge"
    if argv[:1] == ["--as"] and len(argv) > 1:
        identity, argv = argv[1], argv[2:]
    if identity not in tls.CALLERS:
        print(f"--as: one of {', '.join(tls.CALLERS)}", file=sys.stderr)
        return 2
    files = tls.files_in(STATE_DIR / "tls", identity)
    if not Path(files.cert).exists():
        print(f"no certificate for {identity} in {STATE_DIR / 'tls'}: start the cluster (`make up`)", file=sys.stderr)
        return 1
    try:
        command = grpcurl_argv(files, argv)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    sys.stdout.flush()
    os.execv(command[0], command)


def run(args: argparse.Namespace) -> int:
    """A service's command (``python -m NAME ARGS``) with the environment the running cluster
    gives that service: its own store users and passwords, where the other processes are."""
    path = STATE_DIR / "env" / f"{args.name}.json"
    if not path.exists():
        print(f"{args.name} has not run in the cluster at {STATE_DIR} (start it with `make up`)", file=sys.stderr)
        return 1
    env = {**os.environ, **json.loads(path.read_text())}
    return subprocess.call([sys.executable, "-m", args.name, *args.args], env=env, cwd=REPO)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up", help="start the servers and every built service, restart any that dies; Ctrl-C stops them"
    ).set_defaults(func=up)
    sub.add_parser("down", help="stop a cluster started by `up` in another terminal, `up` included").set_defaults(
        func=down
    )
    sub.add_parser("status", help="what runs where, and what died").set_defaults(func=status)
    log_parser = sub.add_parser("logs", help="the last lines of one process's log")
    log_parser.add_argument("name")
    log_parser.add_argument("-n", "--lines", type=int, default=50)
    log_parser.set_defaults(func=logs)
    # Listed for --help; its arguments are grpcurl's own, so main() hands them over unparsed.
    sub.add_parser("grpcurl", help="[--as NAME] ARGS: grpcurl against the cluster with a certificate filled in")
    if sys.argv[1:2] == ["grpcurl"]:
        return grpcurl(sys.argv[2:])
    run_parser = sub.add_parser("run", help="a service's command with its environment in the cluster (store passwords)")
    run_parser.add_argument("name", help="the service, e.g. user_svc")
    run_parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments, e.g. create-admin --email ...")
    run_parser.set_defaults(func=run)
    args = parser.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
