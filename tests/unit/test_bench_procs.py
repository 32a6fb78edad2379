"""The bench's /proc reader, on real processes and files."""

import os
import subprocess
import sys
from pathlib import Path

from bench.procs import _kilobytes, usage


def test_a_process_tree_is_summed_with_each_measure_read() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(30)"], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        alone = usage({"me": os.getpid()})["me"]  # the child is in the tree
        mine = usage({"child": child.pid})["child"]
    finally:
        child.kill()
        child.wait()
    assert 0 < mine.anon_mb < mine.rss_mb
    assert 0 < mine.pss_mb <= mine.rss_mb
    assert alone.rss_mb > mine.rss_mb and alone.anon_mb > mine.anon_mb
    assert alone.cpu_s > 0


def test_a_process_that_is_gone_counts_as_nothing() -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    gone = usage({"gone": finished.pid})["gone"]
    assert (gone.rss_mb, gone.pss_mb, gone.cpu_s, gone.anon_mb) == (0.0, 0.0, 0.0, 0.0)


def test_each_kilobyte_field_is_read_on_its_own(tmp_path: Path) -> None:
    """An unreadable or odd file costs only its own figure (PSS falls back to RSS,
    anonymous RSS to 0), never the other one's."""
    rollup = tmp_path / "smaps_rollup"
    rollup.write_text("Rss:     2048 kB\nPss:     1024 kB\n")
    assert _kilobytes(str(rollup), "Pss:") == 1024 * 1024
    assert _kilobytes(str(rollup), "RssAnon:") is None  # no such line
    assert _kilobytes(str(tmp_path / "gone"), "Pss:") is None  # no such file
    rollup.write_text("Pss: unreadable kB\n")
    assert _kilobytes(str(rollup), "Pss:") is None
    assert _kilobytes(f"/proc/{os.getpid()}/status", "RssAnon:") is not None
