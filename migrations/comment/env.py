"""Alembic environment of comment_svc: the shared async runner (common/migrations.py)."""

from comment_svc.settings import DEFAULT_DATABASE_URL
from comment_svc.store import metadata
from common.migrations import run_env

run_env(DEFAULT_DATABASE_URL, target_metadata=metadata)
