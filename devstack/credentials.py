"""Passwords of the local cluster's store users (PostgreSQL roles, Redis and document-store
users, the object store's keys): generated once per cluster, kept in the server's state dir.

Nothing here is a shared default: each cluster (``.devstack/`` of ``make up``, each test
cluster's temporary directory) gets its own random passwords, readable by its owner only.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

FILE = "credentials.json"


def passwords(directory: Path, names: Iterable[str]) -> dict[str, str]:
    """A password per name, made on first use and the same ever after (restarts keep them)."""
    path = directory / FILE
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in names if name not in known]
    if missing:
        # URL-safe characters only: every password goes into connection URLs unescaped.
        known.update({name: secrets.token_urlsafe(24) for name in missing})
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(known, out, indent=2)
    return known
