"""Alembic environment of order_svc: the shared async runner (common/migrations.py)."""

from common.migrations import run_env
from order_svc.settings import DEFAULT_DATABASE_URL
from order_svc.store.tables import metadata

run_env(DEFAULT_DATABASE_URL, target_metadata=metadata)
