"""Footprint of the cluster's processes, read from /proc: resident memory and CPU time.

Every watched process is a tree (PostgreSQL forks a backend per connection, a
server started through ``runuser`` sits below it), so figures are summed over
the tree.  Memory is reported as RSS, as PSS (proportional: shared pages
split between the processes that map them), because summing RSS over
PostgreSQL's backends counts its shared buffers once per backend, and as
anonymous RSS (the process's own heap and stacks, without mapped files).
A Python service's RSS includes its shared libraries' pages, and how many of
those are mapped depends on the page cache: right after ``pip install`` wrote
them (large folios in the page cache) grpc's library alone maps 13 MB, after
the cache was dropped 7 MB; the anonymous part does not move with that.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Usage:
    rss_mb: float
    pss_mb: float
    cpu_s: float
    anon_mb: float = 0.0


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        tree[int(fields[1])].append(int(entry.name))
    return tree


def _tree(pid: int, children: dict[int, list[int]]) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def _kilobytes(path: str, name: str) -> int | None:
    """A "Name:   123 kB" line of a /proc file, in bytes; None when unreadable
    (the process ended, or the kernel hides it)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _one(pid: int) -> Usage:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
        rss = int(fields[21]) * PAGE
    except (OSError, ValueError, IndexError):
        return Usage(0.0, 0.0, 0.0)
    pss = _kilobytes(f"/proc/{pid}/smaps_rollup", "Pss:")
    anon = _kilobytes(f"/proc/{pid}/status", "RssAnon:")
    return Usage(rss / 2**20, (rss if pss is None else pss) / 2**20, cpu, (anon or 0) / 2**20)


def usage(pids: dict[str, int]) -> dict[str, Usage]:
    """Memory and CPU time of each named process tree, now."""
    children = _children()
    result = {}
    for name, pid in pids.items():
        parts = [_one(p) for p in _tree(pid, children)]
        result[name] = Usage(
            rss_mb=sum(p.rss_mb for p in parts),
            pss_mb=sum(p.pss_mb for p in parts),
            cpu_s=sum(p.cpu_s for p in parts),
            anon_mb=sum(p.anon_mb for p in parts),
        )
    return result


@dataclass
class Peak:
    """The largest resident memory seen per process while a :class:`Sampler` ran."""

    rss_mb: dict[str, float] = field(default_factory=dict)
    pss_mb: dict[str, float] = field(default_factory=dict)
    anon_mb: dict[str, float] = field(default_factory=dict)

    def add(self, now: dict[str, Usage]) -> None:
        for name, seen in now.items():
            self.rss_mb[name] = max(self.rss_mb.get(name, 0.0), seen.rss_mb)
            self.pss_mb[name] = max(self.pss_mb.get(name, 0.0), seen.pss_mb)
            self.anon_mb[name] = max(self.anon_mb.get(name, 0.0), seen.anon_mb)


class Sampler:
    """Samples memory every ``interval`` seconds in a thread, while load runs."""

    def __init__(self, pids: dict[str, int], peak: Peak, interval: float = 0.5) -> None:
        self.pids = pids
        self.peak = peak
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="footprint-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak.add(usage(self.pids))

    def __enter__(self) -> Sampler:
        self.peak.add(usage(self.pids))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak.add(usage(self.pids))


def cpu_delta(before: dict[str, Usage], after: dict[str, Usage]) -> dict[str, float]:
    return {name: round(after[name].cpu_s - before[name].cpu_s, 3) for name in after if name in before}


def cpu_times() -> dict[str, float]:
    """Whole-machine CPU seconds by kind (busy, idle, steal) since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return {
        "busy": (user + nice + system + irq + softirq) / TICKS,
        "idle": (idle + iowait) / TICKS,
        "steal": steal / TICKS,
    }


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
            break
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "cpu_model": model,
        "kernel": os.uname().release,
    }
