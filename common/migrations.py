"""Alembic for the PostgreSQL-backed services (user, order, comment).

Each service keeps its migrations in ``migrations/<service>/`` and its
``env.py`` is two lines::

    from common.migrations import run_env
    run_env(DEFAULT_DATABASE_URL, target_metadata=store.metadata)

``run_env`` runs the migrations on the async engine (psycopg 3) against
``SHOP_DATABASE_URL``, holding an advisory lock so two migrators (two replicas,
a job and a developer) never run at once.  At start, a service calls
:func:`require_schema_at_head` and refuses to serve a database whose schema is
not the one its code expects, naming the command that fixes it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from logging.config import fileConfig
from pathlib import Path

from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

REPO = Path(__file__).resolve().parents[1]
# pg_advisory_xact_lock key held while migrating (per database).
MIGRATION_LOCK = 0x53_48_4F_50_4D_49_47  # "SHOPMIG"


def migrations_ini(service: str) -> Path:
    """``migrations/<service>/alembic.ini`` for "user_svc" or "user"."""
    return REPO / "migrations" / service.removesuffix("_svc") / "alembic.ini"


def upgrade_command(ini: Path) -> str:
    """The command an operator runs, relative to the repo root when possible."""
    try:
        shown = ini.resolve().relative_to(REPO)
    except ValueError:
        shown = ini
    return f"alembic -c {shown} upgrade head"


def database_url(default: str) -> str:
    return os.environ.get("SHOP_DATABASE_URL") or default


# --- env.py ------------------------------------------------------------------------


def run_env(default_url: str, target_metadata: MetaData | None = None) -> None:
    """The body of a service's ``env.py``.

    The URL is, in order: ``sqlalchemy.url`` set on the Alembic config by a
    caller, ``SHOP_DATABASE_URL``, the service's default.  A caller that already
    holds a connection (sync, or an async one through ``run_sync``) may pass it as
    ``config.attributes["connection"]``.
    """
    from alembic import context

    config = context.config
    if config.config_file_name is not None and config.attributes.get("configure_logger", True):
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = config.get_main_option("sqlalchemy.url") or database_url(default_url)

    if context.is_offline_mode():
        context.configure(
            url=url, target_metadata=target_metadata, literal_binds=True, dialect_opts={"paramstyle": "named"}
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _migrate(connection, target_metadata)
    else:
        asyncio.run(_migrate_async(url, target_metadata))


def _migrate(connection: Connection, target_metadata: MetaData | None) -> None:
    from alembic import context

    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def _migrate_async(url: str, target_metadata: MetaData | None) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate, target_metadata)
    finally:
        await engine.dispose()


# --- the start-up check --------------------------------------------------------------


@dataclass(frozen=True)
class SchemaStatus:
    database: str
    current: tuple[str, ...]  # revisions recorded in the database (empty: never migrated)
    heads: tuple[str, ...]  # revisions the code's migrations end at
    unknown: tuple[str, ...]  # recorded revisions the code does not know (newer code migrated it)

    @property
    def at_head(self) -> bool:
        return set(self.current) == set(self.heads)


class SchemaNotCurrentError(RuntimeError):
    """The database's schema is not the one this code expects."""


async def schema_status(engine: AsyncEngine, ini: Path) -> SchemaStatus:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(Config(str(ini)))
    heads = tuple(script.get_heads())

    def current(connection: Connection) -> tuple[str, ...]:
        return tuple(MigrationContext.configure(connection).get_current_heads())

    async with engine.connect() as connection:
        recorded = await connection.run_sync(current)
    known = {revision.revision for revision in script.walk_revisions()}
    return SchemaStatus(
        database=make_url(str(engine.url)).database or "?",
        current=recorded,
        heads=heads,
        unknown=tuple(rev for rev in recorded if rev not in known),
    )


async def require_schema_at_head(engine: AsyncEngine, ini: Path) -> SchemaStatus:
    """Raise :class:`SchemaNotCurrentError` (with the command to run) unless the
    database is at the head revision of ``ini``'s migrations."""
    status = await schema_status(engine, ini)
    if status.at_head:
        return status
    command = upgrade_command(ini)
    heads = ", ".join(status.heads)
    if status.unknown:
        raise SchemaNotCurrentError(
            f"database {status.database!r} is at revision {', '.join(status.unknown)}, which this code does not "
            f"know (it expects {heads}); was it migrated by newer code? Deploy matching code, or run "
            f"`{command}` from {REPO} with this version"
        )
    found = ", ".join(status.current) if status.current else "no revision (never migrated)"
    raise SchemaNotCurrentError(
        f"database {status.database!r} is not migrated: it is at {found}, this code needs {heads}. "
        f"Run `{command}` from {REPO} (with SHOP_DATABASE_URL pointing at it), then start again"
    )


async def check_database(engine: AsyncEngine, service: str) -> None:
    """At a service's start: the database is reachable and migrated to head, or
    :class:`SchemaNotCurrentError` says what is wrong and which command fixes it.

    The check runs in a child process (``python -m common.migrations check
    <service>``): Alembic and Mako, about 12 MB, are needed only for it and
    would otherwise stay in the service's memory for its whole life."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "common.migrations", "check", service,
        env={**os.environ, "SHOP_DATABASE_URL": engine.url.render_as_string(hide_password=False)},
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await child.communicate()
    if child.returncode == 0:
        return
    if child.returncode == NOT_CURRENT:
        raise SchemaNotCurrentError(out.decode().strip())
    raise SchemaNotCurrentError(f"the schema check failed (exit {child.returncode}): {err.decode().strip()[-2000:]}")


NOT_CURRENT = 3  # the child's exit status when it printed a SchemaNotCurrentError


async def _check_here(service: str) -> int:
    from sqlalchemy import exc as sa_exc

    engine = create_async_engine(database_url(""), poolclass=pool.NullPool)
    try:
        await require_schema_at_head(engine, migrations_ini(service))
    except SchemaNotCurrentError as exc:
        print(exc)
        return NOT_CURRENT
    except (OSError, sa_exc.DBAPIError) as exc:
        print(f"cannot reach the database {engine.url.render_as_string(hide_password=True)}: {exc}")
        return NOT_CURRENT
    finally:
        await engine.dispose()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "check":
        sys.exit("usage: python -m common.migrations check <service>   (SHOP_DATABASE_URL names the database)")
    sys.exit(asyncio.run(_check_here(sys.argv[2])))
