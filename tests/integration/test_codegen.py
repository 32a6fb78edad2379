"""The generated-code check: passes on the committed gen/, fails once proto/ moves on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from devstack.paths import REPO


def _copy(tmp_path: Path) -> Path:
    for part in ("proto", "gen", "scripts"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(root / "scripts" / "check_gen.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_passes_on_committed_gen_and_fails_when_stale(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    fresh = _check(root)
    assert fresh.returncode == 0, fresh.stderr

    proto = root / "proto" / "shop" / "common" / "v1" / "paging.proto"
    proto.write_text(proto.read_text() + "\nmessage StaleProbe {\n  string note = 1;\n}\n")
    stale = _check(root)
    assert stale.returncode == 1
    assert "gen/ is stale" in stale.stderr
    assert "paging_pb2" in stale.stderr
