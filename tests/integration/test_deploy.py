"""The deployable stack, checked offline against the code (no Docker engine, no cluster).

* compose/docker-compose.yml passes a Compose implementation's ``config``; every process's
  environment is exactly made of the ``SHOP_*`` variables its settings class reads, with
  everything that defaults to loopback set; ports are the seed's; start order follows what
  each process needs.
* The image's command lines work: each process is started outside Docker with the command
  the compose file gives it, the image's PYTHONPATH and working directory, against the test
  cluster, and answers the compose healthcheck; the one-shot jobs (JWT keys, bucket, the
  PostgreSQL init script and the migrations as the service's own role) run against real servers.
* deploy/k8s renders with kustomize (base and every overlay), every object passes the
  Kubernetes schemas bundled with kubernetes-validate, and every workload matches the code.

Services that are not built yet (no ``<package>/__main__.py``) are skipped, and checked as soon
as they exist.  Tools: `make deploy-check` installs them (devstack/provision/deploy_tools.sh).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import kubernetes_validate  # type: ignore[import-untyped]
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.engine import make_url

from common.clients import KafkaProducer
from common.kafka_acl import SHOP_ACCESS, KafkaSetupSettings
from common.redis_acl import REDIS_ACCESS
from common.settings import SERVICE_PORTS, CommonSettings, KafkaSettings, PostgresSettings, S3Settings
from devstack.cluster import Cluster
from devstack.paths import REPO
from devstack.process import Process, free_port, tail
from devstack.servers import S3, Kafka, Postgres
from devstack.servers.base import binary
from devstack.servers.postgres import pg_bindir
from tests import deploy_helpers as d
from tests.kafka_helpers import kafka_settings

PROVISION = "run `bash devstack/provision/deploy_tools.sh` (`make deploy-check` does)"


def _built_settings(package: str) -> type[CommonSettings]:
    """The settings class of a built process; skips while the process does not exist yet."""
    cls = d.settings_class(package)
    if cls is None:
        if d.service_built(package):
            pytest.fail(f"{package} has a __main__.py but no settings class in settings.py or __main__.py")
        pytest.skip(f"{package} is not built yet: checked once {package}/__main__.py exists")
    return cls


def _check_env(where: str, package: str, env: dict[str, str | None]) -> None:
    """The variables given to a process are the ones its settings read; the ones that default to
    loopback (data stores, other processes, the bind address) are set, and not to loopback.
    (Browser-facing URLs such as SHOP_IMAGE_URL_ENDPOINT may well be localhost.)"""
    cls = _built_settings(package)
    known = d.env_names(cls)
    unknown = sorted(name for name in env if name.startswith("SHOP_") and name not in known)
    assert not unknown, f"{where}: {package} does not read {unknown} ({cls.__module__}.{cls.__name__})"
    required = d.required_env(cls)
    missing = sorted(required - set(env))
    assert not missing, f"{where}: {package} needs {missing} (their defaults are for the local cluster)"
    for name in required:
        value = env[name]
        if value is not None:  # None: from a Secret
            assert not any(host in value for host in d.LOOPBACK), f"{where}: {package} {name}={value} is loopback"
    port = env.get("SHOP_PORT")
    assert port == str(SERVICE_PORTS[package]) == str(cls.model_fields["port"].default), (
        f"{where}: {package} SHOP_PORT={port}, seed port {SERVICE_PORTS[package]}"
    )


# --- Compose ----------------------------------------------------------------------------------


def test_compose_config_is_valid(tmp_path: Path) -> None:
    tool = d.compose_tool()
    if tool is None:
        pytest.skip(f"no Compose implementation (docker compose / docker-compose): {PROVISION}")
    # The committed defaults: no environment file (whatever compose/.env a developer has) and none
    # of the variables the file reads from this environment.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    argv = [*tool, "--project-directory", str(d.COMPOSE_DIR), "--env-file", str(empty), "-f", str(d.COMPOSE_FILE)]
    argv.append("config")
    result = subprocess.run([*argv, "-q"], capture_output=True, text=True, check=False, env=_no_compose_env())
    assert result.returncode == 0, f"{' '.join(tool)} config: {result.stderr}"
    rendered = subprocess.run([*argv, "--services"], capture_output=True, text=True, check=True, env=_no_compose_env())
    assert set(rendered.stdout.split()) == set(d.compose()["services"])


def _no_compose_env() -> dict[str, str]:
    """This process's environment without the variables the compose file interpolates."""
    return {key: value for key, value in os.environ.items() if key not in d.compose_variables()}


def test_compose_has_every_process_store_and_job() -> None:
    services = set(d.compose()["services"])
    wanted = {
        *SERVICE_PORTS,
        *("postgres", "mongo", "kafka", "redis", "minio", "jaeger", "otel-collector"),
        *("jwt_keys", "tls_certs", "create_bucket", "kafka_setup", "migrate_user", "migrate_order", "migrate_comment"),
    }
    assert wanted <= services, f"missing: {sorted(wanted - services)}"


def test_compose_variables_are_in_env_example() -> None:
    example = {
        line.split("=", 1)[0]
        for line in d.ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    example.discard("COMPOSE_PROJECT_NAME")  # read by Compose itself
    assert d.compose_variables() == example


@pytest.mark.parametrize("package", d.PACKAGES)
def test_compose_service_matches_code(package: str) -> None:
    cls = _built_settings(package)
    service = d.compose_service(package)
    env = d.compose_env(package)
    image_env = {k: v for k, v in d.runtime_env().items() if k.startswith("SHOP_")}
    _check_env("compose", package, {**image_env, **env})

    port = SERVICE_PORTS[package]
    assert (port, port) in d.published_ports(package), f"{package} must publish {port}:{port}"
    assert service["command"] == ["python", "-m", package]
    # Other processes call it by its Kubernetes name: the compose name, or a hyphenated alias.
    assert (k8s_alias(service) or package) == d.k8s_name(package)
    assert "healthcheck" in service

    depends = {name: spec["condition"] for name, spec in (service.get("depends_on") or {}).items()}
    wanted = d.store_dependencies(cls)
    if d.uses_postgres(cls):
        wanted[f"migrate_{package.removesuffix('_svc')}"] = "service_completed_successfully"
    if issubclass(cls, KafkaSettings):  # its Kafka user and ACLs exist first
        wanted["kafka_setup"] = "service_completed_successfully"
    if "SHOP_JWT_PUBLIC_KEY_FILE" in d.env_names(cls):
        wanted["jwt_keys"] = "service_completed_successfully"
        mounts = [str(v) for v in service.get("volumes") or []]
        assert any(m.startswith("jwt-keys:/keys") for m in mounts), f"{package} must mount the jwt-keys volume"
        assert env["SHOP_JWT_PUBLIC_KEY_FILE"].startswith("/keys/")
    if "SHOP_TLS_CERT_FILE" in d.env_names(cls):
        # Its own certificate from the tls_certs job's volume; the job makes one for it.
        wanted["tls_certs"] = "service_completed_successfully"
        assert "tls:/tls:ro" in [str(v) for v in service.get("volumes") or []], f"{package} must mount tls"
        tls_env = {key: env.get(key) for key in ("SHOP_TLS_CA_FILE", "SHOP_TLS_CERT_FILE", "SHOP_TLS_KEY_FILE")}
        assert tls_env == {
            "SHOP_TLS_CA_FILE": "/tls/ca.pem",
            "SHOP_TLS_CERT_FILE": f"/tls/{package}.pem",
            "SHOP_TLS_KEY_FILE": f"/tls/{package}.key",
        }
        assert package in d.compose_service("tls_certs")["command"]
    else:
        assert not any(str(v).startswith("tls:") for v in service.get("volumes") or []), f"{package} needs no keys"
    for name, condition in wanted.items():
        assert depends.get(name) == condition, f"{package} must wait for {name} ({condition}), has {depends}"
    # Calls to other processes go to their aliases, which must be compose services it waits for
    # (except the edge's optional upstreams, which it reaches lazily) — at least exist.
    for key, value in env.items():
        if key.endswith("_SVC_ADDR"):
            target = key.removeprefix("SHOP_").removesuffix("_ADDR").lower()
            assert value == f"{d.k8s_name(target)}:{SERVICE_PORTS[target]}", f"{key}={value}"


def k8s_alias(service: dict[str, Any]) -> str | None:
    aliases = ((service.get("networks") or {}).get("default") or {}).get("aliases") or []
    return str(aliases[0]) if aliases else None


def test_compose_jobs_match_code() -> None:
    postgres_env = d.env_names(PostgresSettings)
    for area in ("user", "order", "comment"):
        job = d.compose_service(f"migrate_{area}")
        assert job["command"] == ["python", "-m", "alembic", "-c", f"migrations/{area}/alembic.ini", "upgrade", "head"]
        env = d.compose_env(f"migrate_{area}")
        assert set(env) == {"SHOP_DATABASE_URL"} <= set(postgres_env)
        assert env["SHOP_DATABASE_URL"].endswith(f"@postgres:5432/shop_{area}")
        assert job["depends_on"]["postgres"]["condition"] == "service_healthy"
        # The service's own database URL is the job's.
        if f"{area}_svc" in d.compose()["services"]:
            assert d.compose_env(f"{area}_svc")["SHOP_DATABASE_URL"] == env["SHOP_DATABASE_URL"]
    bucket_env = d.compose_env("create_bucket")
    assert set(bucket_env) <= set(d.env_names(S3Settings))
    product = d.compose_env("product_svc")
    for key, value in bucket_env.items():
        assert product.get(key) == value, f"create_bucket and product_svc disagree on {key}"


def test_compose_services_reach_stores_as_their_own_users() -> None:
    """No service is handed a superuser, a root key or a store URL without a password."""
    for package in d.PACKAGES:
        env = d.compose_env(package)
        if "SHOP_DATABASE_URL" in env:
            url = make_url(env["SHOP_DATABASE_URL"])
            assert url.username == url.database == f"shop_{package.removesuffix('_svc')}" and url.password, package
        for name in ("SHOP_REDIS_URL", "SHOP_MONGO_URL"):
            if name in env:
                parts = urlsplit(env[name])
                assert parts.username == package and parts.password, f"{package} {name}"
        if "SHOP_S3_ACCESS_KEY" in env:
            assert env["SHOP_S3_ACCESS_KEY"] == package != d.compose_env("minio")["MINIO_ROOT_USER"]
            assert env["SHOP_S3_SECRET_KEY"] != d.compose_env("minio")["MINIO_ROOT_PASSWORD"]
    redis_users = {
        urlsplit(d.compose_env(p)["SHOP_REDIS_URL"]).username
        for p in d.PACKAGES
        if "SHOP_REDIS_URL" in d.compose_env(p)
    }
    assert redis_users == set(REDIS_ACCESS), "every Redis user of common/redis_acl.py, and no other"


def test_compose_secrets_are_local_defaults_only() -> None:
    """Every password-like value is a named local default; the JWT key pair is generated."""
    text = d.COMPOSE_FILE.read_text()
    assert "x-local-dev-only" in text
    assert "PRIVATE KEY" not in text
    for line in text.splitlines():
        if not line.strip().startswith("#") and any(word in line for word in ("PASSWORD", "SECRET")):
            assert "x-local-dev-only" in line, f"a secret without its local-dev-only mark: {line.strip()}"


# --- the image ------------------------------------------------------------------------------


def test_dockerfile_is_one_slim_multi_stage_image() -> None:
    stages = d.dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: a builder, then the runtime image"
    args = d.dockerfile_args()
    final_from = stages[-1][0][1]
    base = args.get(final_from.strip("${}"), final_from)
    assert base == "python:3.11-slim", f"runtime stage is {base}"
    runtime = " ".join(rest for _, rest in stages[-1])
    for tool in ("build-essential", "gcc", "apt-get install"):
        assert tool not in runtime, f"{tool} in the runtime stage"
    users = [rest for instruction, rest in stages[-1] if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage runs as a non-root user"
    assert not any(instruction == "ENTRYPOINT" for instruction, _ in stages[-1]), "the command picks the process"
    env = d.runtime_env()
    assert env["PYTHONPATH"].split(":") == ["/app", "/app/gen"]
    assert d.runtime_workdir() == "/app"
    # Every SHOP_* the image sets is read by every process.
    assert {k for k in env if k.startswith("SHOP_")} <= set(d.env_names(CommonSettings))
    for package in d.PACKAGES:
        assert d.compose_service(package)["build"]["dockerfile"] == "compose/Dockerfile"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's /app (compose/Dockerfile's copy rule applied to this checkout): the commands
    below run in it, with the image's PYTHONPATH, so a process that imports anything the image
    does not hold (devstack, tests) fails here as it would in the container."""
    return d.build_image_tree(tmp_path_factory.mktemp("image") / "app")


def test_image_tree_rule_is_the_dockerfiles() -> None:
    text = d.DOCKERFILE.read_text()
    assert d.IMAGE_COPY_STEP in text, "compose/Dockerfile copies other directories than tests/deploy_helpers.py"
    assert 'for d in *_svc; do if [ -f "$d/__init__.py" ]' in text
    ignore = d.DOCKERFILE.with_name("Dockerfile.dockerignore").read_text().split()
    for name in (*d.IMAGE_CODE, "*_svc", "pyproject.toml"):
        assert f"!{name}" in ignore or f"!{name}/" in ignore, f"Dockerfile.dockerignore drops {name}"


def _http_ok(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
        return bool(response.status == 200)


@pytest.mark.parametrize("package", d.PACKAGES)
def test_image_command_starts_the_process(
    package: str, services: Callable[..., Cluster], app: Path, tmp_path: Path
) -> None:
    """The compose command line, run outside Docker as the image would run it, against the test
    cluster: the process serves, the compose healthcheck says healthy, SIGTERM stops it cleanly."""
    if not d.service_built(package):
        pytest.skip(f"{package} is not built yet: checked once {package}/__main__.py exists")
    cluster = services(package)
    port = free_port()
    # Ports of its own: the cluster's instance of the process keeps running.
    ports = {"SHOP_PORT": str(port), "SHOP_METRICS_PORT": str(free_port())}
    env = d.image_env(app, {**cluster.service_env_for(package), **ports})
    service = d.compose_service(package)
    process = Process(package, d.image_argv(service["command"]), tmp_path / f"{package}.log", env=env, cwd=app)
    process.start()
    try:
        if package in d.HTTP_PACKAGES:
            process.wait_ready(lambda: _http_ok(port), 60)
        else:
            process.wait_ready(lambda: cluster.grpc_serving(f"127.0.0.1:{port}"), 60)
        healthcheck = service["healthcheck"]["test"]
        assert healthcheck[0] == "CMD"
        result = subprocess.run(
            d.image_argv(healthcheck[1:]), env=env, cwd=app, capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, f"compose healthcheck of {package} failed: {result.stderr}"
        # Prometheus metrics where the Kubernetes scrape annotations say: a port of their own.
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['SHOP_METRICS_PORT']}/metrics", timeout=5) as response:
            assert response.status == 200
        assert process.popen is not None
        process.popen.send_signal(signal.SIGTERM)
        code = process.popen.wait(timeout=30)
        # uvicorn re-raises the signal once its graceful shutdown is done; the gRPC services
        # drain (common/grpc_server.serve) and return 0.
        clean = (0, -signal.SIGTERM) if package in d.HTTP_PACKAGES else (0,)
        assert code in clean, f"{package} exited {code} on SIGTERM:\n{tail(process.log)}"
    finally:
        process.stop()


def test_jwt_keys_job_makes_one_key_pair(app: Path, tmp_path: Path) -> None:
    job = d.compose_service("jwt_keys")
    env = d.image_env(app, {"KEYS_DIR": str(tmp_path)})
    for _ in range(2):  # the second run keeps the pair
        result = subprocess.run(
            d.image_argv(job["command"]), env=env, cwd=app, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
    private = tmp_path / "jwt_private.pem"
    assert private.stat().st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert (tmp_path / "jwt_public.pem").read_bytes() == public
    assert d.compose_env("user_svc")["SHOP_JWT_PRIVATE_KEY_FILE"] == "/keys/jwt_private.pem"
    assert "jwt-keys:/keys" in d.compose_service("jwt_keys")["volumes"]


def test_tls_certs_job_makes_a_ca_and_one_certificate_per_process(app: Path, tmp_path: Path) -> None:
    job = d.compose_service("tls_certs")
    assert {"tls:/tls", "tls-ca:/tls-ca"} <= set(job["volumes"])
    certs, ca_keys = tmp_path / "tls", tmp_path / "tls-ca"
    argv = [{"/tls": str(certs), "/tls-ca": str(ca_keys)}.get(arg, arg) for arg in job["command"]]
    first: dict[str, bytes] = {}
    for _ in range(2):  # the second run keeps what is there
        result = subprocess.run(
            d.image_argv(argv), env=d.image_env(app, {}), cwd=app, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        first = first or {path.name: path.read_bytes() for path in certs.iterdir()}
    assert {path.name: path.read_bytes() for path in certs.iterdir()} == first
    # The CA's key is not in the volume the processes mount.
    assert sorted(path.name for path in ca_keys.iterdir()) == ["ca.key"]
    assert not (certs / "ca.key").exists()
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    for package in (*d.GRPC_PACKAGES, "edge"):
        assert (certs / f"{package}.key").stat().st_mode & 0o777 == 0o600
        cert = x509.load_pem_x509_certificate((certs / f"{package}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://shop/{package}"]
        assert d.k8s_name(package) in sans.get_values_for_type(x509.DNSName)


def test_redis_users_job_writes_the_acl(app: Path, tmp_path: Path) -> None:
    """The job's ACL file, loaded by a real redis-server: each service signs in with its password
    and reaches its own keys only; the default user is refused."""
    import redis

    job = d.compose_service("redis_users")
    acl = tmp_path / "users.acl"
    env = d.image_env(app, {**d.compose_env("redis_users"), "ACL_FILE": str(acl)})
    result = subprocess.run(d.image_argv(job["command"]), env=env, cwd=app, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    port = free_port()
    argv = [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--aclfile", str(acl)]
    server = Process("redis-acl", argv, tmp_path / "redis.log").start()
    try:
        password = env["REDIS_PASSWORD"]
        order = redis.Redis(port=port, username="order_svc", password=password, socket_timeout=5)
        server.wait_ready(order.ping, 20)
        order.set("cart:probe", "1")
        notify = redis.Redis(port=port, username="notify_svc", password=password, socket_timeout=5)
        with pytest.raises(redis.exceptions.NoPermissionError):
            notify.get("cart:probe")
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, socket_timeout=5).get("cart:probe")
    finally:
        server.stop()


def test_create_bucket_job(s3: S3, app: Path) -> None:
    job = d.compose_service("create_bucket")
    bucket = f"deploy-{uuid.uuid4().hex[:12]}"
    env = d.image_env(app, {**d.compose_env("create_bucket"), **s3.admin_env(), "SHOP_S3_BUCKET": bucket})
    for _ in range(2):  # idempotent
        result = subprocess.run(
            d.image_argv(job["command"]), env=env, cwd=app, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=env["SHOP_S3_ACCESS_KEY"],
        aws_secret_access_key=env["SHOP_S3_SECRET_KEY"],
        region_name="us-east-1",
    )
    client.head_bucket(Bucket=bucket)


async def test_kafka_setup_job(kafka: Kafka, app: Path) -> None:
    """The job's command, run as in the image against the test broker (logged in as the admin
    there: the broker has no PLAIN listener), gives each service the user and password its
    compose environment logs in with, and that login may write the service's topic."""
    job = d.compose_service("kafka_setup")
    env = d.compose_env("kafka_setup")
    assert set(env) <= set(d.env_names(KafkaSetupSettings))
    assert env["SHOP_KAFKA_SASL_USERNAME"] == "shop_admin"
    admin = kafka_settings(kafka)
    assert admin.kafka_sasl_password is not None
    local = {
        "SHOP_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "SHOP_KAFKA_SASL_MECHANISM": admin.kafka_sasl_mechanism,
        "SHOP_KAFKA_SASL_PASSWORD": admin.kafka_sasl_password.get_secret_value(),
    }
    for _ in range(2):  # idempotent
        job_env = d.image_env(app, {**env, **local})
        argv = d.image_argv(job["command"])
        result = await asyncio.to_thread(subprocess.run, argv, env=job_env, cwd=app, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert job["depends_on"]["kafka"]["condition"] == "service_healthy"
    for package in SHOP_ACCESS:
        service = d.compose_env(package)
        assert service["SHOP_KAFKA_SASL_USERNAME"] == package
        login = kafka_settings(kafka, package, password=service["SHOP_KAFKA_SASL_PASSWORD"])
        assert login.kafka_sasl_mechanism == service["SHOP_KAFKA_SASL_MECHANISM"]
        topic = SHOP_ACCESS[package].writes[0]
        producer = KafkaProducer(login, **{"message.timeout.ms": 10_000})
        try:
            await producer.send(topic, b"probe")  # raises unless the broker took it
        finally:
            await producer.close()


class _BarePostgres(Postgres):
    """A fresh PostgreSQL without devstack's databases: the compose init script makes them."""

    def after_ready(self) -> None:
        pass


def test_postgres_init_script_and_migrations_as_service_roles(app: Path, tmp_path: Path) -> None:
    """On an empty PostgreSQL: the init script makes one database per service, owned by its own
    role (not a superuser), and each migration job migrates it connected as that role."""
    server = _BarePostgres(tmp_path / "postgres")
    server.start().wait()
    try:
        port = server.ports["port"]
        script = d.COMPOSE_DIR / "postgres" / "init-databases.sh"
        env = {
            **os.environ,
            "PATH": f"{pg_bindir()}:{os.environ['PATH']}",
            "PGHOST": str(server.pgdata),  # the superuser: over the Unix socket only
            "PGPORT": str(port),
            "POSTGRES_USER": "postgres",
            "SERVICE_DB_PASSWORD": "local-dev-only",
        }
        result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        with psycopg.connect(server.dsn("postgres")) as conn:
            owners: dict[str, str] = dict(
                conn.execute(
                    "select d.datname, r.rolname from pg_database d join pg_roles r on r.oid = d.datdba "
                    "where d.datname like 'shop_%'"
                ).fetchall()
            )
            superusers = {row[0] for row in conn.execute("select rolname from pg_roles where rolsuper")}
        assert owners == {db: db for db in ("shop_user", "shop_order", "shop_comment")}
        assert not superusers & set(owners.values())

        for area in ("user", "order", "comment"):
            job = d.compose_service(f"migrate_{area}")
            if not (REPO / "migrations" / area / "alembic.ini").exists():
                continue  # not written yet
            url = d.compose_env(f"migrate_{area}")["SHOP_DATABASE_URL"].replace(
                "@postgres:5432/", f"@127.0.0.1:{port}/"
            )
            result = subprocess.run(
                d.image_argv(job["command"]),
                env=d.image_env(app, {"SHOP_DATABASE_URL": url}),
                cwd=app,
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, f"migrate_{area}: {result.stderr}"
            with psycopg.connect(server.dsn(f"shop_{area}")) as conn:
                owner = conn.execute("select tableowner from pg_tables where tablename = 'alembic_version'").fetchone()
            assert owner == (f"shop_{area}",)
    finally:
        server.stop()
        shutil.rmtree(server.pgdata, ignore_errors=True)


# --- Kubernetes -----------------------------------------------------------------------------


def _require_kustomize() -> None:
    if d.kustomize_tool() is None:
        pytest.skip(f"no kustomize v5 (nor kubectl with kustomize v5): {PROVISION}")


KUSTOMIZATIONS = d.kustomizations()
IDS = [str(path.relative_to(d.K8S_DIR)) for path in KUSTOMIZATIONS]
ALLOWED_KINDS = {
    "Namespace",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Job",
    # cert-manager (service identity): checked by test_k8s_certificates_give_each_process_its_identity.
    "Issuer",
    "Certificate",
}
CERT_MANAGER = "cert-manager.io/v1"
# The fields of cert-manager v1 the manifests may use (no bundled schema: a misspelt one fails here).
CERT_MANAGER_SPEC = {
    "Certificate": {
        "secretName", "duration", "renewBefore", "privateKey", "uris", "dnsNames", "ipAddresses", "usages",
        "issuerRef", "isCA", "commonName", "subject", "secretTemplate",
    },
    "Issuer": {"ca", "selfSigned", "acme", "vault"},
}  # fmt: skip


def test_schema_validation_rejects_a_broken_object() -> None:
    """The schema check below is not vacuous: a misspelt field fails it."""
    broken = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "x", "imagee": "x"}]}}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=IDS)
def test_k8s_renders_and_passes_schemas(kustomization: Path) -> None:
    _require_kustomize()
    objects = d.render(kustomization)
    kinds = {obj["kind"] for obj in objects}
    assert kinds <= ALLOWED_KINDS, f"unexpected kinds {sorted(kinds - ALLOWED_KINDS)} (data stores stay external)"
    failures = []
    for version in (d.K8S_MIN_VERSION, kubernetes_validate.latest_version()):
        for obj in objects:
            if obj["apiVersion"] == CERT_MANAGER:
                continue  # a custom resource: no bundled schema (checked below)
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
                failures.append(f"{version} {obj['kind']}/{obj['metadata']['name']}: {getattr(exc, 'message', exc)}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=IDS)
def test_k8s_secrets_are_references(kustomization: Path) -> None:
    _require_kustomize()
    objects = d.render(kustomization)
    secrets = d.by_kind(objects, "Secret")
    if kustomization.name == "base":
        assert not secrets, "the base references Secrets, it never holds values"
    for pod in _pod_specs(objects):
        for container in pod["containers"]:
            for ref in d.secret_refs(container):
                if kustomization.name != "base" and not ref.get("optional") and ref["name"] != "shop-jwt":
                    assert ref["name"] in secrets, f"{ref['name']} is neither generated nor optional"
                    assert ref["key"] in secrets[ref["name"]]["data"]
    for name, obj in d.by_kind(objects, "Service").items():
        if obj["spec"].get("type") == "ExternalName" and kustomization.name != "base":
            assert not obj["spec"]["externalName"].endswith(".example"), f"{name} still points at the placeholder"


def _pod_specs(objects: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [obj["spec"]["template"]["spec"] for obj in objects if obj["kind"] in ("Deployment", "Job")]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=IDS)
@pytest.mark.parametrize("package", d.PACKAGES)
def test_k8s_workload_matches_code(kustomization: Path, package: str) -> None:
    _require_kustomize()
    objects = d.render(kustomization)
    name = d.k8s_name(package)
    port = SERVICE_PORTS[package]
    deployment = d.by_kind(objects, "Deployment").get(name)
    assert deployment is not None, f"no Deployment {name}"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", package]
    assert port in [p["containerPort"] for p in container["ports"]]
    env = {**{k: v for k, v in d.runtime_env().items() if k.startswith("SHOP_")}, **d.container_env(objects, container)}
    for probe in ("readinessProbe", "livenessProbe"):
        spec = container[probe]
        if package in d.HTTP_PACKAGES:
            assert spec["httpGet"]["path"] == "/healthz"
        else:
            # The kubelet cannot present a client certificate: the plaintext health-only port.
            health = int(str(env.get("SHOP_HEALTH_PORT")))
            assert spec["grpc"]["port"] == health, f"{name} {probe} must be the gRPC health check on {health}"
            assert health in [p["containerPort"] for p in container["ports"]]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name} {kind}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"

    hpas = [
        h for h in d.by_kind(objects, "HorizontalPodAutoscaler").values() if h["spec"]["scaleTargetRef"]["name"] == name
    ]
    assert len(hpas) == 1, f"{name} needs one HorizontalPodAutoscaler"
    assert 1 <= hpas[0]["spec"]["minReplicas"] <= hpas[0]["spec"]["maxReplicas"]

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = d.by_kind(objects, "Service").get(name)
    assert service is not None, f"no Service {name}"
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["port"] for p in service["spec"]["ports"]] == [port]

    _check_env(f"k8s {kustomization.name}", package, env)
    scrape = deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]
    assert scrape == env.get("SHOP_METRICS_PORT"), "metrics scrape port"
    assert int(scrape) in [p["containerPort"] for p in container["ports"]]
    if "SHOP_JWT_PUBLIC_KEY_FILE" in env:
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        key_dir = str(Path(str(env["SHOP_JWT_PUBLIC_KEY_FILE"])).parent)
        assert volumes[mounts[key_dir]]["secret"]["secretName"] == "shop-jwt"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=IDS)
def test_k8s_migration_jobs(kustomization: Path) -> None:
    _require_kustomize()
    jobs = d.by_kind(d.render(kustomization), "Job")
    for area in ("user", "order", "comment"):
        job = jobs.get(f"migrate-{area}")
        assert job is not None, f"no Job migrate-{area}"
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["command"] == d.compose_service(f"migrate_{area}")["command"]
        refs = d.secret_refs(container)
        if kustomization.name == "base":
            assert [r["name"] for r in refs] == [f"shop-{area}-db"]
        deployment = d.by_kind(d.render(kustomization), "Deployment")[f"{area}-svc"]
        (service_container,) = deployment["spec"]["template"]["spec"]["containers"]
        url_ref = [
            item["valueFrom"]["secretKeyRef"]
            for item in service_container["env"]
            if item["name"] == "SHOP_DATABASE_URL"
        ]
        assert url_ref == refs, f"migrate-{area} and {area}-svc must use the same database secret"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=IDS)
def test_k8s_certificates_give_each_process_its_identity(kustomization: Path) -> None:
    """cert-manager issues each gRPC process its certificate (its name in the URI SAN, its
    Service's DNS name), and the Deployment mounts that Secret where its TLS settings point."""
    _require_kustomize()
    objects = d.render(kustomization)
    issuers = d.by_kind(objects, "Issuer")
    certificates = d.by_kind(objects, "Certificate")
    for obj in [*issuers.values(), *certificates.values()]:
        assert obj["apiVersion"] == CERT_MANAGER
        unknown = set(obj["spec"]) - CERT_MANAGER_SPEC[obj["kind"]]
        assert not unknown, f"{obj['kind']}/{obj['metadata']['name']}: unknown fields {sorted(unknown)}"
    for certificate in certificates.values():
        assert certificate["spec"]["issuerRef"] == {"name": certificate["spec"]["issuerRef"]["name"], "kind": "Issuer"}
        assert certificate["spec"]["issuerRef"]["name"] in issuers
    deployments = d.by_kind(objects, "Deployment")
    for package in d.PACKAGES:
        cls = _built_settings(package)
        name = d.k8s_name(package)
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        env = d.container_env(objects, container)
        if "SHOP_TLS_CERT_FILE" not in d.env_names(cls):
            assert name not in certificates and "SHOP_TLS_CERT_FILE" not in env
            continue
        spec = certificates[name]["spec"]
        assert spec["uris"] == [f"spiffe://shop/{package}"]
        assert name in spec["dnsNames"]
        assert {"server auth", "client auth"} <= set(spec["usages"])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in deployments[name]["spec"]["template"]["spec"]["volumes"]}
        directory = str(Path(str(env["SHOP_TLS_CERT_FILE"])).parent)
        assert volumes[mounts[directory]]["secret"]["secretName"] == spec["secretName"]
        assert {env["SHOP_TLS_CA_FILE"], env["SHOP_TLS_CERT_FILE"], env["SHOP_TLS_KEY_FILE"]} == {
            f"{directory}/{key}" for key in ("ca.crt", "tls.crt", "tls.key")
        }
    if kustomization.name != "base":  # an overlay makes the CA the Issuer signs with
        (ca_issuer,) = [i for i in issuers.values() if "ca" in i["spec"]]
        ca_secret = ca_issuer["spec"]["ca"]["secretName"]
        assert any(c["spec"].get("isCA") and c["spec"]["secretName"] == ca_secret for c in certificates.values())
