"""The payment provider: the one place that talks to a payment processor.

``TestProcessor`` stands for a real one (Stripe, Adyen…) behind the same
interface, with deterministic tokens so every outcome can be exercised:

=========================  =======================================
token                      outcome
=========================  =======================================
``tok_approve``            approved (charged)
``tok_decline``            declined: card declined
``tok_insufficient_funds`` declined: insufficient funds
``tok_processor_error``    the processor failed; nothing charged
=========================  =======================================

Charges carry an idempotency key (the payment id), as real processors take,
so a retried charge never charges twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Protocol

from common.money import Money


class Outcome(StrEnum):
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    FAILED = "FAILED"


class DeclineReason(StrEnum):
    CARD_DECLINED = "CARD_DECLINED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    PROCESSOR_ERROR = "PROCESSOR_ERROR"


@dataclass(frozen=True)
class ChargeResult:
    outcome: Outcome
    reference: str = ""
    decline_reason: DeclineReason | None = None


class Processor(Protocol):
    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult: ...

    async def refund(self, reference: str, amount: Money) -> str: ...


class UnknownPaymentMethod(ValueError):
    pass


class TestProcessor:
    """Deterministic stand-in for a card processor."""

    TOKENS: ClassVar[dict[str, ChargeResult]] = {
        "tok_approve": ChargeResult(Outcome.APPROVED),
        "tok_decline": ChargeResult(Outcome.DECLINED, decline_reason=DeclineReason.CARD_DECLINED),
        "tok_insufficient_funds": ChargeResult(Outcome.DECLINED, decline_reason=DeclineReason.INSUFFICIENT_FUNDS),
        "tok_processor_error": ChargeResult(Outcome.FAILED, decline_reason=DeclineReason.PROCESSOR_ERROR),
    }

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        result = self.TOKENS.get(token)
        if result is None:
            raise UnknownPaymentMethod(f"unknown payment method token; test tokens are {', '.join(self.TOKENS)}")
        if result.outcome is Outcome.APPROVED:
            # The same key always gets the same charge reference: no double charge.
            reference = "ch_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
            return ChargeResult(Outcome.APPROVED, reference=reference)
        return result

    async def refund(self, reference: str, amount: Money) -> str:
        return "re_" + hashlib.sha256(reference.encode()).hexdigest()[:24]
