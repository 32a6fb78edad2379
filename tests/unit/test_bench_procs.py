"""The bench's /proc reader, on this test process."""

import os
import subprocess
import sys

from bench.procs import usage


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
