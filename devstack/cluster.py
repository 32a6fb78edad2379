"""The whole local cluster: real servers first, then the shop processes.

Used by ``python -m devstack`` (fixed, well-known ports; data kept under
``.devstack/``) and by the test suite (free ports, throwaway directories).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common import tls
from common.auth import generate_key_pair
from common.settings import SERVICE_PORTS
from devstack.docstore import DocumentPostgres, FerretDB
from devstack.paths import REPO
from devstack.process import Process, free_port, port_open
from devstack.servers import S3, Jaeger, Kafka, Postgres, Redis, Server
from devstack.servers.base import binary
from devstack.stripe_mock import StripeMock
from devstack.zipkin import Zipkin

if TYPE_CHECKING:
    import grpc

SERVERS: dict[str, type[Server]] = {
    cls.name: cls for cls in (Postgres, Redis, Kafka, DocumentPostgres, FerretDB, S3, Jaeger, Zipkin, StripeMock)
}

# The well-known ports `python -m devstack up` uses.
DEFAULT_PORTS: dict[str, dict[str, int]] = {
    "postgres": {"port": 5432},
    "redis": {"port": 6379},
    "kafka": {"port": 9092, "controller": 9093},
    "docstore_pg": {"port": 5433},
    "mongo": {"port": 27017},
    "s3": {"port": 9000},
    "jaeger": {"otlp_grpc": 4317, "otlp_http": 4318, "query_http": 16686, "query_grpc": 16685, "health": 13133},
    "stripe_mock": {"port": 12111, "https": 12112},
    "zipkin": {"port": 9411},
}


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    servers: tuple[str, ...]
    database: str | None = None  # its own PostgreSQL database, migrated with Alembic

    @property
    def exists(self) -> bool:
        return (REPO / self.name / "__main__.py").exists()

    @property
    def migrations(self) -> Path | None:
        if self.database is None:
            return None
        ini = REPO / "migrations" / self.name.removesuffix("_svc") / "alembic.ini"
        return ini if ini.exists() else None


# Start order: a service comes after the services it calls.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("user_svc", ("postgres", "redis"), "shop_user"),
    ServiceSpec("product_svc", ("mongo", "s3")),
    # stripe-mock: where SHOP_PAYMENT_PROCESSOR=stripe sends its Stripe API calls.
    ServiceSpec("order_svc", ("postgres", "kafka", "redis", "stripe_mock"), "shop_order"),
    ServiceSpec("comment_svc", ("postgres", "kafka", "redis"), "shop_comment"),
    ServiceSpec("notify_svc", ("redis", "kafka")),
    ServiceSpec("edge", ()),
    # The storefront (web/): a browser client of the edge's REST API only.
    ServiceSpec("web", ()),
)
SERVICE_BY_NAME = {spec.name: spec for spec in SERVICES}


def grpcurl_argv(files: tls.TlsFiles, args: list[str] | tuple[str, ...]) -> list[str]:
    """grpcurl with a process's certificate filled in (every service wants mutual TLS)."""
    return [binary("grpcurl"), "-cacert", files.ca, "-cert", files.cert, "-key", files.key, *args]


def addr_env(name: str) -> str:
    """The variable that tells a process where ``name`` listens: SHOP_PRODUCT_SVC_ADDR."""
    return f"SHOP_{name.upper()}_ADDR"


class Cluster:
    def __init__(self, root: Path, *, fixed_ports: bool = False, unsafe_fast_storage: bool = False) -> None:
        """``unsafe_fast_storage``: PostgreSQL without fsync or synchronous commits, Redis
        without its append-only file.  Faster, and a crash of a store loses what it
        acknowledged: for the test suite's throwaway data only (``make up`` and
        ``make bench`` never set it)."""
        self.root = root
        self.fixed_ports = fixed_ports
        self.unsafe_fast_storage = unsafe_fast_storage
        self.servers: dict[str, Server] = {}
        self.services: dict[str, Process] = {}
        self.service_ports: dict[str, int] = {}
        self.metrics_ports: dict[str, int] = {}
        # Extra environment per service (tests use it for short windows and limits).
        self.overrides: dict[str, dict[str, str]] = {}
        # Told (name, seconds it took) as each server and service becomes ready (`up` prints it).
        self.on_ready: Callable[[str, float], None] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.keys = root / "keys"
        if not (self.keys / "jwt_private.pem").exists():
            self.keys.mkdir(parents=True, exist_ok=True)
            private, public = generate_key_pair()
            (self.keys / "jwt_private.pem").write_bytes(private)
            os.chmod(self.keys / "jwt_private.pem", 0o600)
            (self.keys / "jwt_public.pem").write_bytes(public)
        # Service identity: a CA of this cluster's own and a certificate per calling process
        # (common/tls.py); devstack's own identity runs the readiness checks and grpcurl.
        self.tls_dir = root / "tls"
        tls.ensure_identities(self.tls_dir, tls.CALLERS)

    # -- servers
    def start_servers(self, names: list[str]) -> None:
        """Start several servers at once, then wait for all of them; a server that runs
        on top of others (``Server.needs``) starts once they are ready."""
        wanted = list(dict.fromkeys(need for name in names for need in (*SERVERS[name].needs, name)))
        first = [name for name in wanted if not SERVERS[name].needs]
        for wave in (first, [name for name in wanted if name not in first]):
            new = [name for name in wave if name not in self.servers]
            started: list[Server] = []
            t0 = time.monotonic()
            try:
                for name in new:
                    ports = DEFAULT_PORTS[name] if self.fixed_ports else None
                    server = SERVERS[name](self.root / name, ports)
                    server.unsafe_fast_storage = self.unsafe_fast_storage
                    server.use(self.servers)
                    self.servers[name] = server
                    started.append(server.start())
                with ThreadPoolExecutor(max_workers=len(started) or 1) as pool:
                    waits = {pool.submit(server.wait): server.name for server in started}
                    for future in as_completed(waits):
                        future.result()
                        if self.on_ready:
                            self.on_ready(waits[future], time.monotonic() - t0)
            finally:
                self.write_state()

    def server(self, name: str) -> Server:
        self.start_servers([name])
        return self.servers[name]

    @property
    def postgres(self) -> Postgres:
        server = self.server("postgres")
        assert isinstance(server, Postgres)
        return server

    # -- shop processes
    def env(self) -> dict[str, str]:
        env = {
            "SHOP_ENV": "development",
            "SHOP_JWT_PUBLIC_KEY_FILE": str(self.keys / "jwt_public.pem"),
            "SHOP_JWT_PRIVATE_KEY_FILE": str(self.keys / "jwt_private.pem"),
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "gen")]),
        }
        for server in self.servers.values():
            env.update(server.env())
        for name, port in self.service_ports.items():
            env[addr_env(name)] = f"127.0.0.1:{port}"
        return env

    def service_env_for(self, name: str) -> dict[str, str]:
        """The environment a service process runs with (for its commands, e.g. create-admin)."""
        return self.service_env(SERVICE_BY_NAME[name])

    def service_env(self, spec: ServiceSpec) -> dict[str, str]:
        env = self.env()
        env["SHOP_PORT"] = str(self.service_ports[spec.name])
        if spec.name in tls.CALLERS:  # web calls no gRPC service
            env.update(self.tls_env(spec.name))
        env["SHOP_METRICS_PORT"] = str(self.metrics_ports[spec.name])
        # Each store as the service's own user: its PostgreSQL role, Redis user, keys.
        for server in spec.servers:
            if server in self.servers:
                env.update(self.servers[server].service_env(spec.name))
        if spec.database:
            env["SHOP_DATABASE_URL"] = self.postgres.service_url(spec.database)
        kafka = self.servers.get("kafka")
        if "kafka" in spec.servers and isinstance(kafka, Kafka):
            env.update(kafka.user_env(spec.name))  # each process logs in to Kafka as itself
        env.update(self.overrides.get(spec.name, {}))
        return env

    def start_services(self, names: list[str] | None = None) -> list[str]:
        """Start the services that exist (in dependency order); return their names."""
        wanted = [spec for spec in SERVICES if (names is None or spec.name in names) and spec.exists]
        self.start_servers([server for spec in wanted for server in spec.servers])
        # Every built service gets its port now, so each process knows where all the others are.
        for spec in SERVICES:
            if spec.exists and spec.name not in self.service_ports:
                fixed = SERVICE_PORTS[spec.name]
                self.service_ports[spec.name] = fixed if self.fixed_ports else free_port()
                # Prometheus metrics: 9180 + the service's offset from 8080 locally.
                self.metrics_ports[spec.name] = fixed + 1100 if self.fixed_ports else free_port()
        for spec in wanted:
            if spec.name in self.services:
                continue
            self.migrate(spec)
            self.start_service(spec.name)
        return [spec.name for spec in wanted]

    def migrate(self, spec: ServiceSpec) -> None:
        if spec.migrations is None:
            return
        import subprocess

        result = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(spec.migrations), "upgrade", "head"],
            env={**os.environ, **self.service_env(spec)},
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"migrating {spec.name} failed:\n{result.stdout}{result.stderr}")

    def start_service(self, name: str) -> Process:
        spec = SERVICE_BY_NAME[name]
        port = self.service_ports[name]
        t0 = time.monotonic()
        if port_open(port):
            raise RuntimeError(f"{name}: port {port} already in use; is another cluster running?")
        env = self.service_env(spec)
        self.write_service_env(name, env)
        process = Process(name, [sys.executable, "-m", name], self.root / "logs" / f"{name}.log", env=env, cwd=REPO)
        process.start()
        self.services[name] = process
        self.write_state()
        process.wait_ready(lambda: self.service_ready(name, port), 30)
        if self.on_ready:
            self.on_ready(name, time.monotonic() - t0)
        return process

    def write_service_env(self, name: str, env: dict[str, str]) -> None:
        """The service's environment (its store passwords inside: owner-only), for
        ``python -m devstack run NAME ...`` to run the service's commands with."""
        path = self.root / "env" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(env, out, indent=2)

    def addr(self, name: str) -> str:
        """Where a started service listens (host:port)."""
        return f"127.0.0.1:{self.service_ports[name]}"

    # -- service identity
    def tls_files(self, identity: str) -> tls.TlsFiles:
        """The CA, certificate and key of process ``identity`` in this cluster."""
        return tls.files_in(self.tls_dir, identity)

    def tls_env(self, identity: str) -> dict[str, str]:
        files = self.tls_files(identity)
        return {"SHOP_TLS_CA_FILE": files.ca, "SHOP_TLS_CERT_FILE": files.cert, "SHOP_TLS_KEY_FILE": files.key}

    def grpcurl(self, *args: str, identity: str = "edge") -> list[str]:
        """The argv of grpcurl calling this cluster's services as process ``identity``."""
        return grpcurl_argv(self.tls_files(identity), args)

    def _target(self, service: str) -> str:
        return self.addr(service) if service in self.service_ports else service

    def channel(self, service: str, *, identity: str = "edge") -> grpc.aio.Channel:
        """An async channel to a service (its name, or host:port) that presents the
        certificate of process ``identity``: ``cluster.channel("product_svc", identity="order_svc")``.
        gRPC's default channel options (a test's call after a restart reconnects at once)."""
        import grpc

        credentials = tls.channel_credentials(self.tls_files(identity))
        return grpc.aio.secure_channel(self._target(service), credentials)

    def sync_channel(self, service: str, *, identity: str = "devstack") -> grpc.Channel:
        """A blocking channel, like :meth:`channel` (readiness checks)."""
        import grpc

        return grpc.secure_channel(self._target(service), tls.channel_credentials(self.tls_files(identity)))

    def grpc_serving(self, service: str) -> bool:
        """Whether a gRPC service (name or host:port) answers its health check SERVING."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with self.sync_channel(service) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def service_ready(self, name: str, port: int) -> bool:
        if name in ("edge", "web"):  # HTTP processes: /healthz
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        return self.grpc_serving(f"127.0.0.1:{port}")

    def stop_service(self, name: str) -> None:
        process = self.services.pop(name, None)
        if process:
            process.stop()
        self.write_state()

    # -- all of it
    def stop(self) -> None:
        for name in reversed(list(self.services)):
            self.services[name].stop()
        self.services.clear()
        for server in reversed(list(self.servers.values())):
            server.stop()
        self.write_state()

    def logs(self) -> dict[str, Path]:
        """The log file of every shop process started."""
        return {name: process.log for name, process in self.services.items()}

    def table(self) -> list[tuple[str, str, str]]:
        rows = []
        for name, server in self.servers.items():
            ports = ", ".join(f"{key} {port}" for key, port in server.ports.items())
            rows.append((name, ports, str(server.log)))
        for name, process in self.services.items():
            where = f"port {self.service_ports[name]}"
            if name in self.metrics_ports:
                where += f", metrics {self.metrics_ports[name]}"
            rows.append((name, where, str(process.log)))
        return rows

    def write_state(self) -> None:
        state = {
            "written": time.time(),
            "processes": [
                {"name": name, "pid": server.process.pid, "ports": server.ports, "log": str(server.log)}
                for name, server in self.servers.items()
                if server.process
            ]
            + [
                {"name": name, "pid": process.pid, "ports": {"port": self.service_ports[name]}, "log": str(process.log)}
                for name, process in self.services.items()
            ],
        }
        (self.root / "state.json").write_text(json.dumps(state, indent=2))
