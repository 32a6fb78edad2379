"""The document store of the local cluster: FerretDB v2 in front of its own PostgreSQL.

``DocumentPostgres`` is a PostgreSQL 15 data directory of its own with the DocumentDB
extension (built and installed by ``devstack/provision/documentdb.sh``); ``FerretDB``
serves the MongoDB wire protocol over it (FerretDB's own command, built by
``devstack/provision/go_tools.sh``), with authentication on: a client signs in (SCRAM-SHA-256)
as a user that DocumentDB keeps as a PostgreSQL role.  The services talk to FerretDB only
(``SHOP_MONGO_URL``, with the service's own user and password).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from devstack.credentials import passwords
from devstack.process import port_open
from devstack.servers import Postgres, Server
from devstack.servers.base import binary
from devstack.servers.postgres import UNSAFE_FAST_POSTGRES, pg_bindir

# The document store's users: product_svc, and devstack's own (readiness, the tests' look
# into the catalog).  FerretDB 2.5 checks who a client is, not what it may do: every signed-in
# user acts through FerretDB's PostgreSQL connection, so both may read and write every database.
DOCSTORE_ADMIN = "devstack"
DOCSTORE_USERS = (DOCSTORE_ADMIN, "product_svc")
# DocumentDB allows these roles or read-only ones alone (FerretDB's createUser default).
READ_WRITE = [{"role": "clusterAdmin", "db": "admin"}, {"role": "readWriteAnyDatabase", "db": "admin"}]

# DocumentDB's own settings (its scripts/utils.sh and packaging), as FerretDB ships them.
DOCUMENTDB_SETTINGS = {
    "documentdb.enableBackgroundWorker": "true",
    "documentdb.enableBackgroundWorkerJobs": "true",
    "documentdb.enableCompact": "true",
    "documentdb.enableLetAndCollationForQueryMatch": "true",
    "documentdb.enableNowSystemVariable": "true",
    "documentdb.enableSortbyIdPushDownToPrimaryKey": "true",
    "documentdb.enableSchemaValidation": "true",
    "documentdb.enableBypassDocumentValidation": "true",
    "documentdb.enableUserCrud": "true",
    "documentdb.maxUserLimit": "100",
    # Debian 12's pg_cron is 1.4.2, which rejects second-granularity schedules ("2 seconds",
    # pg_cron >= 1.5): with 60 DocumentDB schedules its index-build job as "* * * * *".
    "documentdb.indexBuildScheduleInSec": "60",
}

# Not used: DocumentDB's extended RUM access method with its composite opclass, which serves a
# sorted page from an index in index order (the team's notes in shared/vendor/README.md,
# "Index-ordered sorts").  Under concurrent updates of indexed fields its ordered scans fail with "lock
# BufferContent is not held" (thousands of failed listings in a minute of catalog edits,
# measured here), so the store runs DocumentDB as FerretDB ships it (README "The document store").


class DocumentPostgres(Postgres):
    """PostgreSQL with DocumentDB, for FerretDB alone (the services never connect to it)."""

    name = "docstore_pg"

    def __init__(self, data: Path, ports: dict[str, int] | None = None) -> None:
        super().__init__(data, ports)
        # Set once the extensions exist (FerretDB's connections fail their check until then).
        self.extensions_ready = False

    def settings(self) -> dict[str, str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.pgdata),
            # FerretDB's pool: 10 to 50 connections; pg_cron and DocumentDB's workers a few.
            "max_connections": "100",
            "shared_buffers": "128MB",
            "shared_preload_libraries": "pg_cron,pg_documentdb_core,pg_documentdb",
            "cron.database_name": "postgres",
            # DocumentDB runs some commands (cursors) over a libpq connection back to this server,
            # as the backend's OS user: over the socket, where that user is the superuser
            # (TCP is for passwords only, see Postgres.write_access_rules).
            "documentdb.localhost_connection_string": f"host={self.pgdata} port={self.ports['port']}",
            **DOCUMENTDB_SETTINGS,
        }
        return settings

    def argv(self) -> list[str]:
        argv = [str(pg_bindir() / "postgres"), "-D", str(self.pgdata), "-p", str(self.ports["port"])]
        for key, value in self.settings().items():
            argv += ["-c", f"{key}={value}"]
        return argv + list(UNSAFE_FAST_POSTGRES if self.unsafe_fast_storage else ())

    def prepare(self) -> None:
        pg = pg_bindir().parent
        if not (pg / "lib" / "pg_documentdb.so").exists():
            raise FileNotFoundError(f"DocumentDB is not installed in {pg}: run `make deps` (provision/documentdb.sh)")
        self.extensions_ready = False
        super().prepare()

    def after_ready(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS documentdb CASCADE")
            # The users, as FerretDB's createUser makes them (DocumentDB's create_user: a
            # PostgreSQL role with a SCRAM secret); at a later start, their passwords again.
            roles = {row[0] for row in conn.execute("select rolname from pg_roles")}
            for user, secret in self.passwords().items():
                spec: dict[str, object]
                if user in roles:
                    spec = {"updateUser": user, "pwd": secret}
                else:
                    spec = {"createUser": user, "pwd": secret, "roles": READ_WRITE}
                verb = "update_user" if user in roles else "create_user"
                conn.execute(f"select documentdb_api.{verb}(%s::documentdb_core.bson)", (json.dumps(spec),))
        self.extensions_ready = True

    def passwords(self) -> dict[str, str]:
        return passwords(self.data, DOCSTORE_USERS)

    def url(self, database: str = "postgres") -> str:
        """The PostgreSQL URL FerretDB connects with: the superuser over the Unix socket (not
        the SQLAlchemy URL of ``Postgres.url``)."""
        return f"postgres://postgres@/{database}?host={quote(str(self.pgdata))}&port={self.ports['port']}"

    def env(self) -> dict[str, str]:
        return {}  # the services reach it through FerretDB only


class FerretDB(Server):
    """FerretDB v2 (MongoDB wire protocol) over a ``DocumentPostgres``."""

    name = "mongo"
    needs = ("docstore_pg",)
    postgres: DocumentPostgres

    def use(self, servers: dict[str, Server]) -> None:
        postgres = servers["docstore_pg"]
        assert isinstance(postgres, DocumentPostgres)
        self.postgres = postgres

    def argv(self) -> list[str]:
        (self.data / "state").mkdir(parents=True, exist_ok=True)
        return [
            binary("ferretdb"),
            f"--listen-addr=127.0.0.1:{self.ports['port']}",
            # No connections opened ahead of use (FerretDB's default is 10, from its start, which
            # fails noisily while PostgreSQL starts beside it); up to 50 as clients need them.
            f"--postgresql-url={self.postgres.url()}&pool_min_conns=0",
            f"--state-dir={self.data / 'state'}",
            "--log-level=warn",
            "--telemetry=disable",
            # Its metrics and pprof listener (127.0.0.1:8088 by default): not wanted here.
            "--debug-addr=-",
            # Authentication is on (FerretDB's default): no anonymous client reads or writes.
            "--auth",
        ]

    def ready(self) -> bool:
        import pymongo

        if not self.postgres.extensions_ready or not port_open(self.ports["port"]):
            return False
        # Signing in takes a PostgreSQL connection, which FerretDB checks against DocumentDB.
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=1000)
        try:
            client.admin.command("listDatabases", nameOnly=True)
        finally:
            client.close()
        return True

    def user_url(self, user: str, password: str | None = None) -> str:
        """A MongoDB URL as ``user``, with its password unless another is given."""
        secret = self.postgres.passwords()[user] if password is None else password
        return f"mongodb://{user}:{quote(secret, safe='')}@127.0.0.1:{self.ports['port']}/?authMechanism=SCRAM-SHA-256"

    @property
    def url(self) -> str:
        """devstack's own user (the tests' look into the store)."""
        return self.user_url(DOCSTORE_ADMIN)

    def service_env(self, service: str) -> dict[str, str]:
        if service not in DOCSTORE_USERS:
            return {}
        return {"SHOP_MONGO_URL": self.user_url(service)}
