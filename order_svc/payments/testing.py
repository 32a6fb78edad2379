"""The test processor: deterministic tokens, so every outcome can be exercised,
and no money moves.

=========================  =======================================
token                      outcome
=========================  =======================================
``tok_approve``            approved (charged)
``tok_decline``            declined: card declined
``tok_insufficient_funds`` declined: insufficient funds
``tok_processor_error``    the processor failed; nothing charged
=========================  =======================================

The same payment id always gets the same charge reference, as a real
processor's idempotency key would.  Production refuses it
(``order_svc/settings.py``) unless a staging deployment allows it.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import ClassVar

from common.money import Money
from order_svc.payments import Charge, ChargeResult, DeclineReason, Outcome, UnknownPaymentMethodError


class TestProcessor:
    """Deterministic stand-in for a card processor."""

    __test__ = False  # not a pytest test class
    name = "test"

    TOKENS: ClassVar[dict[str, ChargeResult]] = {
        "tok_approve": ChargeResult(Outcome.APPROVED),
        "tok_decline": ChargeResult(Outcome.DECLINED, decline_reason=DeclineReason.CARD_DECLINED),
        "tok_insufficient_funds": ChargeResult(Outcome.DECLINED, decline_reason=DeclineReason.INSUFFICIENT_FUNDS),
        "tok_processor_error": ChargeResult(Outcome.FAILED, decline_reason=DeclineReason.PROCESSOR_ERROR),
    }

    async def charge(self, charge: Charge) -> ChargeResult:
        result = self.TOKENS.get(charge.token)
        if result is None:
            raise UnknownPaymentMethodError(f"unknown payment method token; test tokens are {', '.join(self.TOKENS)}")
        if result.outcome is Outcome.APPROVED:
            reference = "ch_" + hashlib.sha256(str(charge.payment_id).encode()).hexdigest()[:24]
            return ChargeResult(Outcome.APPROVED, reference=reference)
        return result

    async def refund(self, reference: str, amount: Money, payment_id: uuid.UUID) -> str:
        return "re_" + hashlib.sha256(reference.encode()).hexdigest()[:24]

    async def close(self) -> None:
        return None
