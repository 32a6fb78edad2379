"""The table, the JSON file under bench/results/, and bench/BASELINE.md.

BASELINE.md has a generated part between two markers (rewritten on every
full run) and hand-written parts around it (kept as they are).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
BASELINE = BENCH / "BASELINE.md"
BEGIN = "<!-- bench:figures:begin (written by `make bench`; edit outside the markers) -->"
END = "<!-- bench:figures:end -->"

SERVICES = ("edge", "user_svc", "product_svc", "order_svc", "comment_svc", "notify_svc")
# "mongo" is FerretDB; "docstore_pg" the PostgreSQL with DocumentDB under it.
SERVERS = ("mongo", "docstore_pg", "postgres", "kafka", "redis", "s3")
RSS_TARGET_MB = 120.0


@dataclass
class Row:
    scenario: str
    metric: str
    value: str
    reference: str = ""
    target: str = ""
    result: str = ""


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _check(value: Any, ok: Callable[[float], bool]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "pass" if ok(float(value)) else "MISS"


def _dig(results: dict[str, Any], *path: str) -> Any:
    current: Any = results
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return None
        current = current[key]
    return current


def rows(results: dict[str, Any]) -> list[Row]:
    table: list[Row] = []
    table += _edge_rows(results)
    table += _browse_rows(results)
    table += _checkout_rows(results)
    table += _latency_rows(results)
    table += _footprint_rows(results)
    return table


def _edge_rows(r: dict[str, Any]) -> list[Row]:
    e = r.get("edge_overhead") or {}
    if "edge" not in e:
        return [Row("1 edge overhead", "not measured", e.get("error", "skipped"))]
    s = "1 edge overhead"
    c = e["connections"]
    rounds = e.get("rounds") or [{"ratio": e["ratio_edge_direct"]}]
    direct_rps = e.get("direct_rps_median", e["direct"]["ok_rps"])
    return [
        Row(
            s,
            f"GET product via edge, req/s (wrk, c={c}; median of {len(rounds)} rounds)",
            _num(e.get("edge_rps_median", e["edge"]["ok_rps"])),
            f"Starlette ceiling {_num(e['starlette_ceiling']['ok_rps'])} (x{_num(e['ratio_edge_starlette'], 2)})",
        ),
        Row(
            s,
            f"GetProduct direct gRPC, req/s (ghz, c={c}; median of the rounds)",
            _num(direct_rps),
            f"grpc.aio echo ceiling {_num(e['grpc_echo_ceiling']['ok_rps'])} (x{_num(e['ratio_direct_echo'], 2)})",
            ">= 0.5 x echo",
            _check(e["ratio_direct_echo"], lambda v: v >= 0.5),
        ),
        Row(
            s,
            "edge / direct throughput (median of the rounds' ratios)",
            _num(e["ratio_edge_direct"], 2),
            "rounds: " + ", ".join(_num(r["ratio"], 2) for r in rounds),
            ">= 0.65",
            _check(e["ratio_edge_direct"], lambda v: v >= 0.65),
        ),
        Row(
            s,
            f"edge adds at p50, ms (at {_num(e['edge_half']['rps'], 0)} req/s)",
            _num(e["edge_adds_p50_ms"], 2),
            f"edge {_num(e['edge_half']['p50_ms'], 2)} vs direct {_num(e['direct_half']['p50_ms'], 2)}",
            "<= 1",
            _check(e["edge_adds_p50_ms"], lambda v: v <= 1),
        ),
        Row(
            s,
            "edge adds at p99, ms (same run)",
            _num(e["edge_adds_p99_ms"], 2),
            f"edge {_num(e['edge_half']['p99_ms'], 2)} vs direct {_num(e['direct_half']['p99_ms'], 2)}",
            "<= 5",
            _check(e["edge_adds_p99_ms"], lambda v: v <= 5),
        ),
    ]


def _browse_rows(r: dict[str, Any]) -> list[Row]:
    b = r.get("browse") or {}
    s = "2 browse mix"
    if not b.get("sizes"):
        return [Row(s, "not measured", b.get("error", "skipped"))]
    table = []
    for size, step in b["sizes"].items():
        load = step.get("load")
        table.append(
            Row(
                s,
                f"seed {int(size):,}: docs/s (insert_many)",
                _num(step["seed_docs_per_s"], 0),
                f"{_num(step['seed_s'], 1)} s for {step['seeded']:,}",
            )
        )
        table.append(
            Row(
                s,
                f"{int(size):,} products: one direct get / newest page",
                f"{_num(step['direct_get_p50_ms'], 1)} ms / {_num(step['direct_list_newest_s'], 2)} s",
                "GetProduct p50 (ghz c=1) / ListProducts, one call",
            )
        )
        if load is None:
            continue
        ok_share = load["ok"] / load["requests"] if load["requests"] else 0.0
        table.append(
            Row(
                s,
                f"{int(size):,} products: req/s (2xx), p50, p99 (wrk c={b['connections']})",
                f"{_num(load['ok_rps'])}, {_num(load['p50_ms'], 0)} ms, {_num(load['p99_ms'], 0)} ms",
                f"{load['requests']:,} requests, {ok_share:.0%} 2xx, statuses {load['statuses']}",
            )
        )
    ratio = b.get("p99_ratio_100k_10k")
    source = b.get("p99_ratio_from", "")
    table.append(
        Row(s, "p99 at 100,000 / p99 at 10,000", _num(ratio, 2), source, "<= 1.5", _check(ratio, lambda v: v <= 1.5))
    )
    biggest = (b["sizes"].get("100000") or {}) if b.get("sizes") else {}
    if "direct_list_newest_s" in biggest:
        newest_ms = biggest["direct_list_newest_s"] * 1000
        table.append(
            Row(
                s,
                "newest page straight from product_svc at 100,000, ms",
                _num(newest_ms, 0),
                "ListProducts, one call (above)",
                "<= 50",
                _check(newest_ms, lambda v: v <= 50),
            )
        )
    server_errors = sum(
        count
        for step in (b.get("sizes") or {}).values()
        for status, count in ((step.get("load") or {}).get("statuses") or {}).items()
        if status.startswith("5")
    )
    table.append(
        Row(s, "5xx answers in the mixes", str(server_errors), "", "0", "pass" if not server_errors else "MISS")
    )
    return table


def _checkout_rows(r: dict[str, Any]) -> list[Row]:
    c = r.get("checkout") or {}
    s = "3 checkout"
    if "load" not in c:
        return [Row(s, "not measured", c.get("error", "skipped"))]
    load = c["load"]
    rate = load["statuses"].get("201", 0) / load["seconds"] if load["seconds"] else 0.0
    quiet = c.get("one_at_a_time") or {}
    quiet_text = f"one buyer at a time: p50 {_num(quiet.get('p50_ms'), 0)} ms, p99 {_num(quiet.get('p99_ms'), 0)} ms"
    k = c.get("consistency") or {}
    problems = [
        key
        for key in (
            "stock_plus_sold_not_initial",
            "holds_not_open_order_units",
            "orders_without_event",
            "orders_with_duplicate_events",
        )
        if k.get(key)
    ]
    if k.get("unpublished_outbox_rows"):
        problems.append(f"{k['unpublished_outbox_rows']} unpublished")
    cpu = load.get("cpu_s_per_1k_requests") or {}  # seconds per 1,000 orders = ms per order
    per_order = sum(cpu.values()) if cpu else float("nan")
    return [
        Row(
            s,
            f"orders/s (201, wrk c={c['connections']})",
            _num(rate),
            f"{load['requests']:,} requests, statuses {load['statuses']}",
            ">= 150",
            _check(rate, lambda v: v >= 150),
        ),
        Row(
            s,
            "p50 / p99, ms",
            f"{_num(load['p50_ms'], 0)} / {_num(load['p99_ms'], 0)}",
            quiet_text,
            "p99 <= 150",
            _check(load["p99_ms"], lambda v: v <= 150),
        ),
        Row(
            s,
            "CPU per order, every process summed, ms",
            _num(per_order, 1),
            ", ".join(f"{name} {_num(ms, 1)}" for name, ms in sorted(cpu.items(), key=lambda kv: -kv[1]) if ms >= 0.05),
            "<= 13",
            _check(per_order, lambda v: v <= 13),
        ),
        Row(
            s,
            "consistency (stock+sold=initial, 1 event/order, all published)",
            "clean" if k.get("clean") else ("; ".join(problems) or "not checked"),
            f"{k.get('orders', 0):,} orders, {k.get('units_sold', 0):,} units, {k.get('products_checked', 0)} products",
            "clean",
            "pass" if k.get("clean") else "MISS",
        ),
    ]


def _latency_rows(r: dict[str, Any]) -> list[Row]:
    e = r.get("event_latency") or {}
    s = "4 event latency"
    load, quiet = e.get("under_load") or {}, e.get("one_at_a_time") or {}
    if "p50_ms" not in load:
        return [Row(s, "not measured", str(e.get("error") or e.get("via") or "skipped"))]
    via = f"{load['notifications_read']:,} of {load['orders']:,} orders read via {e['via']}"
    reference = f"one order at a time: {_num(quiet.get('p50_ms'), 1)} / {_num(quiet.get('p99_ms'), 1)}" if quiet else ""
    rows = [
        Row(s, "commit -> notification read under checkout load, p50 / p99 ms",
            f"{_num(load['p50_ms'], 1)} / {_num(load['p99_ms'], 1)}", reference, "p50 <= 10",
            _check(load["p50_ms"], lambda v: v <= 10)),
        Row(s, "(same) p99", _num(load["p99_ms"], 1), via, "p99 <= 50", _check(load["p99_ms"], lambda v: v <= 50)),
    ]  # fmt: skip
    for hop in sorted({*(load.get("hops") or {}), *(quiet.get("hops") or {})}):
        under, alone = (load.get("hops") or {}).get(hop) or {}, (quiet.get("hops") or {}).get(hop) or {}
        rows.append(
            Row(s, f"of which {hop} under load, p50 / p99 at most, ms (bench/metrics.py)",
                f"{_num(under.get('p50_at_most_ms'), 1)} / {_num(under.get('p99_at_most_ms'), 1)}",
                f"one order at a time: {_num(alone.get('p50_at_most_ms'), 1)} / {_num(alone.get('p99_at_most_ms'), 1)}")
        )  # fmt: skip
    return rows


def _footprint_rows(r: dict[str, Any]) -> list[Row]:
    idle = r.get("footprint_idle") or {}
    peak = r.get("footprint_peak") or {}
    cpu = {
        "edge GET": _dig(r, "edge_overhead", "edge", "cpu_s_per_1k_requests"),
        "direct GET": _dig(r, "edge_overhead", "direct", "cpu_s_per_1k_requests"),
        "checkout": _dig(r, "checkout", "load", "cpu_s_per_1k_requests"),
        "browse 10k": _dig(r, "browse", "sizes", "10000", "load", "cpu_s_per_1k_requests"),
    }
    s = "5 footprint"
    table = []
    for name in (*SERVICES, *SERVERS):
        if name not in idle:
            continue
        rss_idle = idle[name]["rss_mb"]
        rss_peak = (peak.get(name) or {}).get("rss_mb", float("nan"))
        per_1k = ", ".join(
            f"{label} {_num(values.get(name), 2)}" for label, values in cpu.items() if values and name in values
        )
        is_service = name in SERVICES
        burn = _num(idle[name].get("idle_cores", 0.0) * 100, 1)
        memory = f"{_num(rss_idle, 0)} -> {_num(rss_peak, 0)} MB"
        if is_service:  # the part that does not depend on the page cache (bench/procs.py)
            memory += f" (anon peak {_num((peak.get(name) or {}).get('anon_mb'), 0)})"
        else:
            memory += f" (PSS peak {_num((peak.get(name) or {}).get('pss_mb'), 0)})"
        table.append(
            Row(
                s,
                f"{name}: RSS idle->peak; CPU s/1k req (idle {burn}% core)",
                memory,
                per_1k,
                "<= 120 MB" if is_service else "",
                _check(rss_peak, lambda v: v <= RSS_TARGET_MB) if is_service else "",
            )
        )
    return table


def table_text(table: list[Row]) -> str:
    header = ("scenario", "metric", "value", "reference / detail", "target", "result")
    cells = [header] + [(r.scenario, r.metric, r.value, r.reference, r.target, r.result) for r in table]
    widths = [min(max(len(row[i]) for row in cells), 70) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(cell[: widths[i]].ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table_markdown(table: list[Row]) -> str:
    lines = ["| scenario | metric | value | reference / detail | target | result |", "|---|---|---|---|---|---|"]
    for r in table:
        result = f"**{r.result}**" if r.result == "MISS" else r.result
        cells = [r.scenario, r.metric, r.value, r.reference, r.target, result]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def write_json(results: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"bench-{stamp}.json"
    text = json.dumps(_clean(results), indent=2, sort_keys=True, default=str)
    path.write_text(text + "\n")
    (RESULTS / "latest.json").write_text(text + "\n")
    return path


def machine_line(results: dict[str, Any]) -> str:
    m = results["machine"]
    return (
        f"{m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB memory, Linux {m['kernel']}; "
        f"run of {results['started_at']} at commit {results['commit']}, {results['total_s']} s in all "
        f"(cluster start {results.get('cluster_start_s', 'n/a')} s); load average "
        f"{results['load_average_before'][0]} before, {results['load_average_after'][0]} after; "
        f"CPU over the run: {_pct(results, 'busy')} busy, {_pct(results, 'steal')} stolen by the hypervisor"
        + ("; STORES WITHOUT FLUSHES (--unsafe-fast-storage)" if results.get("unsafe_fast_storage") else "")
    )


def _pct(results: dict[str, Any], kind: str) -> str:
    share = (results.get("cpu_share") or {}).get(kind)
    return "n/a" if share is None else f"{share:.0%}"


def write_baseline(results: dict[str, Any], table: list[Row]) -> None:
    services_missing = results.get("services_not_running") or []
    generated = [
        BEGIN,
        "",
        f"**Machine:** {machine_line(results)}.",
        "",
        f"Not running: {', '.join(services_missing)}." if services_missing else "Every shop process ran.",
        "",
        table_markdown(table),
        "",
        END,
    ]
    block = "\n".join(generated)
    if BASELINE.exists():
        text = BASELINE.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            BASELINE.write_text(head + block + tail)
            return
    BASELINE.write_text("# Benchmark baseline\n\n" + block + "\n")
