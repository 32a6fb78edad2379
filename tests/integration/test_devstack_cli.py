"""`python -m devstack up` runs the cluster on the well-known ports and prints each
process as it becomes ready, `status` reports it, a process killed under `up` is
restarted (and `status` says so), and `down` stops every process, `up` included."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from common.settings import SERVICE_PORTS
from devstack.cluster import DEFAULT_PORTS, SERVICES
from devstack.paths import REPO
from devstack.process import pid_state, port_open

WELL_KNOWN = [port for ports in DEFAULT_PORTS.values() for port in ports.values()] + [
    SERVICE_PORTS[spec.name] for spec in SERVICES if spec.exists
]


def _devstack(state: Path, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "SHOP_DEVSTACK_DIR": str(state)}
    return subprocess.Popen(
        [sys.executable, "-m", "devstack", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


def readme_block(name: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"<!-- {name}:start -->")
    block = text[start : text.index(f"<!-- {name}:end -->")]
    return block.split("```sh\n", 1)[1].rsplit("```", 1)[0]


def _pids(state: Path) -> dict[str, int]:
    processes = json.loads((state / "state.json").read_text())["processes"]
    return {str(p["name"]): int(p["pid"]) for p in processes}


class UpOutput:
    """What a running ``devstack up`` has printed so far, read on a thread."""

    def __init__(self, up: subprocess.Popen[str]) -> None:
        assert up.stdout is not None
        self.up = up
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        stdout = up.stdout

        def read() -> None:
            for line in stdout:
                self.lines.put(line)

        threading.Thread(target=read, daemon=True).start()

    def until(self, *wanted: str, limit: float) -> str:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not all(any(w in line for line in self.output) for w in wanted):
            try:
                self.output.append(self.lines.get(timeout=1.0))
            except queue.Empty:
                if self.up.poll() is not None:
                    break
        return "".join(self.output)


def _status(state: Path) -> str:
    status = _devstack(state, "status")
    status_out, _ = status.communicate(timeout=60)
    assert status.returncode == 0, status_out
    return status_out


def _check_up(printed: UpOutput) -> None:
    text = printed.until("the cluster is up", limit=180)
    assert "the cluster is up" in text, text
    # One line per server and service as it becomes ready, before the table.
    ready = {line.split()[1] for line in printed.output if " ready in " in line}
    assert {"postgres", "redis", "kafka", "mongo", "s3", "jaeger"} <= ready, text
    assert {spec.name for spec in SERVICES if spec.exists} <= ready, text
    closed = [port for port in WELL_KNOWN if not port_open(port)]
    assert not closed, (closed, text)


def _check_readme_examples(state: Path) -> None:
    """The README's examples work as written against this cluster."""
    tried = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_block("try-it")],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "SHOP_DEVSTACK_DIR": str(state)},  # `devstack run` finds this cluster
    )  # fmt: skip
    assert tried.returncode == 0, tried.stdout + tried.stderr
    assert '"email":"ann@example.com"' in tried.stdout
    assert '"status":"paid"' in tried.stdout

    # The README's grpcurl commands, through the wrapper that fills in this cluster's certificates.
    called = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_block("grpcurl")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "SHOP_DEVSTACK_DIR": str(state)},
    )  # fmt: skip
    assert called.returncode == 0, called.stdout + called.stderr
    assert "shop.user.v1.UserService" in called.stdout.split()
    assert "rpc Login ( .shop.user.v1.LoginRequest )" in called.stdout
    assert '"status": "SERVING"' in called.stdout
    # As the edge, a reservation is refused, naming the caller; as order_svc it is answered.
    denied = _devstack(
        state, "grpcurl", "-d", '{"reservation_id": "x"}', "localhost:8081",
        "shop.product.v1.ProductService/ReleaseReservation",
    )  # fmt: skip
    denied_out, _ = denied.communicate(timeout=60)
    assert denied.returncode != 0 and "edge may not call ReleaseReservation" in denied_out, denied_out


def _check_restarts(state: Path, printed: UpOutput) -> None:
    """A service and a data store die: `up` says so and starts each again."""
    before = _pids(state)
    for name in ("comment_svc", "redis"):
        os.kill(before[name], signal.SIGKILL)
    text = printed.until("comment_svc restarted", "redis restarted", limit=120)
    assert "comment_svc died (killed by signal 9)" in text, text
    assert "comment_svc restarted" in text, text
    assert "redis restarted" in text, text
    after = _pids(state)
    assert after["comment_svc"] != before["comment_svc"]
    assert after["redis"] != before["redis"]
    status_out = _status(state)
    comment = next(line for line in status_out.splitlines() if line.startswith("comment_svc"))
    assert comment.split()[1:4] == ["up", "pid", str(after["comment_svc"])], status_out
    assert "restarted 1x" in comment, status_out


def test_up_status_restart_and_down(tmp_path: Path) -> None:
    busy = [port for port in WELL_KNOWN if port_open(port)]
    if busy:
        pytest.skip(f"a local cluster (or something else) already uses ports {busy}")
    up = _devstack(tmp_path, "up")
    printed = UpOutput(up)
    down_out = ""
    try:
        _check_up(printed)
        assert "DOWN" not in _status(tmp_path)
        _check_readme_examples(tmp_path)
        _check_restarts(tmp_path, printed)

        # `down` from another terminal ends the whole cluster, the `up` process included.
        down = _devstack(tmp_path, "down")
        down_out, _ = down.communicate(timeout=90)
        assert down.returncode == 0, down_out
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        up.wait(timeout=90)
    assert up.returncode == 0, "".join(printed.output) + down_out
    assert "stopped the up process and its cluster" in down_out
    assert not any(port_open(port) for port in WELL_KNOWN)
    assert [name for name, pid in _pids(tmp_path).items() if pid_state(pid) == "alive"] == []
    status = _devstack(tmp_path, "status")
    status_out, _ = status.communicate(timeout=60)
    assert status.returncode == 1
    assert "DEAD" in status_out
