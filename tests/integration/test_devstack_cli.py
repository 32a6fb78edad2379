"""`python -m devstack up` runs the cluster on the well-known ports, `status`
reports it, and Ctrl-C stops every process."""

from __future__ import annotations

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
from devstack.process import port_open

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


def test_up_status_and_ctrl_c(tmp_path: Path) -> None:
    busy = [port for port in WELL_KNOWN if port_open(port)]
    if busy:
        pytest.skip(f"a local cluster (or something else) already uses ports {busy}")
    up = _devstack(tmp_path, "up")
    assert up.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = up.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    output: list[str] = []
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and not any("the cluster is up" in line for line in output):
            try:
                output.append(lines.get(timeout=1.0))
            except queue.Empty:
                if up.poll() is not None:
                    break
        text = "".join(output)
        assert "the cluster is up" in text, text
        for name in ("postgres", "redis", "kafka", "mongo", "s3", "jaeger"):
            assert name in text
        closed = [port for port in WELL_KNOWN if not port_open(port)]
        assert not closed, (closed, text)

        status = _devstack(tmp_path, "status")
        status_out, _ = status.communicate(timeout=60)
        assert status.returncode == 0, status_out
        assert "DOWN" not in status_out

        # The README's examples work as written against this cluster.
        tried = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", readme_block("try-it")],
            cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert tried.returncode == 0, tried.stdout + tried.stderr
        assert '"email":"ann@example.com"' in tried.stdout
        assert '"status":"paid"' in tried.stdout
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=90)
    assert up.returncode == 0
    assert not any(port_open(port) for port in WELL_KNOWN)
