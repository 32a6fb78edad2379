"""The provisioning scripts' progress helper (devstack/provision/progress.sh), on real bash runs:
a step is announced before it starts, a long one shows heartbeat lines carrying its log's last
line, and a failed one names its log and shows the log's last lines."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devstack.paths import REPO

HELPER = REPO / "devstack" / "provision" / "progress.sh"


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "step.sh"
    script.write_text(f"set -euo pipefail\nPROGRESS_NAME=demo\nsource {HELPER}\n{body}\n")
    return subprocess.run(
        ["bash", str(script)],
        env={**os.environ, "SHOP_PROGRESS_INTERVAL": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_long_step_is_announced_shows_heartbeats_and_the_total(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    # The step ends only after the helper printed a heartbeat (no timing assumed).
    result = _run(
        tmp_path,
        f"""announce "building widget" "the widget the cluster needs" "2 min"
: > "{tmp_path}/out"
step() {{ echo "compiling widget/core"; until grep -qs "still building widget" "{tmp_path}/out"; do sleep 0.2; done; }}
run_logged "building widget" "{log}" step > >(tee "{tmp_path}/out")
progress_done""",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "demo: building widget: the widget the cluster needs (the first time takes about 2 min)"
    assert any(
        line.startswith("demo:   ... still building widget, ") and "(log: compiling widget/core)" in line
        for line in lines
    ), result.stdout
    assert lines[-1].startswith("demo: done in ")


def test_a_failed_step_names_its_log_and_shows_its_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    result = _run(
        tmp_path,
        f"""fail() {{ echo "fetching modules"; echo "error: widget.go:3: undefined: gizmo"; return 2; }}
run_logged "building widget" "{log}" fail
echo "not reached"
""",
    )
    assert result.returncode == 1
    assert "not reached" not in result.stdout
    assert f"demo: building widget: FAILED, last lines of {log}:" in result.stderr
    assert "error: widget.go:3: undefined: gizmo" in result.stderr
