"""The cart use cases: a cart priced live from product_svc, and checkout
through the same saga as CreateOrder (:meth:`order_svc.orders.Orders.create`).

A cart checks out once, whatever the keys of concurrent checkouts: one holds
the cart's checkout lock (Redis, leased) while it runs and the others are
refused at once (409, CART_CHECKOUT_IN_PROGRESS); a checkout that comes after
finds the cart emptied of what was ordered.  Behind the lock, the order's
transaction records the cart generation it ordered, so a generation that
already became an order (its checkout outlived the lease, or died between
writing the order and emptying the cart) is refused (CART_ALREADY_CHECKED_OUT)
and the cart is emptied of that order's units then."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from common.errors import (
    AbortedError,
    DomainError,
    FailedPreconditionError,
    FieldViolation,
    NotFoundError,
    UnauthenticatedError,
)
from common.money import Money
from common.validation import Address, invalid, parse_uuid
from order_svc import domain
from order_svc.clients import ProductClient
from order_svc.domain import (
    DELIVERY_DAYS,
    Caller,
    CartRef,
    CatalogEntry,
    CheckoutLock,
    Item,
    Keyed,
    OrderRecord,
    ShippingMethod,
    StoredLine,
)
from order_svc.orders import Orders, Placement, Render
from order_svc.settings import OrderSettings
from order_svc.store.carts import CartStore


@dataclass(frozen=True)
class Who:
    """Whose cart: a signed-in user's, or a guest's named by its token."""

    owner: str
    user_id: uuid.UUID | None
    token: str  # the guest token to hand back; "" for a user's cart
    token_expires: int = 0


@dataclass(frozen=True)
class PricedLine:
    product_id: str
    product_name: str
    quantity: int
    unit_price: Money | None
    line_total: Money | None
    available: int
    archived: bool
    unavailable: bool
    image_url: str
    added_at: datetime

    @property
    def insufficient(self) -> bool:
        return not self.unavailable and self.quantity > self.available

    @property
    def flagged(self) -> bool:
        return self.archived or self.unavailable or self.insufficient


@dataclass(frozen=True)
class PricedCart:
    who: Who
    lines: list[PricedLine]
    subtotal: Money | None
    expires_at: datetime | None

    @property
    def item_count(self) -> int:
        return sum(line.quantity for line in self.lines)

    @property
    def checkout_ready(self) -> bool:
        return bool(self.lines) and not any(line.flagged for line in self.lines)


@dataclass(frozen=True)
class Quote:
    method: ShippingMethod
    price: Money
    free: bool
    days: tuple[int, int]


class Carts:
    def __init__(self, store: CartStore, products: ProductClient, orders: Orders, settings: OrderSettings) -> None:
        self.store = store
        self.products = products
        self.orders = orders
        self.settings = settings
        assert settings.cart_token_secret is not None
        self.secret = settings.cart_token_secret.get_secret_value().encode()

    # --- whose cart ---------------------------------------------------------------------------

    def who(self, user_id: uuid.UUID | None, token: str, *, create: bool = False) -> Who | None:
        """The signed-in user's cart, else the guest cart of ``token``; a new guest
        cart when ``create`` and no token; None when there is no cart to look at."""
        if user_id is not None:
            return Who(owner=f"u:{user_id}", user_id=user_id, token="")
        if token:
            guest_id, expires = domain.verify_cart_token(self.secret, token, time.time())
            return Who(owner=f"g:{guest_id}", user_id=None, token=token, token_expires=expires)
        if not create:
            return None
        expires = int(time.time()) + self.settings.guest_cart_ttl_seconds
        guest_id = uuid.UUID(bytes=secrets.token_bytes(16))
        return Who(
            owner=f"g:{guest_id}", user_id=None, token=domain.sign_cart_token(self.secret, guest_id, expires),
            token_expires=expires,
        )  # fmt: skip

    def _ttl(self, who: Who) -> int:
        if who.user_id is not None:
            return self.settings.cart_ttl_seconds
        return max(1, who.token_expires - int(time.time()))

    # --- reading --------------------------------------------------------------------------------

    async def get(self, who: Who | None) -> PricedCart:
        if who is None:
            return PricedCart(Who("", None, ""), [], None, None)
        stored, ttl = await self.store.read(who.owner)
        return await self._priced(who, stored, ttl)

    async def _priced(self, who: Who, stored: list[StoredLine], ttl: int) -> PricedCart:
        catalog = await self.products.catalog([line.product_id for line in stored]) if stored else {}
        lines = [self._price(line, catalog.get(line.product_id)) for line in stored]
        buyable = [line.line_total for line in lines if line.line_total is not None and not line.flagged]
        currency = next((line.unit_price.currency for line in lines if line.unit_price is not None), None)
        subtotal = None
        if currency is not None:
            subtotal = Money.zero(currency)
            for total in buyable:
                if total.currency == currency:
                    subtotal = subtotal + total
        expires_at = datetime.now(UTC) + timedelta(seconds=ttl) if ttl > 0 else None
        return PricedCart(who, lines, subtotal, expires_at)

    @staticmethod
    def _price(line: StoredLine, entry: CatalogEntry | None) -> PricedLine:
        added_at = datetime.fromtimestamp(line.added_ms / 1000, UTC)
        if entry is None:
            return PricedLine(line.product_id, "", line.quantity, None, None, 0, False, True, "", added_at)
        return PricedLine(
            product_id=line.product_id,
            product_name=entry.name,
            quantity=line.quantity,
            unit_price=entry.price,
            line_total=entry.price.times(line.quantity),
            available=entry.stock,
            archived=not entry.active,
            unavailable=False,
            image_url=entry.image_url,
            added_at=added_at,
        )

    # --- changing ---------------------------------------------------------------------------------

    async def _sellable(self, who: Who, product_id: str, quantity: int) -> CatalogEntry:
        if parse_uuid(product_id) is None:
            raise invalid(FieldViolation("product_id", "must be a product id (UUID)"))
        catalog = await self.products.catalog([product_id])
        entry = catalog.get(product_id)
        if entry is None:
            raise NotFoundError(f"no such product: {product_id}", reason="PRODUCT_NOT_FOUND",
                           metadata={"product_id": product_id})  # fmt: skip
        if not entry.active:
            raise FailedPreconditionError(f"product {product_id} is no longer sold", reason="PRODUCT_ARCHIVED",
                                     metadata={"product_id": product_id})  # fmt: skip
        if quantity > entry.stock:
            raise domain.out_of_stock(product_id, quantity, entry.stock)
        return entry

    async def _same_currency(self, who: Who, entry: CatalogEntry) -> None:
        stored, _ = await self.store.read(who.owner)
        others = [line.product_id for line in stored if line.product_id != entry.product_id]
        if not others:
            return
        currencies = {e.price.currency for e in (await self.products.catalog(others[:1])).values()}
        if currencies and entry.price.currency not in currencies:
            raise FailedPreconditionError(
                f"the cart is priced in {', '.join(sorted(currencies))}; this product is in {entry.price.currency}",
                reason="MIXED_CURRENCIES",
            )

    async def add(self, who: Who, product_id: str, quantity: int) -> PricedCart:
        cap = self.settings.max_line_quantity
        domain.validate_quantity(quantity, cap)
        product_id = product_id.strip()
        stored, _ = await self.store.read(who.owner)
        current = next((line.quantity for line in stored if line.product_id == product_id), 0)
        if current == 0 and len(stored) >= self.settings.max_cart_lines:
            raise invalid(FieldViolation("product_id", f"a cart holds at most {self.settings.max_cart_lines} products"))
        entry = await self._sellable(who, product_id, current + quantity)
        await self._same_currency(who, entry)
        added = await self.store.add(
            who.owner, product_id, quantity, cap=cap, now_ms=int(time.time() * 1000), ttl=self._ttl(who)
        )
        if added is None:
            raise invalid(FieldViolation("quantity", f"at most {cap} of one product per cart"))
        return await self.get(who)

    async def set_quantity(self, who: Who, product_id: str, quantity: int) -> PricedCart:
        domain.validate_quantity(quantity, self.settings.max_line_quantity)
        product_id = product_id.strip()
        await self._sellable(who, product_id, quantity)
        if not await self.store.set(who.owner, product_id, quantity, self._ttl(who)):
            raise NotFoundError(f"product {product_id} is not in the cart")
        return await self.get(who)

    async def remove(self, who: Who, product_id: str) -> PricedCart:
        await self.store.remove(who.owner, product_id.strip())
        return await self.get(who)

    async def clear(self, who: Who) -> PricedCart:
        await self.store.clear(who.owner)
        return await self.get(who)

    async def merge(self, user_id: uuid.UUID, guest_token: str) -> tuple[PricedCart, list[str]]:
        """Add a guest cart's quantities to the user's, capped at stock and at the
        per-line cap; the guest cart is then gone (merging again changes nothing)."""
        guest = self.who(None, guest_token)
        assert guest is not None
        user = Who(owner=f"u:{user_id}", user_id=user_id, token="")
        guest_lines, _ = await self.store.read(guest.owner)
        capped: list[str] = []
        if guest_lines:
            mine, _ = await self.store.read(user.owner)
            have = {line.product_id: line.quantity for line in mine}
            catalog = await self.products.catalog([line.product_id for line in guest_lines])
            for line in guest_lines:
                entry = catalog.get(line.product_id)
                if entry is None:
                    capped.append(line.product_id)
                    continue
                limit = min(entry.stock, self.settings.max_line_quantity)
                wanted = have.get(line.product_id, 0) + line.quantity
                if wanted > limit:
                    capped.append(line.product_id)
                delta = min(wanted, limit) - have.get(line.product_id, 0)
                if delta > 0:
                    await self.store.add(
                        user.owner, line.product_id, delta, cap=self.settings.max_line_quantity,
                        now_ms=line.added_ms or int(time.time() * 1000), ttl=self.settings.cart_ttl_seconds,
                    )  # fmt: skip
            await self.store.clear(guest.owner)
        return await self.get(user), capped

    # --- shipping and checkout ------------------------------------------------------------------------

    async def quotes(self, who: Who | None) -> list[Quote]:
        cart = await self.get(who)
        if cart.subtotal is None:
            return []
        catalog = await self.products.catalog([line.product_id for line in cart.lines])
        weight = sum(catalog[line.product_id].weight_grams * line.quantity for line in cart.lines
                     if line.product_id in catalog)  # fmt: skip
        quotes = []
        for method in (ShippingMethod.STANDARD, ShippingMethod.EXPRESS):
            price = self.orders.rule.quote(method, cart.subtotal, weight)
            quotes.append(Quote(method, price, price.amount_minor == 0, DELIVERY_DAYS[method]))
        return quotes

    async def checkout(
        self, caller: Caller, method: ShippingMethod | None, address: Address, keyed: Keyed | None, render: Render
    ) -> OrderRecord | bytes:
        if method is None:
            raise invalid(FieldViolation("shipping_method", "choose STANDARD or EXPRESS"))
        replayed = await self.orders.keys.replay(caller.user_id, "checkout", keyed)
        if replayed is not None:
            return replayed  # a repeat of a checkout that made its order (the cart is empty by now)
        who = self.who(caller.user_id, "")
        assert who is not None
        # A repeat with the same key may pass the lock: the key's own claim makes it wait for the first.
        holder = f"key:{keyed.key}" if keyed is not None else f"once:{uuid.uuid4()}"
        lease_ms = int(self.settings.idempotency_lease_seconds * 1000)
        taken = await self.store.lock_checkout(who.owner, holder, lease_ms)
        if taken is CheckoutLock.BUSY:
            raise AbortedError(
                "this cart is being checked out by another request; its order is on the way (see your orders)",
                reason="CART_CHECKOUT_IN_PROGRESS",
            )
        try:
            return await self._checkout(caller, who, method, address, keyed=keyed, render=render)
        finally:
            if taken is CheckoutLock.TAKEN:
                await self.store.unlock_checkout(who.owner, holder)

    async def _checkout(
        self, caller: Caller, who: Who, method: ShippingMethod, address: Address, *, keyed: Keyed | None, render: Render
    ) -> OrderRecord | bytes:
        stored, ttl, generation = await self.store.snapshot(who.owner)
        cart = await self._priced(who, stored, ttl)
        if not cart.checkout_ready:
            flagged = [line.product_id for line in cart.lines if line.flagged]
            raise FailedPreconditionError(
                "the cart is empty" if not cart.lines else
                f"fix the flagged lines first (archived, deleted or short of stock): {', '.join(flagged)}",
                reason="CART_NOT_CHECKOUTABLE",
                metadata={"product_id": flagged[0]} if flagged else {},
            )  # fmt: skip
        items = [Item(line.product_id, line.quantity) for line in cart.lines]
        ordered = [(item.product_id, item.quantity) for item in items]
        try:
            result = await self.orders.create(
                Placement(caller, items, address, method, keyed, render, "checkout", CartRef(who.owner, generation))
            )
        except DomainError as exc:
            if exc.reason == "CART_ALREADY_CHECKED_OUT":
                # That order was written and the cart not emptied (its checkout died in between): empty it now.
                await self.store.subtract(who.owner, ordered, self.settings.cart_ttl_seconds, generation=generation)
            raise
        if isinstance(result, OrderRecord):
            # Only what was ordered leaves the cart; a line added meanwhile stays.
            await self.store.subtract(who.owner, ordered, self.settings.cart_ttl_seconds)
        return result


def require_signed_in(user_id: uuid.UUID | None) -> uuid.UUID:
    if user_id is None:
        raise UnauthenticatedError("sign in first (a guest cart is merged into your cart when you sign in)")
    return user_id
