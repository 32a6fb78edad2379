"""argon2id password hashes, computed off the event loop.

Each hash takes tens of milliseconds and ``argon2_memory_kib`` of memory, so it
runs in a worker thread (``asyncio.to_thread``) and at most ``concurrency``
run at once.  Verifying against an unknown account still costs one full
verification (of a dummy hash), so the answer takes as long as for a wrong
password.
"""

from __future__ import annotations

import asyncio
import os
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Passwords:
    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int, concurrency: int = 0) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._slots = asyncio.Semaphore(concurrency or os.cpu_count() or 2)
        # A hash of a random secret: what an unknown email is verified against.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(24))

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; ``None`` (no such account) is always False
        but costs the same as a real verification."""
        async with self._slots:
            if password_hash is None:
                await asyncio.to_thread(self._verify, self._dummy, password)
                return False
            return await asyncio.to_thread(self._verify, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether a stored hash was made with other parameters than today's."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
