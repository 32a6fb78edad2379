"""What every server of the local cluster is: a child process on loopback ports.

Every server gets a data directory and its ports, starts as a child process,
and is ready only when a real client call through it succeeds.  ``env()`` gives
the ``SHOP_*`` variables that point the shop processes (and tests) at it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import IO

from devstack.paths import BIN
from devstack.process import Process, free_port, port_open


class Server:
    name = ""
    ready_timeout = 60.0

    def __init__(self, data: Path, ports: dict[str, int] | None = None) -> None:
        self.data = data
        self.ports = {key: (ports or {}).get(key) or free_port() for key in self.port_names()}
        self.process: Process | None = None
        # Durable by default: what a server acknowledged survives its crash.  The test
        # suite alone sets this (``Cluster(unsafe_fast_storage=True)``) to skip flushes.
        self.unsafe_fast_storage = False

    # -- what a server defines
    def port_names(self) -> tuple[str, ...]:
        return ("port",)

    def argv(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time set-up of the data directory."""

    def ready(self) -> bool:
        return port_open(self.ports["port"])

    def after_ready(self) -> None:
        """Set-up that needs the server running (databases, buckets)."""

    # Servers this one runs on top of (started and ready before it), handed to ``use``.
    needs: tuple[str, ...] = ()

    def use(self, servers: dict[str, Server]) -> None:
        """Learn where the servers in ``needs`` are (called before ``start``)."""

    def env(self) -> dict[str, str]:
        """What every shop process is told about this server (where it is; no credentials)."""
        return {}

    def service_env(self, service: str) -> dict[str, str]:
        """What one shop process needs to reach this server as its own user."""
        return {}

    def process_env(self) -> dict[str, str]:
        return {}

    user: str | None = None

    # -- lifecycle
    @property
    def log(self) -> Path:
        return self.data.parent / "logs" / f"{self.name}.log"

    def start(self) -> Server:
        self.data.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        busy = [f"{key}={port}" for key, port in self.ports.items() if port_open(port)]
        if busy:
            raise RuntimeError(f"{self.name}: port already in use ({', '.join(busy)}); is another cluster running?")
        self.prepare()
        self.process = Process(self.name, self.argv(), self.log, env=self.process_env(), user=self.user).start()
        return self

    def wait(self) -> None:
        assert self.process is not None
        self.process.wait_ready(self.ready, self.ready_timeout)
        self.after_ready()

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def server_pid(self) -> int:
        """The pid of the server itself (not of a ``runuser`` in front of it)."""
        assert self.process is not None and self.process.pid is not None
        return self.process.pid

    def kill(self) -> None:
        """``kill -9`` of the server process, as a crash would end it (fault tests)."""
        os.kill(self.server_pid(), signal.SIGKILL)
        assert self.process is not None
        self.process.stop(timeout=10)  # reap what is left of its process group

    def restart(self) -> None:
        """Start it again on the same ports and data, and wait until it answers."""
        self.start()
        self.wait()


def binary(name: str) -> str:
    """A server or tool binary: built into the cache by `make deps`, or on the PATH."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} is not installed: run `make deps` (devstack/provision.sh)")


def run_logged(argv: list[str], out: IO[bytes]) -> int:
    """Run a one-off set-up command with its output into ``out`` (a server's log); its exit code."""
    return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
