"""The order use cases: the checkout saga, the reads, the state changes, and
the background work that keeps stock consistent (payments: billing.py).

Stock is never lost or leaked:

* before ReserveStock the order id is noted in ``pending_reservations``; the
  transaction that writes the order removes that note, and a reservation whose
  note outlives ``orphan_reservation_after`` (the order was never written:
  a failure, a crash, product_svc unreachable while compensating) is released
  by the sweeper;
* releases and commits needed by a state change (cancel, expiry, shipping) are
  written as ``stock_actions`` in the same transaction and retried until
  product_svc confirms them (both calls are idempotent there);
* a retry that takes over an Idempotency-Key whose holder outlived its lease
  orders under a fresh id, so two holders never share a reservation, and only
  the holder the key names may complete it (idempotency.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter

from common import paging
from common.errors import (
    AbortedError,
    DomainError,
    FailedPreconditionError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from common.events import ORDERS_TOPIC
from common.ratelimit import Limiter, Window
from common.validation import Address
from common.waits import wait_or_stop
from order_svc import domain, events
from order_svc.clients import ProductClient
from order_svc.domain import (
    Abandoned,
    Caller,
    CancelReason,
    CartRef,
    Claim,
    Item,
    Keyed,
    OrderQuery,
    OrderRecord,
    Priced,
    ShippingMethod,
    Status,
    now,
)
from order_svc.idempotency import Keys
from order_svc.payments import Processors
from order_svc.settings import OrderSettings
from order_svc.store import Store, Work

log = logging.getLogger("shop.order")

ORDERS_CREATED = Counter("orders_created_total", "Orders placed")
STOCK_ACTIONS = Counter("order_stock_actions_total", "Reservation releases/commits sent to product_svc", ["action"])

Render = Callable[[OrderRecord], bytes]


@dataclass(frozen=True)
class Placement:
    """A request to place an order: CreateOrder, or a cart's checkout (each with
    its own key scope; a checkout names its cart generation, which becomes one
    order at most).  ``render`` makes the response a repeat of the key answers with."""

    caller: Caller
    items: list[Item]
    address: Address
    method: ShippingMethod
    keyed: Keyed | None
    render: Render
    scope: str = "create"
    cart: CartRef | None = None


class Orders:
    def __init__(
        self,
        store: Store,
        products: ProductClient,
        processors: Processors,
        settings: OrderSettings,
        *,
        limiter: Limiter | None = None,
    ) -> None:
        self.store = store
        self.keys = Keys(store, settings.idempotency_lease_seconds)
        # Order placements per user (None: no rate limit); unpaid orders held are capped in any case.
        self.limiter = limiter
        self.create_window = Window("orders", settings.order_create_limit, settings.order_create_window)
        self.products = products
        self.processors = processors
        self.settings = settings
        self.limits = domain.Limits(settings.max_items, settings.max_line_quantity)
        self.rule = domain.ShippingRule(
            settings.shipping_standard_minor,
            settings.shipping_express_minor,
            settings.free_shipping_over_minor,
            settings.heavy_parcel_grams,
            settings.heavy_surcharge_minor,
        )

    # --- placing an order ------------------------------------------------------------------------

    async def create(self, placement: Placement) -> OrderRecord | bytes:
        """The order (or, for a repeated key, the first response's bytes)."""
        placement = dataclasses.replace(
            placement,
            items=domain.validate_items(placement.items, self.limits),
            address=domain.validate_shipping_address(placement.address),
        )
        claim = await self.keys.claim(placement.caller.user_id, placement.scope, placement.keyed, reserving=True)
        if claim.replay is not None:
            return claim.replay
        try:
            order = await self._place(placement, claim)
        except BaseException:
            await self.keys.release(claim)
            raise
        ORDERS_CREATED.inc()
        return order

    async def _place(self, placement: Placement, claim: Claim) -> OrderRecord:
        order_id = claim.resource_id
        priced = await self._price(placement, claim)
        if not claim.noted:
            async with self.store.unit_of_work() as work:
                await work.note_pending_reservation(order_id)
        await self._reserve(order_id, placement.items)
        try:
            return await self._write(placement, claim, priced)
        except BaseException:
            await self._compensate(order_id)
            raise

    async def _price(self, placement: Placement, claim: Claim) -> Priced:
        try:
            await self._within_limits(placement.caller)
            catalog = await self.products.catalog([item.product_id for item in placement.items])
            return domain.price(placement.items, catalog, placement.method, self.rule)
        except BaseException:
            if claim.noted:
                await self._drop_note(claim.resource_id)  # nothing was reserved
            raise

    async def _reserve(self, order_id: uuid.UUID, items: list[Item]) -> None:
        try:
            await self.products.reserve(order_id, items)
        except UnavailableError:
            await self._compensate(order_id)  # it may have reserved before the failure
            raise
        except DomainError:
            await self._drop_note(order_id)  # refused: nothing was reserved
            raise
        # Anything else (cancelled, say) may have reserved: the note stays for the sweeper.

    async def _drop_note(self, order_id: uuid.UUID) -> None:
        async with self.store.unit_of_work() as work:
            await work.take_pending_reservation(order_id)

    async def _write(self, placement: Placement, claim: Claim, priced: Priced) -> OrderRecord:
        """The order's transaction: it takes the reservation's note (none left: the
        reservation was given up as orphaned) and completes the key."""
        caller, order_id, cart = placement.caller, claim.resource_id, placement.cart
        created_at = now()
        async with self.store.unit_of_work() as work:
            # Counted again under the user's lock: placements at the same moment stay under the cap.
            await work.lock_user_orders(caller.user_id)
            self._check_unpaid(await work.count_unpaid(caller.user_id))
            if not await work.take_pending_reservation(order_id):
                raise UnavailableError("placing the order took too long; nothing was ordered, try again")
            order = await work.insert_order(
                order_id=order_id, user_id=caller.user_id, priced=priced, method=placement.method,
                address=placement.address, created_at=created_at,
                expires_at=created_at + timedelta(seconds=self.settings.payment_window_seconds),
            )  # fmt: skip
            if cart is not None:
                earlier = await work.record_cart_checkout(cart.owner, cart.generation, order_id)
                if earlier is not None:
                    raise FailedPreconditionError(
                        f"this cart was already checked out as order {earlier}; nothing was ordered here",
                        reason="CART_ALREADY_CHECKED_OUT",
                        metadata={"order_id": str(earlier)},
                    )
            await work.add_event(ORDERS_TOPIC, str(order_id), events.created(order))
            if not await self.keys.complete(work, claim, placement.render(order)):
                raise AbortedError(
                    "this request outlived its Idempotency-Key's lease and a retry took the key over;"
                    " nothing was ordered here, the retry's outcome stands"
                )
        return order

    async def _within_limits(self, caller: Caller) -> None:
        """Refuse before any stock is reserved: too many placements lately (429), or
        too many unpaid orders held (409: paying or cancelling one helps, waiting
        helps only when an order expires)."""
        async with self.store.unit_of_work() as work:
            held = await work.count_unpaid(caller.user_id)
        self._check_unpaid(held)
        if self.limiter is not None:
            await self.limiter.hit(
                self.create_window, str(caller.user_id), "you placed too many orders lately; try again later"
            )

    def _check_unpaid(self, held: int) -> None:
        limit = self.settings.unpaid_orders_limit
        if held >= limit:
            raise FailedPreconditionError(
                f"you have {held} unpaid orders (at most {limit}); pay or cancel one before placing another",
                reason="UNPAID_ORDERS_LIMIT",
                metadata={"limit": str(limit)},
            )

    async def _compensate(self, order_id: uuid.UUID) -> None:
        """Give back the reservation of an order that was not written.  Taking its
        note settles whether it was: the order's transaction takes the note too,
        so an order written after all (its commit's answer lost, or still in
        flight) keeps its stock.  The release is queued with the note's removal
        and sent at once; whatever fails here, the sweeper finishes it."""
        abandoned = await self.store.abandon_reservation(order_id)
        if abandoned is Abandoned.UNSETTLED:
            log.warning("could not settle the reservation now; the sweeper will", extra={"order_id": str(order_id)})
        if abandoned is Abandoned.RELEASE_QUEUED:
            await self.run_stock_action(order_id, "release")

    # --- reads ------------------------------------------------------------------------------------

    async def get(self, caller: Caller, order_id: uuid.UUID) -> OrderRecord:
        order = await self.store.order(order_id)
        if order is None or not (caller.admin or order.user_id == caller.user_id):
            raise NotFoundError(f"no order {order_id}")
        return order

    async def page(self, name: str, query: OrderQuery, size: int, token: str) -> tuple[list[OrderRecord], str]:
        """A page of the list ``name`` (a token belongs to one list and its filters)
        and the token of the next page ("" when this is the last)."""
        limit = paging.page_size(size)
        scope = paging.scope(name, query.user_id, ",".join(query.statuses), query.created_after, query.created_before)
        position = paging.decode_page_token(token, scope)
        after = position.created() if position is not None else None
        async with self.store.unit_of_work() as work:
            orders = await work.page(query, limit=limit + 1, after=after)
        if len(orders) <= limit:
            return orders, ""
        last = orders[limit - 1]
        return orders[:limit], paging.encode_page_token(paging.created_position(last.created_at, last.id), scope)

    async def purchased(self, caller: Caller, user_id: uuid.UUID, product_id: uuid.UUID) -> datetime | None:
        """When the user first received the product (None: never)."""
        if not (caller.admin or caller.user_id == user_id):
            raise PermissionDeniedError("only the user themself or an admin may ask this")
        async with self.store.unit_of_work() as work:
            return await work.first_delivery(user_id, product_id)

    # --- cancel, ship, deliver, expire ---------------------------------------------------------------

    async def cancel(self, caller: Caller, order_id: uuid.UUID, note: str) -> OrderRecord:
        note = domain.validate_note(note)
        async with self.store.unit_of_work() as work:
            order = await work.lock_order(order_id)
            if order is None or not (caller.admin or order.user_id == caller.user_id):
                raise NotFoundError(f"no order {order_id}")
            reason = CancelReason.CUSTOMER if order.user_id == caller.user_id else CancelReason.ADMIN
            if order.status is Status.CANCELLED:
                cancelled = await work.order(order_id)
                assert cancelled is not None
                return cancelled  # idempotent
            cancelled = await self.cancel_in(work, order, reason, note)
        await self.run_stock_action(order_id, "release")
        return cancelled

    async def cancel_in(
        self, work: Work, order: OrderRecord, reason: CancelReason, note: str, *, refund: bool = True
    ) -> OrderRecord:
        """Cancel a locked order in ``work``, owing product_svc the release of its
        stock.  ``refund``: give the approved payment back through the processor
        that took it (False: the processor already did, and said so in an event)."""
        domain.check_transition(order.status, Status.CANCELLED)
        refunded = False
        if order.status is Status.PAID:
            full = await work.order(order.id)
            payment = full.approved_payment if full else None
            if payment is not None:
                if refund:
                    processor = self.processors.of(payment.processor)
                    await processor.refund(payment.provider_reference, payment.amount, payment.id)
                await work.refund_payment(payment.id)
                refunded = True
        await work.mark_cancelled(order.id, reason, note, refunded=refunded, at=now())
        await work.add_stock_actions([order.id], "release")
        cancelled = await work.order(order.id)
        assert cancelled is not None
        await work.add_event(ORDERS_TOPIC, str(order.id), events.cancelled(cancelled))
        return cancelled

    async def ship(self, order_id: uuid.UUID, carrier: str, tracking_number: str) -> OrderRecord:
        carrier, tracking_number = domain.validate_shipment(carrier, tracking_number)
        async with self.store.unit_of_work() as work:
            order = await work.lock_order(order_id)
            if order is None:
                raise NotFoundError(f"no order {order_id}")
            domain.check_transition(order.status, Status.SHIPPED)
            await work.mark_shipped(order_id, carrier, tracking_number, now())
            await work.add_stock_actions([order_id], "commit")
            shipped = await work.order(order_id)
            assert shipped is not None
            await work.add_event(ORDERS_TOPIC, str(order_id), events.shipped(shipped))
        await self.run_stock_action(order_id, "commit")
        return shipped

    async def deliver(self, order_id: uuid.UUID) -> OrderRecord:
        async with self.store.unit_of_work() as work:
            order = await work.lock_order(order_id)
            if order is None:
                raise NotFoundError(f"no order {order_id}")
            domain.check_transition(order.status, Status.DELIVERED)
            await work.mark_delivered(order_id, now())
            delivered = await work.order(order_id)
            assert delivered is not None
            await work.add_event(ORDERS_TOPIC, str(order_id), events.delivered(delivered))
        return delivered

    async def expire_due(self) -> int:
        expired = 0
        async with self.store.unit_of_work() as work:
            due = await work.expired(now())
        for order_id in due:
            async with self.store.unit_of_work() as work:
                order = await work.lock_order(order_id)
                if order is None or order.status is not Status.PENDING_PAYMENT:
                    continue  # paid or cancelled in the meantime
                if order.expires_at is None or order.expires_at >= now():
                    continue
                await self.cancel_in(work, order, CancelReason.EXPIRED, "not paid in time")
                expired += 1
            await self.run_stock_action(order_id, "release")
        return expired

    # --- stock actions ---------------------------------------------------------------------------------

    async def run_stock_action(self, order_id: uuid.UUID, action: str) -> bool:
        try:
            if action == "release":
                await self.products.release(order_id)
            else:
                await self.products.commit(order_id)
        except DomainError as exc:
            log.warning(
                "stock %s not confirmed yet; will retry", action, extra={"order_id": str(order_id), "error": str(exc)}
            )
            return False
        async with self.store.unit_of_work() as work:
            await work.finish_stock_action(order_id, action)
        STOCK_ACTIONS.labels(action).inc()
        return True

    async def sweep(self) -> None:
        """One round of background work: expiry, orphaned reservations (the order
        was never written, and never will be: its transaction needs the note this
        takes), pending stock actions, old idempotency keys and history."""
        await self.expire_due()
        async with self.store.unit_of_work() as work:
            orphans = await work.take_orphaned_reservations(
                now() - timedelta(seconds=self.settings.orphan_reservation_after)
            )
            await work.add_stock_actions(orphans, "release")
        async with self.store.unit_of_work() as work:
            due = await work.due_stock_actions()
        for order_id, action in due:
            await self.run_stock_action(order_id, action)
        async with self.store.unit_of_work() as work:
            await work.purge_keys(now() - timedelta(seconds=self.settings.idempotency_ttl_seconds))
        async with self.store.unit_of_work() as work:
            # Processors stop redelivering events after days; a cart expires.
            await work.purge_payment_events(now() - timedelta(seconds=self.settings.payment_event_ttl_seconds))
            await work.purge_cart_checkouts(now() - timedelta(seconds=self.settings.cart_ttl_seconds))

    async def sweep_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:  # the next round tries again
                log.warning("sweep failed", exc_info=True)
            await wait_or_stop(stop, self.settings.sweep_interval)
