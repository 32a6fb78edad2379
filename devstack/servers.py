"""The real servers of the local cluster, each started on loopback.

Every server gets a data directory and its ports, starts as a child process,
and is ready only when a real client call through it succeeds.  ``env()`` gives
the ``SHOP_*`` variables that point the shop processes (and tests) at it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import IO
from urllib.parse import quote

from pydantic import SecretStr

from common.redis_acl import REDIS_ACCESS, write_acl_file
from common.settings import KAFKA_ADMIN_USER, KafkaSettings, dev_kafka_password
from devstack.credentials import passwords
from devstack.paths import BIN, CACHE, REPO
from devstack.process import Process, as_user, free_port, port_open, tail

# Databases of the PostgreSQL-backed services, one each, owned by a login role of the same
# name: the service connects as that role (password over TCP) and migrates its own schema.
PG_DATABASES = ("shop_user", "shop_order", "shop_comment")
KAFKA_VERSION = "4.3.1"
# MinIO's root user: local-cluster-only credentials (see common/settings.py DEV_SECRETS), for
# devstack's own set-up alone; product_svc gets a user of its own (S3.after_ready).
S3_ACCESS_KEY = "shop-dev"
S3_SECRET_KEY = "shop-dev-secret-not-for-production"
# product_svc's bucket (common/settings.py S3Settings) and its MinIO user, allowed that bucket only.
S3_BUCKET = "shop-images"
S3_USERS = {"product_svc": S3_BUCKET}


class Server:
    name = ""
    ready_timeout = 60.0

    def __init__(self, data: Path, ports: dict[str, int] | None = None) -> None:
        self.data = data
        self.ports = {key: (ports or {}).get(key) or free_port() for key in self.port_names()}
        self.process: Process | None = None
        # Durable by default: what a server acknowledged survives its crash.  The test
        # suite alone sets this (``Cluster(unsafe_fast_storage=True)``) to skip flushes.
        self.unsafe_fast_storage = False

    # -- what a server defines
    def port_names(self) -> tuple[str, ...]:
        return ("port",)

    def argv(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time set-up of the data directory."""

    def ready(self) -> bool:
        return port_open(self.ports["port"])

    def after_ready(self) -> None:
        """Set-up that needs the server running (databases, buckets)."""

    # Servers this one runs on top of (started and ready before it), handed to ``use``.
    needs: tuple[str, ...] = ()

    def use(self, servers: dict[str, Server]) -> None:
        """Learn where the servers in ``needs`` are (called before ``start``)."""

    def env(self) -> dict[str, str]:
        """What every shop process is told about this server (where it is; no credentials)."""
        return {}

    def service_env(self, service: str) -> dict[str, str]:
        """What one shop process needs to reach this server as its own user."""
        return {}

    def process_env(self) -> dict[str, str]:
        return {}

    user: str | None = None

    # -- lifecycle
    @property
    def log(self) -> Path:
        return self.data.parent / "logs" / f"{self.name}.log"

    def start(self) -> Server:
        self.data.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        busy = [f"{key}={port}" for key, port in self.ports.items() if port_open(port)]
        if busy:
            raise RuntimeError(f"{self.name}: port already in use ({', '.join(busy)}); is another cluster running?")
        self.prepare()
        self.process = Process(self.name, self.argv(), self.log, env=self.process_env(), user=self.user).start()
        return self

    def wait(self) -> None:
        assert self.process is not None
        self.process.wait_ready(self.ready, self.ready_timeout)
        self.after_ready()

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def server_pid(self) -> int:
        """The pid of the server itself (not of a ``runuser`` in front of it)."""
        assert self.process is not None and self.process.pid is not None
        return self.process.pid

    def kill(self) -> None:
        """``kill -9`` of the server process, as a crash would end it (fault tests)."""
        os.kill(self.server_pid(), signal.SIGKILL)
        assert self.process is not None
        self.process.stop(timeout=10)  # reap what is left of its process group

    def restart(self) -> None:
        """Start it again on the same ports and data, and wait until it answers."""
        self.start()
        self.wait()


def binary(name: str) -> str:
    """A server or tool binary: built into the cache by `make deps`, or on the PATH."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} is not installed: run `make deps` (devstack/provision.sh)")


# --- PostgreSQL -------------------------------------------------------------


def pg_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not candidates:
        raise FileNotFoundError("PostgreSQL is not installed: run `make deps` (apt-get install postgresql)")
    return Path(candidates[-1])


class Postgres(Server):
    """PostgreSQL, run as the ``postgres`` user when we are root."""

    name = "postgres"

    def __init__(self, data: Path, ports: dict[str, int] | None = None) -> None:
        super().__init__(data, ports)
        self.user = "postgres" if os.geteuid() == 0 else None
        self.pgdata = self._reachable(data / "pgdata")

    def _reachable(self, wanted: Path) -> Path:
        """The postgres user must be able to reach its data dir; fall back to /tmp."""
        if self.user is None:
            return wanted
        wanted.parent.mkdir(parents=True, exist_ok=True)
        probe = as_user(self.user, ["test", "-x", str(wanted.parent)])  # can it get there?
        if subprocess.run(probe, check=False).returncode == 0 or wanted.exists():
            return wanted
        link = wanted.parent / "pgdata.location"
        if link.exists():
            return Path(link.read_text().strip())
        moved = Path(tempfile.mkdtemp(prefix="shop-pgdata-"))
        shutil.chown(moved, "postgres", "postgres")
        link.write_text(str(moved))
        return moved

    def prepare(self) -> None:
        if not (self.pgdata / "PG_VERSION").exists():
            self.initdb()
        self.write_access_rules()

    def initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(self.pgdata, self.user, self.user)
        os.chmod(self.pgdata, 0o700)
        initdb = as_user(
            self.user,
            [
                str(pg_bindir() / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                # Replaced by write_access_rules before the first start.
                "--auth-local=peer",
                "--auth-host=reject",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                *(["--no-sync"] if self.unsafe_fast_storage else []),
            ],
        )
        with open(self.log, "ab") as out:
            code = _run(initdb, out)
        if code != 0:
            raise RuntimeError(f"initdb failed ({code}):\n{tail(self.log)}")

    def write_access_rules(self) -> None:
        """pg_hba.conf: the superuser only over the Unix socket in the data dir (mode 0700),
        as the OS user that runs the cluster (or root); every other role with its password
        (SCRAM) over TCP; no trust anywhere.  Rewritten at each start, so an older data dir
        gets the rules too."""
        me = pwd.getpwuid(os.geteuid()).pw_name
        hba = [
            "# devstack (devstack/servers.py Postgres.write_access_rules); rewritten at each start",
            "local   all   postgres                 peer map=devstack",
            "local   all   all                      reject",
            "host    all   postgres   all           reject",
            "host    all   all        127.0.0.1/32  scram-sha-256",
            "host    all   all        ::1/128       scram-sha-256",
        ]
        ident = [f"devstack   {name}   postgres" for name in dict.fromkeys(["postgres", "root", me])]
        for name, lines in (("pg_hba.conf", hba), ("pg_ident.conf", ident)):
            path = self.pgdata / name
            path.write_text("\n".join(lines) + "\n")
            if self.user:
                shutil.chown(path, self.user, self.user)

    def argv(self) -> list[str]:
        return [
            str(pg_bindir() / "postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            str(self.ports["port"]),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.pgdata}",
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=128MB",
            *(UNSAFE_FAST_POSTGRES if self.unsafe_fast_storage else ()),
        ]

    def server_pid(self) -> int:
        """The postmaster (``runuser`` starts it as the postgres user)."""
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """``kill -9`` of the postmaster; its backends notice and exit, as after a crash."""
        pid = self.server_pid()
        os.kill(pid, signal.SIGKILL)
        assert self.process is not None
        self.process.stop(timeout=10)
        # A restart refuses a data dir whose old backends still hold its shared memory.
        deadline = time.monotonic() + 20
        while _postgres_backends(self.pgdata) and time.monotonic() < deadline:
            time.sleep(0.1)

    def ready(self) -> bool:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), connect_timeout=2) as conn:
            conn.execute("select 1")
        return True

    def after_ready(self) -> None:
        import psycopg
        from psycopg import sql

        secret = self.passwords()
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            existing = {row[0] for row in conn.execute("select datname from pg_database")}
            roles = {row[0] for row in conn.execute("select rolname from pg_roles")}
            # Service roles reach their own database only, never postgres or template1.
            conn.execute("revoke connect on database postgres, template1 from public")
            for db in PG_DATABASES:
                role = sql.Identifier(db)
                verb = sql.SQL("alter" if db in roles else "create")
                conn.execute(sql.SQL("{} role {} login password {}").format(verb, role, sql.Literal(secret[db])))
                if db in existing:
                    conn.execute(sql.SQL("alter database {} owner to {}").format(role, role))
                else:
                    conn.execute(sql.SQL("create database {} owner {}").format(role, role))
                conn.execute(sql.SQL("revoke all on database {} from public").format(role))
        for db in existing & set(PG_DATABASES):
            self._adopt_tables(db)

    def _adopt_tables(self, database: str) -> None:
        """Tables made by migrations run as the superuser (clusters older than the service
        roles) become the role's, with their sequences and indexes."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(database), autocommit=True) as conn:
            query = "select tablename from pg_tables where schemaname = 'public' and tableowner <> %s"
            for (table,) in conn.execute(query, (database,)).fetchall():
                owner = sql.Identifier(database)
                conn.execute(sql.SQL("alter table public.{} owner to {}").format(sql.Identifier(table), owner))

    def passwords(self) -> dict[str, str]:
        """The service roles' passwords, made once per cluster (devstack/credentials.py)."""
        return passwords(self.data, PG_DATABASES)

    def dsn(self, database: str) -> str:
        """devstack's own administrative connection: the superuser over the Unix socket."""
        return f"postgresql://postgres@/{database}?host={quote(str(self.pgdata))}&port={self.ports['port']}"

    def url(self, database: str) -> str:
        """SQLAlchemy URL (async engine on psycopg 3) of the administrative connection."""
        return "postgresql+psycopg" + self.dsn(database).removeprefix("postgresql")

    def service_url(self, database: str) -> str:
        """SQLAlchemy URL of a service: its own role and password, over TCP."""
        secret = self.passwords()[database]
        return f"postgresql+psycopg://{database}:{secret}@127.0.0.1:{self.ports['port']}/{database}"

    def env(self) -> dict[str, str]:
        return {"SHOP_PG_PORT": str(self.ports["port"])}


# Settings that trade durability for speed: a commit is acknowledged before its WAL
# reaches the disk, and nothing is flushed.  Only ever for throwaway test data.
UNSAFE_FAST_POSTGRES = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


def _postgres_backends(pgdata: Path) -> list[int]:
    """Processes still running from a PostgreSQL data dir (after its postmaster died)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            if b"postgres" in cmdline and os.readlink(proc / "cwd") == str(pgdata):
                found.append(int(proc.name))
    return found


def _run(argv: list[str], out: IO[bytes]) -> int:
    return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False).returncode


# --- Redis ------------------------------------------------------------------


# devstack's own Redis user (readiness checks, the tests' inspection of the stores); the
# services' users and what each may touch: common/redis_acl.py.
REDIS_ADMIN = "devstack"


class Redis(Server):
    name = "redis"

    def passwords(self) -> dict[str, str]:
        return passwords(self.data, [REDIS_ADMIN, *REDIS_ACCESS])

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        write_acl_file(self.data / "users.acl", self.passwords(), admins=(REDIS_ADMIN,))

    def argv(self) -> list[str]:
        return [
            binary("redis-server"),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.ports["port"]),
            "--dir",
            str(self.data),
            "--aclfile",
            str(self.data / "users.acl"),
            # Durability comes from the append-only file (no RDB snapshots besides its base):
            # every write is in the file before its reply is sent, and fsynced once a second,
            # so a crash of Redis loses nothing and one of the machine at most a second.
            "--save",
            "",
            "--appendonly",
            "no" if self.unsafe_fast_storage else "yes",
            "--appendfsync",
            "everysec",
            "--protected-mode",
            "no",
        ]

    def ready(self) -> bool:
        import redis

        return bool(redis.Redis.from_url(self.url(), socket_timeout=1).ping())

    def url(self, db: int = 0, user: str = REDIS_ADMIN) -> str:
        """A Redis URL as ``user`` (devstack's own user unless told)."""
        secret = self.passwords()[user]
        return f"redis://{user}:{secret}@127.0.0.1:{self.ports['port']}/{db}"

    def service_env(self, service: str) -> dict[str, str]:
        if service not in REDIS_ACCESS:
            return {}
        return {"SHOP_REDIS_URL": self.url(user=service)}


# --- Kafka (KRaft, single node) ----------------------------------------------

# The broker's own user: the inter-broker (SCRAM) and controller (PLAIN) listeners.
KAFKA_BROKER_USER = "broker"
# The topic Jaeger writes spans to in Zipkin's format and Zipkin's server reads (devstack/zipkin.py).
ZIPKIN_TOPIC = "zipkin"
_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


class Kafka(Server):
    """Clients log in with SASL/SCRAM-SHA-512 over plaintext on loopback, one user per
    process (the password of each: common/settings.py dev_kafka_password); ACLs per topic
    and group (common/kafka_acl.py), deny by default.  The controller listener takes SASL/PLAIN
    (KRaft cannot use SCRAM there: the credentials live in the metadata it serves), with the
    broker as its only user.  The broker's and the admin's SCRAM credentials are written at
    ``kafka-storage format`` time; the services' users, the topics and the ACLs once it is up."""

    name = "kafka"
    ready_timeout = 90.0

    def port_names(self) -> tuple[str, ...]:
        return ("port", "controller")

    @property
    def libs(self) -> Path:
        libs = CACHE / "kafka" / KAFKA_VERSION / "libs"
        if not libs.is_dir():
            raise FileNotFoundError(f"Kafka {KAFKA_VERSION} is not provisioned: run `make deps`")
        return libs

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            # A small heap floor and the serial collector: ready in ~2 s at ~300 MB.
            "java",
            "-Xms64m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={REPO / 'devstack' / 'kafka' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data / 'logs'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def prepare(self) -> None:
        port, controller = self.ports["port"], self.ports["controller"]
        broker = dev_kafka_password(KAFKA_BROKER_USER)
        config = self.data / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
                    f"listeners=CLIENT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=CLIENT://127.0.0.1:{port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=CLIENT",
                    "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT",
                    "listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512",
                    "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                    f"listener.name.client.scram-sha-512.sasl.jaas.config={_SCRAM_MODULE} required"
                    f' username="{KAFKA_BROKER_USER}" password="{broker}";',
                    "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                    "sasl.mechanism.controller.protocol=PLAIN",
                    f"listener.name.controller.plain.sasl.jaas.config={_PLAIN_MODULE} required"
                    f' username="{KAFKA_BROKER_USER}" password="{broker}" user_{KAFKA_BROKER_USER}="{broker}";',
                    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                    "allow.everyone.if.no.acl.found=false",
                    f"super.users=User:{KAFKA_BROKER_USER};User:{KAFKA_ADMIN_USER}",
                    f"log.dirs={self.data / 'kraft'}",
                    "num.partitions=3",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=3",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    # Only a user allowed to create a topic (the admin) gets one by writing to it.
                    "auto.create.topics.enable=true",
                    "group.initial.rebalance.delay.ms=0",
                    "log.flush.interval.messages=9223372036854775807",
                    "",
                ]
            )
        )
        kraft = self.data / "kraft"
        marker = self.data / "scram-users"
        if (kraft / "meta.properties").exists():
            if marker.exists():
                return
            # Formatted before the broker had users: nobody could log in.  Local data only.
            with open(self.log, "a") as out:
                out.write(f"devstack: {kraft} predates Kafka's SASL users; formatting it again\n")
            shutil.rmtree(kraft)
        cluster_id = _kafka_cluster_id()
        scram = [
            f"--add-scram=SCRAM-SHA-512=[name={user},password={dev_kafka_password(user)}]"
            for user in (KAFKA_BROKER_USER, KAFKA_ADMIN_USER)
        ]
        fmt = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            f"--cluster-id={cluster_id}",
            "--config",
            str(config),
            *scram,
        )  # the "=" form: an id may start with "-"
        with open(self.log, "ab") as out:
            code = _run(fmt, out)
        if code != 0:
            raise RuntimeError(f"kafka storage format failed ({code}):\n{tail(self.log)}")
        marker.write_text(f"{KAFKA_BROKER_USER} {KAFKA_ADMIN_USER}\n")

    def argv(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.data / "server.properties"))

    def ready(self) -> bool:
        from common.clients import kafka_admin

        if not port_open(self.ports["port"]):
            return False
        admin = kafka_admin(self.client_settings(), log_level=0)
        metadata = admin.list_topics(timeout=2)
        if not metadata.brokers:
            return False
        # Load the group coordinator now (it creates __consumer_offsets), or the
        # first consumer group waits seconds on "coordinator load in progress".
        # (Not list_consumer_group_offsets: it can crash librdkafka this early.)
        admin.describe_consumer_groups(["devstack-warmup"])["devstack-warmup"].result(timeout=5)
        return True

    def after_ready(self) -> None:
        """The users of the shop and of the local cluster (Jaeger writes spans for Zipkin's
        server to read), their topics and ACLs."""
        from common.kafka_acl import SHOP_ACCESS, SHOP_TOPICS, Access, apply

        access = {
            **SHOP_ACCESS,
            "jaeger": Access(writes=(ZIPKIN_TOPIC,)),
            "zipkin": Access(reads=(ZIPKIN_TOPIC,), groups=("zipkin",)),
        }
        passwords = {user: dev_kafka_password(user) for user in access}
        apply(self.client_settings(), passwords, access=access, topics=(*SHOP_TOPICS, ZIPKIN_TOPIC))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['port']}"

    def env(self) -> dict[str, str]:
        return {
            "SHOP_KAFKA_BOOTSTRAP": self.bootstrap,
            "SHOP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SHOP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        }

    def user_env(self, user: str) -> dict[str, str]:
        """The credentials of one process (its own user), for its environment."""
        return {"SHOP_KAFKA_SASL_USERNAME": user, "SHOP_KAFKA_SASL_PASSWORD": dev_kafka_password(user)}

    def client_settings(self, user: str = KAFKA_ADMIN_USER, password: str | None = None) -> KafkaSettings:
        """Settings of a client logged in as ``user`` (the admin, a super user, by default):
        the one way tests and devstack reach this broker.  ``password`` overrides the user's."""
        return KafkaSettings(
            kafka_bootstrap=self.bootstrap,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username=user,
            kafka_sasl_password=SecretStr(password if password is not None else dev_kafka_password(user)),
        )


def _kafka_cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


# --- S3: MinIO -----------------------------------------------------------------


class OnKafka(Server):
    """A server that runs on top of the cluster's Kafka (it learns where in ``use``)."""

    needs = ("kafka",)
    kafka: Kafka

    def use(self, servers: dict[str, Server]) -> None:
        kafka = servers["kafka"]
        assert isinstance(kafka, Kafka)
        self.kafka = kafka


class S3(Server):
    name = "s3"

    def argv(self) -> list[str]:
        return [
            binary("minio"),
            "server",
            str(self.data / "objects"),
            "--quiet",
            "--address",
            f"127.0.0.1:{self.ports['port']}",
        ]

    def process_env(self) -> dict[str, str]:
        return {
            "MINIO_ROOT_USER": S3_ACCESS_KEY,
            "MINIO_ROOT_PASSWORD": S3_SECRET_KEY,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CI_CD": "1",
        }

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=2) as response:
            return bool(response.status == 200)

    def after_ready(self) -> None:
        """A MinIO user per service, with a policy for its bucket alone (MinIO's admin API,
        through the minio package's client; no ``mc`` needed)."""
        from minio.credentials.providers import StaticProvider
        from minio.error import MinioAdminException
        from minio.minioadmin import MinioAdmin

        root = StaticProvider(S3_ACCESS_KEY, S3_SECRET_KEY)
        admin = MinioAdmin(endpoint=self.endpoint.removeprefix("http://"), credentials=root, secure=False)
        secret = self.passwords()
        for user, bucket in S3_USERS.items():
            arns = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": arns}]}
            admin.policy_add(f"{user}-bucket", policy=policy)
            admin.user_add(user, secret[user])
            try:
                admin.attach_policy([f"{user}-bucket"], user=user)
            except MinioAdminException as exc:  # attached at an earlier start
                if "already" not in str(exc).lower():
                    raise

    def passwords(self) -> dict[str, str]:
        return passwords(self.data, S3_USERS)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['port']}"

    def env(self) -> dict[str, str]:
        return {"SHOP_S3_ENDPOINT": self.endpoint}

    def admin_env(self) -> dict[str, str]:
        """S3 settings with the root keys: devstack's own set-up and the tests' inspection."""
        return {**self.env(), "SHOP_S3_ACCESS_KEY": S3_ACCESS_KEY, "SHOP_S3_SECRET_KEY": S3_SECRET_KEY}

    def service_env(self, service: str) -> dict[str, str]:
        if service not in S3_USERS:
            return {}
        return {
            "SHOP_S3_BUCKET": S3_USERS[service],
            "SHOP_S3_ACCESS_KEY": service,
            "SHOP_S3_SECRET_KEY": self.passwords()[service],
        }


# --- Tracing: Jaeger v2, in memory -----------------------------------------------


class Jaeger(OnKafka):
    name = "jaeger"
    # Each span also goes to Kafka in Zipkin's format, for the trace UI (devstack/zipkin.py).

    def port_names(self) -> tuple[str, ...]:
        return ("otlp_grpc", "otlp_http", "query_http", "query_grpc", "health")

    def argv(self) -> list[str]:
        return [binary("jaeger"), "--config", str(REPO / "devstack" / "jaeger.yaml")]

    def process_env(self) -> dict[str, str]:
        return {
            "JAEGER_LISTEN_HOST": "127.0.0.1",
            "JAEGER_OTLP_GRPC_PORT": str(self.ports["otlp_grpc"]),
            "JAEGER_OTLP_HTTP_PORT": str(self.ports["otlp_http"]),
            "JAEGER_QUERY_HTTP_PORT": str(self.ports["query_http"]),
            "JAEGER_QUERY_GRPC_PORT": str(self.ports["query_grpc"]),
            "JAEGER_HEALTH_PORT": str(self.ports["health"]),
            "JAEGER_LOG_LEVEL": "warn",
            "JAEGER_KAFKA_BROKERS": self.kafka.bootstrap,
            "JAEGER_KAFKA_USERNAME": "jaeger",
            "JAEGER_KAFKA_PASSWORD": dev_kafka_password("jaeger"),
        }

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.query_url}/api/services", timeout=2) as response:
            json.load(response)
        return port_open(self.ports["otlp_grpc"])

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['query_http']}"

    def env(self) -> dict[str, str]:
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.ports['otlp_grpc']}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
