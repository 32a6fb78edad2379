"""``python -m bench``: start a throwaway cluster, run every scenario, report.

The cluster is devstack's (the same real servers and service processes as the
end-to-end tests) on free loopback ports in a temporary directory; it is
stopped and removed at the end, whatever happens.  See bench/BASELINE.md for
what each scenario measures and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bench import procs, profiling
from bench.catalog import Catalog
from bench.loadgen import Load
from common.auth import TokenSigner
from devstack.cluster import Cluster
from devstack.docstore import FerretDB
from devstack.paths import REPO
from devstack.process import NotReadyError, Process, free_port, port_open
from devstack.servers import Postgres

log = logging.getLogger("bench")

# The shop processes, in start order; the edge needs only product_svc and
# order_svc for the scenarios, the others are started when they are built.
REQUIRED = ("product_svc", "order_svc", "edge")
# Settings of the shop processes for the benchmark, all as deployed except these:
# a reservation whose order was never written (a checkout that failed under load)
# is released after 5 s instead of 60, so the consistency check can wait for it;
# the per-user order limits are lifted (a few buyers place thousands of orders: the
# load measures checkout, not the limiter refusing it; the limits are still checked).
OVERRIDES = {
    "order_svc": {
        "SHOP_ORPHAN_RESERVATION_AFTER": "5",
        "SHOP_ORDER_CREATE_LIMIT": "1000000000",
        "SHOP_UNPAID_ORDERS_LIMIT": "1000000000",
    }
}
OPTIONAL = ("user_svc", "comment_svc", "notify_svc")
START_ORDER = ("user_svc", "product_svc", "order_svc", "comment_svc", "notify_svc", "edge")


@dataclass(frozen=True)
class Budget:
    """How long each load runs (seconds) and at which concurrency."""

    warmup: float = 2.0
    edge: float = 6.0
    edge_rounds: int = 3  # alternating edge / direct rounds at saturation
    edge_connections: int = 32
    paced_connections: int = 4
    checkout: float = 15.0
    checkout_connections: int = 8
    buyers: int = 40
    checkout_products: int = 200
    browse: float = 15.0
    browse_connections: int = 1
    probe: float = 3.0

    def quick(self) -> Budget:
        return Budget(
            warmup=1.0, edge=3.0, edge_rounds=1, checkout=6.0, browse=6.0, probe=2.0,
            buyers=10, checkout_products=100,
        )  # fmt: skip


@dataclass
class Bench:
    """Everything the scenarios share."""

    cluster: Cluster
    work: Path
    budget: Budget
    catalog: Catalog = field(default_factory=Catalog)
    checkout_ids: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    peak: procs.Peak = field(default_factory=procs.Peak)
    started: float = field(default_factory=time.monotonic)
    profiling: bool = False
    # CPU each process burns doing nothing (pollers, sweepers, Kafka threads), in cores.
    idle_cores: dict[str, float] = field(default_factory=dict)

    @property
    def edge_url(self) -> str:
        return f"http://{self.cluster.addr('edge')}"

    @property
    def mongo_url(self) -> str:
        server = self.cluster.servers["mongo"]
        assert isinstance(server, FerretDB)
        return server.url

    @property
    def order_dsn(self) -> str:
        server = self.cluster.servers["postgres"]
        assert isinstance(server, Postgres)
        return server.dsn("shop_order")

    def pids(self) -> dict[str, int]:
        """Every process of the cluster (servers and shop processes) by name."""
        found: dict[str, int] = {}
        for name, process in self.cluster.services.items():
            if process.pid is not None:
                found[name] = process.pid
        for name, server in self.cluster.servers.items():
            if server.process is not None and server.process.pid is not None:
                found[name] = server.process.pid
        return found

    def sampler(self) -> procs.Sampler:
        return procs.Sampler(self.pids(), self.peak)

    def write_lines(self, name: str, lines: list[str]) -> str:
        path = self.work / name
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def signer(self) -> TokenSigner:
        key = serialization.load_pem_private_key((self.cluster.keys / "jwt_private.pem").read_bytes(), None)
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return TokenSigner(key, issuer="shop", audience="shop", ttl=3600)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Measured:
    """A load run with the CPU time each process spent during it, and that time
    less what the process burns when idle (``net``)."""

    load: Load
    cpu_s: dict[str, float]
    net_cpu_s: dict[str, float]

    def cpu_per_1k(self) -> dict[str, float]:
        if self.load.requests == 0:
            return {}
        return {name: round(seconds * 1000 / self.load.requests, 3) for name, seconds in self.net_cpu_s.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.load.as_dict(),
            "cpu_s": self.cpu_s,
            "cpu_s_less_idle": self.net_cpu_s,
            "cpu_s_per_1k_requests": self.cpu_per_1k(),
        }


async def measured(bench: Bench, run: Any, label: str, seconds: float) -> Measured:
    """Await a load run of about ``seconds`` while sampling memory; CPU time of every
    process across it.  With ``--profile``, py-spy records the shop processes meanwhile."""
    pids = bench.pids()
    before = procs.usage(pids)
    started = time.monotonic()
    with bench.sampler():
        if bench.profiling:
            shop = {name: pid for name, pid in pids.items() if name in bench.cluster.services}
            async with profiling.recording(shop, seconds, profiling.OUT, label) as files:
                load: Load = await run
            bench.results.setdefault("profiles", {})[label] = {
                name: profiling.summarize(path) for name, path in files.items()
            }
        else:
            load = await run
    after = procs.usage(pids)
    wall = time.monotonic() - started
    spent = procs.cpu_delta(before, after)
    net = {name: round(max(0.0, cpu - bench.idle_cores.get(name, 0.0) * wall), 3) for name, cpu in spent.items()}
    return Measured(load, spent, net)


# --- the cluster ------------------------------------------------------------------------------------


def start_cluster(root: Path, extra_env: dict[str, str], unsafe_fast_storage: bool) -> tuple[Cluster, list[str]]:
    cluster = Cluster(root, unsafe_fast_storage=unsafe_fast_storage)
    for name in START_ORDER:
        cluster.overrides[name] = {**OVERRIDES.get(name, {}), **extra_env}
    skipped: list[str] = []
    cluster.start_servers(["postgres", "redis", "kafka", "mongo", "s3"])
    for name in START_ORDER:
        try:
            started = cluster.start_services([name])
        except (NotReadyError, RuntimeError) as exc:
            if name in REQUIRED:
                raise
            log.warning("%s did not start; the benchmark goes on without it:\n%s", name, exc)
            cluster.stop_service(name)
            skipped.append(f"{name} (failed to start: {str(exc).strip().splitlines()[-1][:200]})")
            continue
        if not started:
            if name in REQUIRED:
                raise RuntimeError(f"{name} is not built; the benchmark needs it")
            skipped.append(f"{name} (not built)")
    return cluster, skipped


@contextlib.contextmanager
def reference_server(kind: str, work: Path) -> Iterator[int]:
    """One of bench/refs.py's servers on a free port, for the duration of the block."""
    import sys

    port = free_port()
    argv = [sys.executable, "-m", "bench.refs", kind, str(port)]
    process = Process(f"ref-{kind}", argv, work / "logs" / f"ref-{kind}.log", cwd=REPO).start()
    try:
        process.wait_ready(lambda: port_open(port), 20)
        yield port
    finally:
        process.stop()


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(  # BASELINE.md is left out: the previous run rewrote it
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/BASELINE.md"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out + ("+changes" if dirty else "")


async def run(
    budget: Budget,
    only: set[str] | None = None,
    *,
    profiling: bool = False,
    extra_env: dict[str, str] | None = None,
    unsafe_fast_storage: bool = False,
) -> dict[str, Any]:
    from bench import scenarios

    root = Path(tempfile.mkdtemp(prefix="shop-bench-"))
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": procs.machine(),
        "commit": git_commit(),
        "load_average_before": procs.load_average(),
        "budget": budget.__dict__,
        "overrides": {**OVERRIDES, "every shop process": extra_env or {}},
        "unsafe_fast_storage": unsafe_fast_storage,
    }
    began = time.monotonic()
    cpu_before = procs.cpu_times()
    cluster: Cluster | None = None
    try:
        started, skipped = await asyncio.to_thread(start_cluster, root, extra_env or {}, unsafe_fast_storage)
        cluster = started
        results["cluster_start_s"] = round(time.monotonic() - began, 1)
        results["services_not_running"] = skipped
        work = root / "bench"
        work.mkdir()
        bench = Bench(started, work, budget, results=results, profiling=profiling)
        await scenarios.run_all(bench, only)
    finally:
        results["load_average_after"] = procs.load_average()
        cpu_after = procs.cpu_times()
        spent = {kind: cpu_after[kind] - cpu_before[kind] for kind in cpu_after}
        total = sum(spent.values()) or 1.0
        # Steal: time the hypervisor gave this machine's CPUs to someone else.
        results["cpu_share"] = {kind: round(seconds / total, 3) for kind, seconds in spent.items()}
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
        # PostgreSQL's data directory lives outside the root when the postgres
        # user cannot reach the root (devstack notes where): remove it too.
        moved = root / "postgres" / "pgdata.location"
        if moved.exists():
            shutil.rmtree(moved.read_text().strip(), ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        results["total_s"] = round(time.monotonic() - began, 1)
    run_id = uuid.uuid4().hex[:8]
    results["run_id"] = run_id
    return results
