"""argon2id password hashes, computed off the event loop.

Each hash takes tens of milliseconds and ``argon2_memory_kib`` of memory, so it
runs in a worker thread (``asyncio.to_thread``) and at most ``concurrency``
run at once.  The queue before them is bounded: with ``queue`` callers waiting
already, or after ``queue_wait`` seconds of waiting, a call is refused at once
with UNAVAILABLE "busy" and a retry delay, well before the caller's deadline
(the edge's is 5 s) instead of timing out behind the others.  Verifying against an unknown account still costs one full
verification (of a dummy hash), so the answer takes as long as for a wrong
password.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from common.errors import UnavailableError

SERVICE_BUSY = "SERVICE_BUSY"
BUSY_RETRY = 1.0  # seconds, the Retry-After of a busy answer


def busy() -> UnavailableError:
    return UnavailableError(
        "the service is busy checking passwords; try again in a moment", reason=SERVICE_BUSY, retry_after=BUSY_RETRY
    )


class Passwords:
    def __init__(
        self,
        *,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        concurrency: int = 0,
        queue: int = 16,
        queue_wait: float = 2.0,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._slots = asyncio.Semaphore(concurrency or os.cpu_count() or 2)
        self._queue = queue
        self._queue_wait = queue_wait
        self._waiting = 0
        # A hash of a random secret: what an unknown email is verified against.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(24))

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self._waiting >= self._queue:
            raise busy()
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self._queue_wait)
        except TimeoutError:
            raise busy() from None
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    async def hash(self, password: str) -> str:
        async with self._slot():
            return await asyncio.to_thread(self._hasher.hash, password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; ``None`` (no such account) is always False
        but costs the same as a real verification."""
        async with self._slot():
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
