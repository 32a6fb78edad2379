"""Payments against real servers: the Stripe adapter against stripe-mock (started by
devstack), and order_svc's pay and cancel use cases with key holders, recorded
payments and refunds, on the cluster's PostgreSQL and product_svc.

stripe-mock validates each request against Stripe's API and answers fixtures; it
keeps no state and no card changes its answer.  So the outcomes come from the
fixture a server answers with (devstack/stripe_mock.py): the cluster's server
answers a confirmation as ``succeeded``; servers started here answer with the
bundled fixture (``requires_payment_method``: a failed confirmation) or with a
card error's ``insufficient_funds``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from shop.order.v1 import order_pb2

from common.clients import pg_engine
from common.errors import (
    DomainError,
    FailedPreconditionError,
    InvalidArgumentError,
    UnavailableError,
    problem_from_rpc_error,
)
from common.money import Money
from devstack.cluster import Cluster
from devstack.process import free_port
from devstack.stripe_mock import DEV_SECRET_KEY, INSUFFICIENT_FUNDS, StripeMock
from order_svc import domain as order_domain
from order_svc.billing import Billing
from order_svc.clients import ProductClient
from order_svc.domain import Caller, Claim, Keyed, KeyRef, PaymentStatus
from order_svc.orders import Orders
from order_svc.payments import Charge, DeclineReason, Outcome, Processors, RefundFailedError
from order_svc.payments.stripe_api import StripeProcessor, idempotency_key
from order_svc.payments.testing import TestProcessor
from order_svc.settings import OrderSettings
from order_svc.store import Store
from tests.integration.test_order_svc import Shop
from tests.schema_helpers import schema_drift

EUR_25 = Money(2599, "EUR")


@pytest.fixture(scope="module")
def stack(services) -> Cluster:
    return services("product_svc", "order_svc")


@pytest.fixture
async def shop(stack: Cluster) -> AsyncIterator[Shop]:
    shop = Shop(stack)
    yield shop
    await shop.close()


def _started(root: Path, payment_intent: dict[str, object]) -> StripeMock:
    server = StripeMock(root / "stripe_mock", payment_intent=payment_intent)
    server.start()
    server.wait()
    return server


@pytest.fixture(scope="module")
def declining(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StripeMock]:
    """A stripe-mock answering with its bundled PaymentIntent (requires_payment_method)."""
    server = _started(tmp_path_factory.mktemp("declining"), {})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def short_of_funds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StripeMock]:
    server = _started(tmp_path_factory.mktemp("short"), INSUFFICIENT_FUNDS)
    yield server
    server.stop()


@pytest.fixture
async def stripe(stripe_mock: StripeMock) -> AsyncIterator[StripeProcessor]:
    processor = StripeProcessor(DEV_SECRET_KEY, stripe_mock.url, max_network_retries=0)
    yield processor
    await processor.close()


def charge(payment_id: uuid.UUID | None = None, token: str = "pm_card_visa") -> Charge:
    return Charge(token, EUR_25, payment_id or uuid.uuid4(), uuid.uuid4())


# --- the adapter against stripe-mock -----------------------------------------------------------


async def test_stripe_approves_a_confirmed_payment_intent(stripe: StripeProcessor) -> None:
    result = await stripe.charge(charge())
    assert result.outcome is Outcome.APPROVED
    assert result.reference.startswith("pi_")


async def test_stripe_declines_a_failed_confirmation(declining: StripeMock, short_of_funds: StripeMock) -> None:
    for server, reason in (
        (declining, DeclineReason.CARD_DECLINED),
        (short_of_funds, DeclineReason.INSUFFICIENT_FUNDS),
    ):
        processor = StripeProcessor(DEV_SECRET_KEY, server.url, max_network_retries=0)
        try:
            result = await processor.charge(charge())
        finally:
            await processor.close()
        assert (result.outcome, result.decline_reason) == (Outcome.DECLINED, reason)
        assert result.reference.startswith("pi_")


async def test_stripe_refunds_a_payment_intent(stripe: StripeProcessor) -> None:
    taken = await stripe.charge(charge())
    refund = await stripe.refund(taken.reference, EUR_25, uuid.uuid4())
    assert refund.startswith("re_")


async def test_a_retried_charge_reaches_stripe_with_the_same_idempotency_key(stripe: StripeProcessor) -> None:
    payment_id = uuid.uuid4()
    first = await stripe.charge(charge(payment_id))
    again = await stripe.charge(charge(payment_id))
    other = await stripe.charge(charge())
    assert first.processor_key == again.processor_key == idempotency_key("charge", payment_id)
    assert other.processor_key not in ("", first.processor_key)


async def test_stripe_errors_become_outcomes(stripe_mock: StripeMock) -> None:
    """Refused before charging (a wrong key: stripe-mock answers 401) is FAILED; no
    answer at all (nothing listens) is UNKNOWN: it may have charged."""
    wrong_key = StripeProcessor("sk_live_123", stripe_mock.url, max_network_retries=0)
    nobody = StripeProcessor(DEV_SECRET_KEY, f"http://127.0.0.1:{free_port()}", max_network_retries=0)
    try:
        refused = await wrong_key.charge(charge())
        lost = await nobody.charge(charge())
        with pytest.raises(RefundFailedError):
            await nobody.refund("pi_123", EUR_25, uuid.uuid4())
    finally:
        await wrong_key.close()
        await nobody.close()
    assert (refused.outcome, refused.decline_reason) == (Outcome.FAILED, DeclineReason.PROCESSOR_ERROR)
    assert lost.outcome is Outcome.UNKNOWN


# --- pay and cancel through the use cases ----------------------------------------------------


class InProcess:
    """order_svc's use cases in this process, on the cluster's database and product_svc,
    with the processors a test names."""

    def __init__(self, shop: Shop, postgres) -> None:
        self.engine = pg_engine(postgres.url("shop_order"), pool_size=2)
        self.channel = shop.cluster.channel("product_svc", identity="order_svc")
        self.settings = OrderSettings(database_url=postgres.url("shop_order"))

    def orders(self, *processors: object) -> Orders:
        chosen = Processors(*processors)  # type: ignore[arg-type]
        return Orders(Store(self.engine), ProductClient(self.channel, 5.0), chosen, self.settings)

    def billing(self, *processors: object) -> Billing:
        return Billing(self.orders(*processors))

    async def close(self) -> None:
        await self.channel.close()
        await self.engine.dispose()


@pytest.fixture
async def local(shop: Shop, postgres) -> AsyncIterator[InProcess]:
    made = InProcess(shop, postgres)
    yield made
    await made.close()


def render(order) -> bytes:
    return order_pb2.PayOrderResponse(order=order_pb2.Order(id=str(order.id))).SerializeToString()


async def placed(shop: Shop) -> tuple[Caller, str, order_pb2.Order]:
    product = await shop.product(stock=5, price=2100)
    user_id, buyer = shop.ids.customer()
    order = await shop.order(buyer, (product, 1))
    return Caller(uuid.UUID(user_id)), product, order


def payment_rows(postgres, order_id: str) -> list[tuple[uuid.UUID, str, str]]:
    with psycopg.connect(postgres.dsn("shop_order"), autocommit=True) as conn:
        rows = conn.execute(
            "select id, status, processor from payments where order_id = %s order by created_at", (order_id,)
        )
        return [(row[0], row[1], row[2]) for row in rows]


def key_rows(postgres, user_id: uuid.UUID) -> list[tuple[uuid.UUID, bool]]:
    with psycopg.connect(postgres.dsn("shop_order"), autocommit=True) as conn:
        rows = conn.execute("select resource_id, done from idempotency_keys where user_id = %s", (user_id,))
        return [(row[0], row[1]) for row in rows]


async def test_paid_through_stripe_and_refunded_through_stripe(
    shop: Shop, postgres, local: InProcess, stripe: StripeProcessor
) -> None:
    caller, _, order = await placed(shop)
    billing = local.billing(stripe)
    paid = await billing.pay(caller, uuid.UUID(order.id), "pm_card_visa", None, render)
    assert not isinstance(paid, bytes)
    record, payment = paid
    assert record.status.value == "PAID" and payment.processor == "stripe"
    assert payment.provider_reference.startswith("pi_")
    cancelled = await billing.orders.cancel(caller, uuid.UUID(order.id), "changed my mind")
    assert cancelled.refunded and cancelled.status.value == "CANCELLED"
    assert payment_rows(postgres, order.id) == [(payment.id, "REFUNDED", "stripe")]


async def test_a_payment_is_refunded_by_the_processor_that_took_it(
    shop: Shop, postgres, local: InProcess, stripe: StripeProcessor
) -> None:
    """A test-processor payment stays the test processor's to refund after the shop
    switched to Stripe: without it configured the refund is refused and nothing changes."""
    caller, _, order = await placed(shop)
    user = shop.ids.metadata(str(caller.user_id))
    await shop.pay(user, order.id, "tok_approve")  # the cluster's order_svc: the test processor
    with pytest.raises(RefundFailedError):
        await local.orders(stripe).cancel(caller, uuid.UUID(order.id), "")
    assert [row[1:] for row in payment_rows(postgres, order.id)] == [("APPROVED", "test")]
    cancelled = await local.orders(stripe, TestProcessor()).cancel(caller, uuid.UUID(order.id), "")
    assert cancelled.refunded
    assert [row[1:] for row in payment_rows(postgres, order.id)] == [("REFUNDED", "test")]


async def test_no_answer_keeps_the_key_and_its_retry_settles_the_same_payment(
    shop: Shop, postgres, local: InProcess, stripe: StripeProcessor
) -> None:
    caller, _, order = await placed(shop)
    order_id, keyed = uuid.UUID(order.id), Keyed(key=f"pay-{uuid.uuid4()}", request_hash="h")
    nobody = StripeProcessor(DEV_SECRET_KEY, f"http://127.0.0.1:{free_port()}", max_network_retries=0)
    try:
        with pytest.raises(UnavailableError) as lost:
            await local.billing(nobody).pay(caller, order_id, "pm_card_visa", keyed, render)
    finally:
        await nobody.close()
    assert lost.value.reason == "PAYMENT_OUTCOME_UNKNOWN"
    ((payment_id, status, _),) = payment_rows(postgres, order.id)
    assert status == "PENDING"
    assert key_rows(postgres, caller.user_id) == [(payment_id, False)]  # kept for the retry
    with pytest.raises(FailedPreconditionError) as other:  # another key must not charge beside it
        await local.billing(stripe).pay(caller, order_id, "pm_card_visa", Keyed("other", "h"), render)
    assert other.value.reason == "PAYMENT_PENDING"
    retried = await local.billing(stripe).pay(caller, order_id, "pm_card_visa", keyed, render)
    assert not isinstance(retried, bytes) and retried[1].id == payment_id
    assert payment_rows(postgres, order.id) == [(payment_id, "APPROVED", "stripe")]
    assert key_rows(postgres, caller.user_id) == [(payment_id, True)]


# --- takeovers of a payment key -------------------------------------------------------------------


async def two_holders(billing: Billing, caller: Caller, order_id: uuid.UUID, key: str) -> tuple[Claim, Claim]:
    """A holder whose lease ran out while it was charging, and the retry that took its key over."""
    ref = KeyRef(caller.user_id, f"pay:{order_id}", key)
    slow = await billing.keys.claim_once(ref, "h", lease=0)
    retry = await billing.keys.claim_once(ref, "h", lease=60)
    assert isinstance(slow, Claim) and isinstance(retry, Claim)
    assert retry.resource_id == slow.resource_id and retry.holder != slow.holder  # same payment, own holder
    return slow, retry


async def test_a_lapsed_holder_cannot_free_the_new_holders_key(shop: Shop, postgres, local: InProcess) -> None:
    caller, _, order = await placed(shop)
    billing, order_id, key = local.billing(TestProcessor()), uuid.UUID(order.id), f"pay-{uuid.uuid4()}"
    slow, retry = await two_holders(billing, caller, order_id, key)
    _, declined, _ = await billing._pay(caller, order_id, "tok_decline", slow, render)
    assert declined.status is PaymentStatus.DECLINED  # recorded; pay reports it, then frees its key:
    assert slow.holder is not None
    await billing.keys.release(slow)
    assert key_rows(postgres, caller.user_id) == [(retry.resource_id, False)]  # still the retry's
    # The retry finds the decline recorded under its payment id: the same answer, never INTERNAL.
    _, payment, result = await billing._pay(caller, order_id, "tok_decline", retry, render)
    assert result is None and payment.status is PaymentStatus.DECLINED
    assert [row[:2] for row in payment_rows(postgres, order.id)] == [(retry.resource_id, "DECLINED")]


async def test_a_second_pay_answers_from_the_recorded_payment(shop: Shop, postgres, local: InProcess) -> None:
    caller, _, order = await placed(shop)
    billing, order_id, key = local.billing(TestProcessor()), uuid.UUID(order.id), f"pay-{uuid.uuid4()}"
    slow, retry = await two_holders(billing, caller, order_id, key)
    first, charged, _ = await billing._pay(caller, order_id, "tok_approve", slow, render)
    assert first.status.value == "PAID"
    assert key_rows(postgres, caller.user_id) == [(retry.resource_id, False)]  # the slow one could not complete it
    again, answered, result = await billing._pay(caller, order_id, "tok_approve", retry, render)
    assert result is None and answered.id == charged.id and again.status.value == "PAID"
    assert key_rows(postgres, caller.user_id) == [(charged.id, True)]
    assert [row[:2] for row in payment_rows(postgres, order.id)] == [(charged.id, "APPROVED")]


def dead_payer(postgres, user_id: str, order_id: str, request: order_pb2.PayOrderRequest, status: str) -> str:
    """What a pay leaves when its lease ran out and it recorded its payment with the
    key already taken by another: the payment, and the key (lapsed, not completed)."""
    payment_id = str(uuid.uuid4())
    request_hash = order_domain.fingerprint(request.SerializeToString(deterministic=True))
    with psycopg.connect(postgres.dsn("shop_order"), autocommit=True) as conn:
        conn.execute(
            "insert into idempotency_keys (user_id, scope, key, request_hash, resource_id, locked_until, created_at)"
            " values (%s, %s, %s, %s, %s, now() - interval '1 minute', now() - interval '1 minute')",
            (user_id, f"pay:{order_id}", "dead-key", request_hash, payment_id),
        )
        conn.execute(
            "insert into payments (id, order_id, amount_minor, currency, status, decline_reason,"
            " provider_reference, created_at, processor) select %s, id, total_minor, currency, %s, %s, %s, now(),"
            " 'test' from orders where id = %s",
            (payment_id, status, "CARD_DECLINED" if status == "DECLINED" else None, "ch_dead", order_id),
        )
        if status == "APPROVED":
            conn.execute("update orders set status = 'PAID', paid_at = now() where id = %s", (order_id,))
    return payment_id


@pytest.mark.parametrize("status", ["APPROVED", "DECLINED"])
async def test_a_retry_of_a_dead_payers_key_answers_from_its_payment(shop: Shop, postgres, status: str) -> None:
    """Through order_svc: the retry that takes over the key finds the payment under
    its id and answers from it (paid, or the same decline), never INTERNAL."""
    user_id, buyer = shop.ids.customer()
    product = await shop.product(stock=5)
    order = await shop.order(buyer, (product, 1))
    token = "tok_approve" if status == "APPROVED" else "tok_decline"
    request = order_pb2.PayOrderRequest(order_id=order.id, payment_method_token=token)
    payment_id = dead_payer(postgres, user_id, order.id, request, status)
    if status == "APPROVED":
        reply = await shop.pay(buyer, order.id, token, key="dead-key")
        assert reply.payment.id == payment_id and reply.order.status == order_pb2.ORDER_STATUS_PAID
        assert (await shop.pay(buyer, order.id, token, key="dead-key")).payment.id == payment_id  # replayed
    else:
        with pytest.raises(grpc.aio.AioRpcError) as declined:
            await shop.pay(buyer, order.id, token, key="dead-key")
        problem = problem_from_rpc_error(declined.value)
        assert (problem.status, problem.reason) == (402, "PAYMENT_DECLINED")
        assert problem.extra["payment_id"] == payment_id
    assert [row[:2] for row in payment_rows(postgres, order.id)] == [(uuid.UUID(payment_id), status)]


async def test_an_unknown_payment_method_is_bad_input(shop: Shop, local: InProcess) -> None:
    caller, _, order = await placed(shop)
    with pytest.raises(InvalidArgumentError) as bad:
        await local.billing(TestProcessor()).pay(caller, uuid.UUID(order.id), "pm_nothing", None, render)
    assert isinstance(bad.value, DomainError) and bad.value.violations[0].field == "payment_method_token"


async def test_order_migrations_match_the_store_tables(stack: Cluster) -> None:
    """Migration 0002 (holders, processors, processor events, cart checkouts) is what store.py declares."""
    from order_svc.store.tables import metadata

    assert schema_drift(stack.postgres.url("shop_order"), metadata) == []
