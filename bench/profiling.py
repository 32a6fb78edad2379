"""Sampling profiles of the shop processes while a load runs (``python -m bench --profile``).

``py-spy record`` (non-blocking, so the process is not paused to be sampled)
writes collapsed stacks; :func:`summarize` turns them into the functions that
were on the CPU themselves (self) and those whose callees were (inclusive),
as shares of the samples.  Profiling costs CPU on a 2-core machine, so a
profiled run's throughput is not a benchmark figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

# Raw profiles (collapsed stacks, for flame graph tools), kept with the results.
OUT = Path(__file__).resolve().parent / "results" / "profiles"


def py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if not found:
        raise FileNotFoundError("py-spy is not installed: .venv/bin/pip install -e '.[dev]'")
    return found


@contextlib.asynccontextmanager
async def recording(pids: dict[str, int], seconds: float, out: Path, label: str) -> AsyncIterator[dict[str, Path]]:
    """Record every process in ``pids`` for ``seconds`` while the block runs."""
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    files = {name: out / f"{label}-{name}.txt" for name in pids}
    spies = [
        await asyncio.create_subprocess_exec(
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(round(seconds)),
            "--rate",
            "250",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(files[name]),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    try:
        yield files
    finally:
        await asyncio.gather(*(spy.wait() for spy in spies))


FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    """``function (path/to/module.py:12)`` -> ``module.py:function``, paths of site-packages shortened."""
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{match['function']}"


# Leaves where a thread waits rather than works (py-spy --nonblocking cannot always
# tell a thread blocked in native code from a busy one): left out of the totals.
WAITING = (
    "selectors.py:",
    "common/clients.py:KafkaProducer._poll",
    "common/consumer.py:EventConsumer._fetch",
    "threading.py:",
    "queue.py:",
    "concurrent/futures/thread.py:_worker",
    "socketserver.py:",
    "asyncio/runners.py:Runner.run",  # uvloop (the edge) waits inside its native run loop
)
# Frames every stack runs through (the event loop, thread and module entry): left
# out of the inclusive list, which is about where the work is.
PLUMBING = ("asyncio/", "<frozen runpy>", "threading.py", "__main__.py", "uvicorn/_compat.py", "uvicorn/main.py")


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares of the busy samples in one collapsed-stack file
    (samples whose leaf is a wait are counted apart).  A self share on
    ``Handle._run`` is native code the event loop called (grpc's core, C
    extensions), which py-spy does not see into without --native."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = waiting = 0
    if not path.exists():
        return {"samples": 0}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        frames = [frame for frame in frames if not frame.startswith("process ") and not frame.startswith("thread ")]
        if not frames:
            continue
        if frames[-1].startswith(WAITING):
            waiting += count
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if not frame.startswith(PLUMBING) and "selectors.py" not in frame:
                inclusive[frame] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    if not total:
        return {"samples": 0, "waiting_samples": waiting}
    return {"samples": total, "waiting_samples": waiting, "self_pct": shares(own), "inclusive_pct": shares(inclusive)}
