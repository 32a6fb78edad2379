"""Child processes: start with a log file, wait until ready, stop cleanly."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class NotReadyError(RuntimeError):
    pass


_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range: a port from that
    range (what binding to port 0 gives) can be taken by any outgoing
    connection before the server that was meant to get it starts."""
    low, _ = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(20000, max(20001, low - 1))
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as sock:  # the range is crowded: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class Process:
    """One child process with its own session (so a stop reaches its children)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.cwd = cwd
        self.user = user
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        argv = as_user(self.user, self.argv)
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_ready(self, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.popen.returncode if self.popen else None
                raise NotReadyError(f"{self.name} exited with {code}; last log lines:\n{tail(self.log)}")
            try:
                if check():
                    return
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last = exc
            time.sleep(0.1)
        raise NotReadyError(f"{self.name} not ready after {timeout:.0f}s ({last!r}); last log lines:\n{tail(self.log)}")

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        stop_group(self.popen.pid, timeout, sig)
        self.popen.wait(timeout=5)


def pid_state(pid: int) -> str:
    """``"alive"``, ``"zombie"`` (exited, its parent has not reaped it yet) or ``"gone"``.

    ``kill(pid, 0)`` cannot tell: it succeeds on a zombie. /proc can (Linux); elsewhere a
    process that ``kill`` reaches counts as alive."""
    stat = _proc_stat(pid)
    if stat is not None:
        return "zombie" if stat[0] in "ZX" else "alive"
    if Path("/proc/self/stat").exists():
        return "gone"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        pass
    return "alive"


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) from /proc/<pid>/stat, or None when there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[2])


def _live_groups(pgids: set[int]) -> set[int]:
    """Those of ``pgids`` with at least one member that is not a zombie."""
    if not Path("/proc/self/stat").exists():
        live = set()
        for pgid in pgids:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                continue
            live.add(pgid)
        return live
    live = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[1] in pgids and stat[0] not in "ZX":
                live.add(stat[1])
    return live


def stop_groups(pids: list[int], timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Signal several process groups at once, wait until none has a live member (zombies
    count as gone: only their parent can reap them), then kill what is left after ``timeout``."""
    waiting = set()
    for pid in pids:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            continue
        waiting.add(pid)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        waiting = _live_groups(waiting)
        if waiting:
            time.sleep(0.05)
    for pid in waiting:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def stop_group(pid: int, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Signal a process group, then kill it if it has not gone within ``timeout``."""
    stop_groups([pid], timeout, sig)


def as_user(user: str | None, argv: list[str]) -> list[str]:
    """Run ``argv`` as ``user`` when we are root (PostgreSQL refuses to run as root)."""
    if user and os.geteuid() == 0:
        return ["runuser", "-u", user, "--", *argv]
    return argv
