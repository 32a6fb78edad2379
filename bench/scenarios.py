"""The five scenarios of issue 9, in the order they run:

1. edge overhead    GET one product: edge (wrk) vs straight gRPC (ghz), and the ceilings
3. checkout         POST /api/v1/orders from many buyers; consistency check afterwards
4. event latency    read on the buyers' open notification streams during (3)
2. browse mix       70/20/10 list / filter+search / get over 10,000 then 100,000 products
5. footprint        memory idle and under load, CPU seconds per 1,000 requests

Checkout runs before the browse catalog is seeded, so its figures do not depend
on the browse scenario's catalog (on FerretDB v1 every conditional update
scanned the products collection; see BASELINE.md).  The browse mix at 100,000
products runs last: a listing that outlives the edge's deadline keeps the
MongoDB-wire server busy after the load stops.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import uuid
from typing import Any

import grpc
import psycopg
from shop.product.v1 import product_pb2, product_pb2_grpc

from bench import catalog as seed, loadgen, metrics as hop_metrics, procs
from bench.loadgen import ECHO_PROTO, GrpcMethod
from bench.notifications import Arrival, Watcher
from bench.runner import Bench, measured, reference_server
from devstack.paths import REPO

log = logging.getLogger("bench")

IDLE_SECONDS = 5.0
PROTO_ROOT = REPO / "proto"
PRODUCT_PROTO = PROTO_ROOT / "shop" / "product" / "v1" / "product.proto"
ECHO = GrpcMethod("bench.v1.EchoService/Echo", ECHO_PROTO)
GET_PRODUCT = GrpcMethod("shop.product.v1.ProductService/GetProduct", PRODUCT_PROTO, PROTO_ROOT)


async def run_all(bench: Bench, only: set[str] | None) -> None:
    def wanted(name: str) -> bool:
        return only is None or name in only

    # Idle: memory after start, and the CPU each process burns over a few quiet seconds.
    pids = bench.pids()
    idle = procs.usage(pids)
    await asyncio.sleep(IDLE_SECONDS)
    later = procs.usage(pids)
    bench.idle_cores = {name: round(cpu / IDLE_SECONDS, 4) for name, cpu in procs.cpu_delta(idle, later).items()}
    bench.results["footprint_idle"] = {
        name: {**usage.__dict__, "idle_cores": bench.idle_cores.get(name, 0.0)} for name, usage in later.items()
    }
    await asyncio.to_thread(seed.seed_categories, bench.mongo_url, bench.catalog)
    bench.checkout_ids = await asyncio.to_thread(
        seed.seed_products, bench.mongo_url, bench.catalog, bench.budget.checkout_products, stock=100_000
    )
    if wanted("edge"):
        await _step(bench, "edge_overhead", edge_overhead(bench))
    if wanted("checkout"):
        await _step(bench, "checkout", checkout(bench))
    if wanted("browse"):
        await _step(bench, "browse", browse(bench))
    bench.results["footprint_peak"] = {
        name: {
            "rss_mb": bench.peak.rss_mb[name],
            "pss_mb": bench.peak.pss_mb.get(name, 0.0),
            "anon_mb": bench.peak.anon_mb.get(name, 0.0),
        }
        for name in bench.peak.rss_mb
    }


async def _step(bench: Bench, name: str, step: Any) -> None:
    started = time.monotonic()
    log.info("scenario %s (at %.0fs)", name, bench.elapsed())
    try:
        await step
    except Exception as exc:
        log.exception("scenario %s failed", name)
        bench.results.setdefault(name, {})["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    bench.results.setdefault(name, {})["took_s"] = round(time.monotonic() - started, 1)


# --- 1. edge overhead ---------------------------------------------------------------------------------


async def edge_overhead(bench: Bench) -> None:
    b = bench.budget
    out: dict[str, Any] = {"catalog_products": bench.catalog.size, "connections": b.edge_connections}
    bench.results["edge_overhead"] = out
    ids_file = bench.write_lines("product_ids.txt", bench.checkout_ids)
    env = {"BENCH_IDS": ids_file}
    # A reply-sized echo (a GetProductResponse of a seeded product is about this size).
    echo_data = [{"text": "x" * 320}]
    product_data = [{"product_id": product_id} for product_id in bench.checkout_ids]

    def get_via_wrk(url: str, seconds: float, connections: int, pause_ms: float = 0.0) -> Any:
        return loadgen.wrk(url, "get_product.lua", seconds=seconds, connections=connections, env=env, delay_ms=pause_ms)

    def echo(address: str, seconds: float) -> Any:
        return loadgen.ghz(address, ECHO, echo_data, seconds=seconds, concurrency=b.edge_connections,
                           workdir=bench.work)  # fmt: skip

    def get_direct(seconds: float, concurrency: int, rps: float = 0.0) -> Any:
        return loadgen.ghz(bench.cluster.addr("product_svc"), GET_PRODUCT, product_data, seconds=seconds,
                           concurrency=concurrency, rps=rps, workdir=bench.work,
                           tls=bench.cluster.tls_files("edge"))  # fmt: skip

    # Ceilings: the bare frameworks on this machine, nothing else running load.
    with reference_server("http", bench.work) as port:
        await get_via_wrk(f"http://127.0.0.1:{port}", b.warmup, b.edge_connections)
        starlette: loadgen.Load = await get_via_wrk(f"http://127.0.0.1:{port}", b.edge, b.edge_connections)
    with reference_server("grpc", bench.work) as port:
        await echo(f"127.0.0.1:{port}", b.warmup)
        grpc_echo: loadgen.Load = await echo(f"127.0.0.1:{port}", b.edge)
    out["starlette_ceiling"] = starlette.as_dict()
    out["grpc_echo_ceiling"] = grpc_echo.as_dict()

    # The system at saturation, same concurrency for both, in alternating rounds:
    # a round's two figures are seconds apart, so the machine's drift (whole runs
    # here differ by about 25 %) mostly cancels in its ratio; the figures reported
    # are the medians over the rounds.  CPU per request is from the first round.
    await get_via_wrk(bench.edge_url, b.warmup, b.edge_connections)
    edge = await measured(bench, get_via_wrk(bench.edge_url, b.edge, b.edge_connections), "edge-get", b.edge)
    await get_direct(b.warmup, b.edge_connections)
    direct = await measured(bench, get_direct(b.edge, b.edge_connections), "direct-get", b.edge)
    out["edge"] = edge.as_dict()
    out["direct"] = direct.as_dict()
    rounds = [(edge.load.ok_rps, direct.load.ok_rps)]
    for _ in range(b.edge_rounds - 1):
        again_edge: loadgen.Load = await get_via_wrk(bench.edge_url, b.edge, b.edge_connections)
        again_direct: loadgen.Load = await get_direct(b.edge, b.edge_connections)
        rounds.append((again_edge.ok_rps, again_direct.ok_rps))
    out["rounds"] = [{"edge_rps": e, "direct_rps": d, "ratio": _ratio(e, d)} for e, d in rounds]
    out["edge_rps_median"] = statistics.median(e for e, _ in rounds)
    out["direct_rps_median"] = statistics.median(d for _, d in rounds)

    # Half of the edge's saturation: the edge paced to about that rate, then the
    # direct call at the rate the edge actually reached.
    rate = max(out["edge_rps_median"] / 2, 1.0)
    edge_half: loadgen.Load = await get_via_wrk(
        bench.edge_url, b.edge, b.paced_connections, pause_ms=b.paced_connections * 1000 / rate
    )
    direct_half: loadgen.Load = await get_direct(b.edge, b.paced_connections, rps=max(edge_half.rps, 1.0))
    out["edge_half"] = edge_half.as_dict()
    out["direct_half"] = direct_half.as_dict()
    out["ratio_edge_direct"] = statistics.median(r["ratio"] for r in out["rounds"])
    out["ratio_edge_starlette"] = _ratio(out["edge_rps_median"], starlette.ok_rps)
    out["ratio_direct_echo"] = _ratio(out["direct_rps_median"], grpc_echo.ok_rps)
    out["edge_adds_p50_ms"] = round(edge_half.p50_ms - direct_half.p50_ms, 3)
    out["edge_adds_p99_ms"] = round(edge_half.p99_ms - direct_half.p99_ms, 3)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


# --- 3 + 4. checkout, with the buyers' notification streams open -------------------------------------------


async def checkout(bench: Bench) -> None:
    b = bench.budget
    out: dict[str, Any] = {
        "catalog_products": bench.catalog.size,
        "products_ordered_from": len(bench.checkout_ids),
        "buyers": b.buyers,
        "connections": b.checkout_connections,
    }
    bench.results["checkout"] = out
    signer = bench.signer()
    buyers = {str(uuid.uuid4()): "" for _ in range(b.buyers)}
    for user_id in buyers:
        buyers[user_id] = signer.sign(user_id, "customer")[0]
    run_id = uuid.uuid4().hex[:8]
    env = {
        "BENCH_IDS": bench.write_lines("checkout_ids.txt", bench.checkout_ids),
        "BENCH_TOKENS": bench.write_lines("tokens.txt", list(buyers.values())),
        "BENCH_RUN": run_id,
    }
    notify = "notify_svc" in bench.cluster.services
    watcher = Watcher(bench.edge_url, lambda: bench.cluster.channel("notify_svc"), buyers) if notify else None
    if watcher is not None:
        await watcher.__aenter__()
    latency: dict[str, Any] = {}
    ports = bench.cluster.metrics_ports
    hops = [await asyncio.to_thread(hop_metrics.snapshot, ports)]
    try:
        # Reference (and warm-up): one buyer at a time, 10 orders/s at most.
        quiet = await loadgen.wrk(
            bench.edge_url, "checkout.lua", seconds=b.probe * 2, connections=1, delay_ms=100,
            env={**env, "BENCH_RUN": run_id + "q"},
        )  # fmt: skip
        out["one_at_a_time"] = quiet.as_dict()
        orders = await _settled_orders(bench.order_dsn, list(buyers))
        if watcher is not None:
            await watcher.wait_for(len(orders), 15)
            latency["one_at_a_time"] = _latency(watcher.order_arrivals(), len(orders))
            hops.append(await asyncio.to_thread(hop_metrics.snapshot, ports))
            latency["one_at_a_time"]["hops"] = hop_metrics.breakdown(hops[0], hops[1])
        mark = len(watcher.order_arrivals()) if watcher is not None else 0
        load = await measured(bench, loadgen.wrk(
            bench.edge_url, "checkout.lua", seconds=b.checkout, connections=b.checkout_connections, env=env,
        ), "checkout", b.checkout)  # fmt: skip
        out["load"] = load.as_dict()
        # Requests in flight when wrk stopped still complete: wait until the count holds still.
        before = len(orders)
        orders = await _settled_orders(bench.order_dsn, list(buyers))
        out["orders_in_database"] = len(orders)
        if watcher is not None:
            await watcher.wait_for(len(orders), 30)
            latency["under_load"] = _latency(watcher.order_arrivals()[mark:], len(orders) - before)
            hops.append(await asyncio.to_thread(hop_metrics.snapshot, ports))
            latency["under_load"]["hops"] = hop_metrics.breakdown(hops[-2], hops[-1])
    finally:
        if watcher is not None:
            await watcher.__aexit__(None, None, None)
    out["consistency"] = await asyncio.to_thread(consistency, bench, list(buyers))
    if watcher is not None:
        bench.results["event_latency"] = {
            "via": watcher.watch.via,
            "streams_open": watcher.watch.streams_open,
            "stream_failures": watcher.watch.failures[:5],
            **latency,
        }
    else:
        bench.results["event_latency"] = {"error": "notify_svc is not running"}


async def _settled_orders(dsn: str, buyers: list[str], timeout: float = 15.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    orders = await asyncio.to_thread(_orders_of, dsn, buyers)
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        again = await asyncio.to_thread(_orders_of, dsn, buyers)
        if len(again) == len(orders):
            return again
        orders = again
    return orders


def _orders_of(dsn: str, buyers: list[str]) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select id::text, status from orders where user_id = any(%s::uuid[])", (buyers,))
        return {order_id: status for order_id, status in rows}


def _count(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def consistency(bench: Bench, buyers: list[str], wait_s: float = 30.0) -> dict[str, Any]:
    """Stock + sold = initial for every product; one OrderCreated outbox row per
    order, every one published.  Waits (up to ``wait_s``) for the outbox relay and
    for order_svc's sweeper to release reservations whose order was never written
    (a request that failed under load), as a client would see it settle."""
    with psycopg.connect(bench.order_dsn, autocommit=True) as conn:
        pending_at_end = _count(conn, "select count(*) from pending_reservations")
        deadline = time.monotonic() + wait_s
        while True:
            unpublished = _count(conn, "select count(*) from outbox where published_at is null")
            pending_notes = _count(conn, "select count(*) from pending_reservations")
            if (unpublished == 0 and pending_notes == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        orders: dict[str, str] = dict(
            conn.execute("select id::text, status from orders where user_id = any(%s::uuid[])", (buyers,)).fetchall()
        )
        sold: dict[str, int] = {}
        held: dict[str, int] = {}
        for product_id, status, quantity in conn.execute(
            "select l.product_id::text, o.status, l.quantity from order_lines l join orders o on o.id = l.order_id "
            "where o.user_id = any(%s::uuid[])",
            (buyers,),
        ):
            if status.lower() != "cancelled":
                sold[product_id] = sold.get(product_id, 0) + quantity
            if status.lower() == "pending_payment":
                held[product_id] = held.get(product_id, 0) + quantity
        created: dict[str, int] = dict(
            conn.execute(
                "select key, count(*) from outbox where event_type = 'shop.events.v1.OrderCreated' "
                "and key = any(%s) group by key",
                (list(orders),),
            ).fetchall()
        )
    stock = seed.stock_of(bench.mongo_url, bench.checkout_ids)
    wrong_stock = [
        pid for pid in bench.checkout_ids if stock[pid][0] + sold.get(pid, 0) != bench.catalog.initial_stock[pid]
    ]
    wrong_holds = [pid for pid in bench.checkout_ids if stock[pid][1] != held.get(pid, 0)]
    missing_events = [order_id for order_id in orders if created.get(order_id, 0) == 0]
    duplicate_events = [order_id for order_id, count in created.items() if count > 1]
    result = {
        "orders": len(orders),
        "statuses": {status: list(orders.values()).count(status) for status in set(orders.values())},
        "units_sold": sum(sold.values()),
        "products_checked": len(bench.checkout_ids),
        "stock_plus_sold_not_initial": wrong_stock[:10],
        "holds_not_open_order_units": wrong_holds[:10],
        "orders_without_event": missing_events[:10],
        "orders_with_duplicate_events": duplicate_events[:10],
        "unpublished_outbox_rows": unpublished,
        "orphaned_reservations_at_end_of_load": pending_at_end,
        "orphaned_reservations_left": pending_notes,
    }
    result["clean"] = not (
        wrong_stock or wrong_holds or missing_events or duplicate_events or unpublished or pending_notes
    )
    return result


def _latency(arrivals: list[Arrival], orders: int) -> dict[str, Any]:
    values = sorted(a.latency_ms for a in arrivals)
    out: dict[str, Any] = {"orders": orders, "notifications_read": len(values)}
    if values:
        out.update(
            p50_ms=round(_percentile(values, 50), 2),
            p90_ms=round(_percentile(values, 90), 2),
            p99_ms=round(_percentile(values, 99), 2),
            max_ms=round(values[-1], 2),
            mean_ms=round(statistics.fmean(values), 2),
        )
    return out


def _percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, min(len(values), round(p / 100 * len(values) + 0.5)))
    return values[rank - 1]


# --- 2. browse mix ----------------------------------------------------------------------------------------


async def browse(bench: Bench) -> None:
    b = bench.budget
    out: dict[str, Any] = {"connections": b.browse_connections, "sizes": {}}
    bench.results["browse"] = out
    for size in (10_000, 100_000):
        missing = size - (bench.catalog.size - len(bench.checkout_ids))
        started = time.perf_counter()
        await asyncio.to_thread(seed.seed_products, bench.mongo_url, bench.catalog, missing)
        seeded = time.perf_counter() - started
        step: dict[str, Any] = {
            "seeded": missing,
            "seed_s": round(seeded, 2),
            "seed_docs_per_s": round(missing / seeded),
            "catalog_products": bench.catalog.size,
        }
        out["sizes"][str(size)] = step
        # Ids spread evenly over the collection: where a document sits in the table
        # matters to a server that scans it (see BASELINE.md).
        browse_ids = bench.catalog.product_ids[len(bench.checkout_ids) :]
        spread = browse_ids[:: max(1, len(browse_ids) // 2000)]
        env = {
            "BENCH_IDS": bench.write_lines(f"browse_ids_{size}.txt", spread),
            "BENCH_CATEGORIES": bench.write_lines("categories.txt", bench.catalog.categories),
            "BENCH_WORDS": bench.write_lines("words.txt", list(seed.SEARCH_WORDS)),
        }
        # What one request costs with nothing else running: a get and a listing, straight to product_svc.
        step["direct_get_p50_ms"] = await _direct_get_p50(bench, spread[:: max(1, len(spread) // 200)])
        step["direct_list_newest_s"] = await _direct_list_seconds(bench)
        load = await measured(bench, loadgen.wrk(
            bench.edge_url, "browse.lua", seconds=b.browse, connections=b.browse_connections, env=env,
            timeout_s=30.0,
        ), f"browse-{size}", b.browse)  # fmt: skip
        step["load"] = load.as_dict()
        # Listings the edge gave up on (its deadline) may still run in the MongoDB-wire server.
        step["mongo_busy_after_load_s"] = await _wait_quiet(bench, "mongo", 60.0 if size < 100_000 else 0.0)
    small, large = out["sizes"]["10000"], out["sizes"]["100000"]
    if min(_ok_share(small["load"]), _ok_share(large["load"])) >= 0.9:
        out["p99_ratio_100k_10k"] = _ratio(large["load"]["p99_ms"], small["load"]["p99_ms"])
        out["p99_ratio_from"] = "the browse mix through the edge"
    else:
        # Answers cut short by the edge's deadline say nothing about p99: compare
        # what one listing costs on its own instead.
        out["p99_ratio_100k_10k"] = _ratio(large["direct_list_newest_s"], small["direct_list_newest_s"])
        out["p99_ratio_from"] = "one direct listing at each size (the mix timed out at the edge)"


def _ok_share(load: dict[str, Any]) -> float:
    return float(load["ok"]) / load["requests"] if load["requests"] else 0.0


async def _wait_quiet(bench: Bench, name: str, limit: float) -> float:
    """Until ``name`` uses under a fifth of a core (or ``limit`` seconds); how long that took."""
    started = time.monotonic()
    pids = {name: bench.pids()[name]}
    while time.monotonic() - started < limit:
        before = procs.usage(pids)[name].cpu_s
        await asyncio.sleep(1.0)
        if procs.usage(pids)[name].cpu_s - before < 0.2:
            break
    return round(time.monotonic() - started, 1)


async def _direct_get_p50(bench: Bench, ids: list[str]) -> float:
    data = [{"product_id": product_id} for product_id in ids]
    load = await loadgen.ghz(
        bench.cluster.addr("product_svc"), GET_PRODUCT, data, seconds=bench.budget.probe, concurrency=1,
        workdir=bench.work, tls=bench.cluster.tls_files("edge"),
    )  # fmt: skip
    return load.p50_ms


async def _direct_list_seconds(bench: Bench) -> float:
    """One first page of the newest products, with a deadline long enough to finish."""
    async with bench.cluster.channel("product_svc") as channel:
        stub = product_pb2_grpc.ProductServiceStub(channel)
        started = time.perf_counter()
        try:
            await stub.ListProducts(product_pb2.ListProductsRequest(), timeout=120)
        except grpc.aio.AioRpcError as exc:
            log.warning("direct listing failed: %s", exc.code().name)
            return float("nan")
        return round(time.perf_counter() - started, 3)
