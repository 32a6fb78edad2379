"""The load tools: ``wrk`` (HTTP, Lua scripts under bench/lua/) and ``ghz`` (gRPC).

Both run as child processes; each run answers a :class:`Load` with the same
fields, so HTTP and gRPC figures compare directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.tls import TlsFiles
from devstack.paths import BIN

LUA = Path(__file__).resolve().parent / "lua"
ECHO_PROTO = Path(__file__).resolve().parent / "echo.proto"


@dataclass
class Load:
    """One load run: what was asked and what came back."""

    tool: str
    target: str
    concurrency: int
    seconds: float
    requests: int
    ok: int  # 2xx (HTTP) / OK (gRPC)
    rps: float  # all completed requests per second
    ok_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    paced: str = ""  # how the rate was limited, if it was

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed: run `bash devstack/provision.sh bench`")
    return found


async def _run(argv: list[str], env: dict[str, str], timeout: float) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{argv[0]} did not finish within {timeout:.0f}s") from None
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}):\n{err.decode()[-2000:]}")
    return out.decode()


async def wrk(
    url: str,
    script: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 2,
    env: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    delay_ms: float = 0.0,
) -> Load:
    """``wrk`` with one of bench/lua/*.lua; ``delay_ms`` paces each connection."""
    script_env = {"BENCH_LUA_DIR": str(LUA), **(env or {})}
    if delay_ms > 0:
        script_env["BENCH_DELAY_MS"] = f"{delay_ms:.3f}"
    argv = [
        tool("wrk"),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(LUA / script),
        url,
    ]
    out = await _run(argv, script_env, seconds + timeout_s + 30)
    line = next((line for line in out.splitlines() if line.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{out[-2000:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    took = data["duration_us"] / 1e6
    latency = data["latency_us"]
    statuses = {str(k): int(v) for k, v in data["statuses"].items()}
    ok = sum(count for code, count in statuses.items() if code.startswith("2"))
    errors = {kind: count for kind, count in data["errors"].items() if count}
    return Load(
        tool="wrk",
        target=url,
        concurrency=connections,
        seconds=round(took, 2),
        requests=data["requests"],
        ok=ok,
        rps=round(data["requests"] / took, 1),
        ok_rps=round(ok / took, 1),
        p50_ms=_ms(latency["p50"], 1e3),
        p90_ms=_ms(latency["p90"], 1e3),
        p99_ms=_ms(latency["p99"], 1e3),
        max_ms=_ms(latency["max"], 1e3),
        statuses=statuses,
        errors=errors,
        paced=f"{delay_ms:.1f} ms pause per connection" if delay_ms > 0 else "",
    )


@dataclass(frozen=True)
class GrpcMethod:
    """A gRPC method for ``ghz``: its full name and the ``.proto`` that declares it
    (its imports under ``import_path``, by default the ``.proto``'s folder)."""

    call: str
    proto: Path
    import_path: Path | None = None


async def ghz(
    address: str,
    method: GrpcMethod,
    data: list[dict[str, Any]],
    *,
    seconds: float,
    concurrency: int,
    rps: float = 0.0,
    workdir: Path,
    tls: TlsFiles | None = None,
) -> Load:
    """``ghz`` calling ``method`` over ``data`` (one message per request, round robin).
    ``rps`` > 0 paces the calls.  ``tls``: mutual TLS with that process's certificate
    (the shop's services); None: plaintext (the reference servers)."""
    call = method.call
    data_file = workdir / f"ghz-{call.rsplit('/', 1)[-1]}-{address.rsplit(':', 1)[-1]}.json"
    data_file.write_text(json.dumps(data))
    argv = [
        tool("ghz"),
        *(["--cacert", tls.ca, "--cert", tls.cert, "--key", tls.key] if tls else ["--insecure"]),
        f"--call={call}",
        f"--data-file={data_file}",
        f"--concurrency={concurrency}",
        "--connections=1",  # like the edge: one HTTP/2 connection per upstream
        f"--duration={seconds:g}s",
        "--timeout=10s",
        "--format=json",
    ]
    if rps > 0:
        argv.append(f"--rps={round(rps)}")
    argv += [f"--proto={method.proto}", f"--import-paths={method.import_path or method.proto.parent}"]
    argv.append(address)
    out = await _run(argv, {}, seconds + 60)
    report = json.loads(out)
    distribution = {int(item["percentage"]): item["latency"] for item in report.get("latencyDistribution") or []}
    statuses = {str(k): int(v) for k, v in (report.get("statusCodeDistribution") or {}).items()}
    ok = statuses.get("OK", 0)
    took = report["total"] / 1e9
    requests = int(report["count"])
    return Load(
        tool="ghz",
        target=f"{address} {call}",
        concurrency=concurrency,
        seconds=round(took, 2),
        requests=requests,
        ok=ok,
        rps=round(requests / took, 1),
        ok_rps=round(ok / took, 1),
        p50_ms=_ms(distribution.get(50), 1e6),
        p90_ms=_ms(distribution.get(90), 1e6),
        p99_ms=_ms(distribution.get(99), 1e6),
        max_ms=_ms(report.get("slowest"), 1e6),
        statuses=statuses,
        errors={k: int(v) for k, v in (report.get("errorDistribution") or {}).items()},
        paced=f"{round(rps)} requests/s (ghz --rps)" if rps > 0 else "",
    )


def _ms(value: float | int | None, per_ms: float) -> float:
    if value is None:
        return float("nan")
    return round(float(value) / per_ms, 3)
