"""Idempotency keys: a request with an ``Idempotency-Key`` claims it before its
work, and completes it with its response in the work's own transaction (or
releases it when the work fails), so a repeat answers with the first response.

Every claim gets a holder token of its own, a takeover too: only the current
holder completes, releases or lapses the key.  A request that reserves stock
under its resource id (an order) notes that id as a pending reservation with
the claim, and a takeover of a key whose holder outlived its lease works under
a fresh id: a reservation is never shared by two holders, the earlier holder's
note stays for the sweeper, and should the earlier holder still finish, it
finds the key no longer its own.  Without reserving, a takeover keeps the
earlier holder's resource id (a payment id: a retry reaches the processor with
the same idempotency key, and finds the payment recorded under it, if any).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

from common.errors import AbortedError
from order_svc import domain
from order_svc.domain import Claim, ClaimVerdict, Keyed, KeyRef, now
from order_svc.store import Store, Work


class Keys:
    def __init__(self, store: Store, lease_seconds: float) -> None:
        self.store = store
        self.lease_seconds = lease_seconds

    async def claim(self, user_id: uuid.UUID, scope: str, keyed: Keyed | None, *, reserving: bool = False) -> Claim:
        """Claim the key for this request, waiting for a concurrent repeat (a double
        click) to finish first; a request without a key works under a fresh id."""
        if keyed is None:
            return Claim(resource_id=uuid.uuid4())
        ref = KeyRef(user_id, scope, keyed.key)
        deadline = time.monotonic() + self.lease_seconds
        while True:
            claim = await self.claim_once(ref, keyed.request_hash, lease=self.lease_seconds, reserving=reserving)
            if not claim.busy:
                return claim
            if time.monotonic() > deadline:
                raise AbortedError("a request with this Idempotency-Key is still being processed; retry shortly")
            await asyncio.sleep(0.05)

    async def claim_once(self, ref: KeyRef, request_hash: str, *, lease: float, reserving: bool = False) -> Claim:
        """Claim a key for a new request, or learn what became of an earlier one
        (KeyReusedError when the key was used for another request)."""
        moment = now()
        holder, fresh = uuid.uuid4(), uuid.uuid4()
        until = moment + timedelta(seconds=lease)
        async with self.store.unit_of_work() as work:

            async def add(*, if_absent: bool) -> bool:
                return await work.add_key(
                    ref, request_hash=request_hash, resource_id=fresh, holder=holder, created_at=moment,
                    locked_until=until, if_absent=if_absent,
                )  # fmt: skip

            if await add(if_absent=True):
                claimed = fresh
            elif (stored := await work.lock_key(ref)) is None:  # expired and removed in between: claim afresh
                await add(if_absent=False)
                claimed = fresh
            else:
                verdict = domain.judge_claim(stored, request_hash, moment)
                if verdict is ClaimVerdict.MISMATCH:
                    raise domain.key_reused()
                if verdict is ClaimVerdict.REPLAY:
                    return Claim(resource_id=stored.resource_id, replay=stored.response)
                if verdict is ClaimVerdict.BUSY:
                    return Claim(resource_id=stored.resource_id, busy=True)
                claimed = fresh if reserving else stored.resource_id
                await work.hand_over_key(ref, resource_id=claimed, holder=holder, locked_until=until)
            if reserving:
                await work.note_pending_reservation(claimed)
        return Claim(resource_id=claimed, noted=reserving, holder=holder, ref=ref)

    async def replay(self, user_id: uuid.UUID, scope: str, keyed: Keyed | None) -> bytes | None:
        """The first response of a completed request with this key, before any other check."""
        if keyed is None:
            return None
        async with self.store.unit_of_work() as work:
            stored = await work.done_key(KeyRef(user_id, scope, keyed.key))
        return domain.replay_of(stored, keyed.request_hash)

    @staticmethod
    async def complete(work: Work, claim: Claim, response: bytes) -> bool:
        """Keep the response under the claimed key, in the caller's transaction; False
        when a retry took the key over meanwhile (True when the request named no key)."""
        ref = claim.held
        return ref is None or claim.holder is None or await work.complete_key(ref, claim.holder, response)

    async def release(self, claim: Claim) -> None:
        """Forget the claimed key of a request that failed, so a retry runs again; a
        key taken over in the meantime is left to its new holder."""
        if (ref := claim.held) is not None and claim.holder is not None:
            async with self.store.unit_of_work() as work:
                await work.release_key(ref, claim.holder)

    async def lapse(self, claim: Claim) -> None:
        """End the claim's lease now and keep the key: a retry takes it over at once
        under the same resource id (a payment whose outcome the processor has not
        given yet is asked about again with the same idempotency key)."""
        if (ref := claim.held) is not None and claim.holder is not None:
            async with self.store.unit_of_work() as work:
                await work.lapse_key(ref, claim.holder)
