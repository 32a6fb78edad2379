"""PostgreSQL: one database and login role per PostgreSQL-backed service."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from devstack.credentials import passwords
from devstack.process import as_user, tail
from devstack.servers.base import Server, run_logged

# Databases of the PostgreSQL-backed services, one each, owned by a login role of the same
# name: the service connects as that role (password over TCP) and migrates its own schema.
PG_DATABASES = ("shop_user", "shop_order", "shop_comment")


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
            code = run_logged(initdb, out)
        if code != 0:
            raise RuntimeError(f"initdb failed ({code}):\n{tail(self.log)}")

    def write_access_rules(self) -> None:
        """pg_hba.conf: the superuser only over the Unix socket in the data dir (mode 0700),
        as the OS user that runs the cluster (or root); every other role with its password
        (SCRAM) over TCP; no trust anywhere.  Rewritten at each start, so an older data dir
        gets the rules too."""
        me = pwd.getpwuid(os.geteuid()).pw_name
        hba = [
            "# devstack (devstack/servers/postgres.py Postgres.write_access_rules); rewritten at each start",
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
