"""Whether a service's Alembic migrations build the tables its store declares."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData


def schema_drift(url: str, metadata: MetaData) -> list[Any]:
    """What Alembic's autogenerate would change to make the database at ``url`` match
    ``metadata`` (empty when the migrations and the store agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()
