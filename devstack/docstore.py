"""The document store of the local cluster: FerretDB v2 in front of its own PostgreSQL.

``DocumentPostgres`` is a PostgreSQL 15 data directory of its own with the DocumentDB
extension (built and installed by ``devstack/provision/documentdb.sh``); ``FerretDB``
serves the MongoDB wire protocol over it (the wrapper in ``devstack/ferretdb``).  The
services talk to FerretDB only (``SHOP_MONGO_URL``).
"""

from __future__ import annotations

from pathlib import Path

from devstack.process import port_open
from devstack.servers import UNSAFE_FAST_POSTGRES, Postgres, Server, binary, pg_bindir

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
        self.extensions_ready = True

    def url(self, database: str = "postgres") -> str:
        """The PostgreSQL URL FerretDB connects with (not the SQLAlchemy URL of ``Postgres.url``)."""
        return f"postgres://postgres@127.0.0.1:{self.ports['port']}/{database}"

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
        return [
            binary("ferretdb"),
            "-listen-addr",
            f"127.0.0.1:{self.ports['port']}",
            "-postgresql-url",
            # No connections opened ahead of use (FerretDB's default is 10, from its start, which
            # fails noisily while PostgreSQL starts beside it); up to 50 as clients need them.
            self.postgres.url() + "?pool_min_conns=0",
            "-state-dir",
            str(self.data / "state"),
            "-log-level",
            "warn",
        ]

    def ready(self) -> bool:
        import pymongo

        if not self.postgres.extensions_ready or not port_open(self.ports["port"]):
            return False
        # A ping takes a PostgreSQL connection, which FerretDB checks against DocumentDB.
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=1000)
        try:
            client.admin.command("ping")
        finally:
            client.close()
        return True

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.ports['port']}/"

    def env(self) -> dict[str, str]:
        return {"SHOP_MONGO_URL": self.url}
