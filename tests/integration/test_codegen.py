"""The generated-code check and the breaking-change check, on copies of the repository.

check_gen.sh: passes on the committed gen/, fails once proto/ moves on. check_breaking.sh
(`buf breaking`, run by make lint): passes on the real tree, fails naming the field when a
commit deletes one, and says it skipped when there is no previous commit.
"""

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
    for name in ("buf.yaml", "buf.gen.yaml"):
        shutil.copy2(REPO / name, tmp_path / name)
    # buf.gen.yaml's plugins are .venv/bin/... relative to the repository root.
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    return tmp_path


def _run(script: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args],
        env={**os.environ, "PYTHON": sys.executable},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return _run(root / "scripts" / "check_gen.sh")


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


def test_buf_generate_reproduces_the_committed_gen(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    committed = {p.relative_to(root / "gen"): p.read_bytes() for p in (root / "gen").rglob("*") if p.is_file()}
    (root / "gen" / "shop" / "leftover_pb2.py").write_text("stale\n")

    subprocess.run([str(REPO / ".venv" / "bin" / "buf"), "generate"], cwd=root, check=True)

    generated = {p.relative_to(root / "gen"): p.read_bytes() for p in (root / "gen").rglob("*") if p.is_file()}
    assert sorted(generated) == sorted(committed)
    assert [name for name in committed if generated[name] != committed[name]] == []


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=shop-test", "-c", "user.email=shop-test@example.invalid", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def test_breaking_check_passes_on_the_real_tree() -> None:
    result = _run(REPO / "scripts" / "check_breaking.sh")
    assert result.returncode == 0, result.stderr
    assert "no breaking change" in result.stdout or "skipped" in result.stdout


def test_breaking_check_fails_when_a_commit_deletes_a_field(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _git(root, "init", "-q")
    _git(root, "add", "proto", "buf.yaml")
    _git(root, "commit", "-q", "-m", "contracts")
    first = _run(root / "scripts" / "check_breaking.sh")
    assert first.returncode == 0, first.stderr
    assert "skipped" in first.stdout

    money = root / "proto" / "shop" / "common" / "v1" / "money.proto"
    text = money.read_text()
    assert "currency_code" in text
    money.write_text("\n".join(line for line in text.splitlines() if "currency_code" not in line) + "\n")
    _git(root, "commit", "-q", "-am", "drop a field")
    broken = _run(root / "scripts" / "check_breaking.sh")
    assert broken.returncode == 1
    assert 'with name "currency_code" on message "Money" was deleted' in broken.stderr

    # An addition is not a breaking change.
    end = text.rindex("}")
    money.write_text(text[:end] + "  string note = 3;\n" + text[end:])
    _git(root, "commit", "-q", "-am", "field back, and one more")
    added = _run(root / "scripts" / "check_breaking.sh", "HEAD~2")
    assert added.returncode == 0, added.stderr
