"""Where the local cluster keeps things."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Downloads and builds (Go binaries, Kafka jars), shared by every checkout and
# kept between runs so the second run is fast.
CACHE = Path(os.environ.get("SHOP_CACHE", Path.home() / ".cache" / "shop"))
BIN = CACHE / "bin"
# State of the cluster that `python -m devstack up` runs: pids, ports, logs, data.
STATE_DIR = Path(os.environ.get("SHOP_DEVSTACK_DIR", REPO / ".devstack"))
