"""Alembic environment of user_svc: the shared async runner (common/migrations.py)."""

from common.migrations import run_env
from user_svc.settings import DEFAULT_DATABASE_URL
from user_svc.store import metadata

run_env(DEFAULT_DATABASE_URL, target_metadata=metadata)
