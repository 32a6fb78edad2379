"""The gRPC servicer of carts (``shop.order.v1.CartService``): proto in → use case → proto out."""

from __future__ import annotations

import uuid

from shop.order.v1 import cart_pb2, cart_pb2_grpc, order_pb2

from common.auth import current_principal
from common.convert import address_from_proto
from common.grpc_server import Context
from common.identity import callers
from common.validation import require_uuid
from order_svc.carts import Carts, PricedCart, require_signed_in
from order_svc.domain import ShippingMethod
from order_svc.orders import Caller
from order_svc.server import _keyed, _money, _ts, order_to_proto

METHOD_TO_PROTO = {
    ShippingMethod.STANDARD: order_pb2.SHIPPING_METHOD_STANDARD,
    ShippingMethod.EXPRESS: order_pb2.SHIPPING_METHOD_EXPRESS,
}
METHOD_OF_PROTO = {value: method for method, value in METHOD_TO_PROTO.items()}


def _user() -> uuid.UUID | None:
    principal = current_principal.get()
    return require_uuid(principal.user_id, "authorization", "a user id") if principal else None


def cart_to_proto(cart: PricedCart) -> cart_pb2.Cart:
    return cart_pb2.Cart(
        cart_token=cart.who.token,
        user_id=str(cart.who.user_id) if cart.who.user_id else "",
        lines=[
            cart_pb2.CartLine(
                product_id=line.product_id,
                product_name=line.product_name,
                quantity=line.quantity,
                unit_price=_money(line.unit_price) if line.unit_price else None,
                line_total=_money(line.line_total) if line.line_total else None,
                available_stock=line.available,
                archived=line.archived,
                insufficient_stock=line.insufficient,
                unavailable=line.unavailable,
                image_url=line.image_url,
                added_at=_ts(line.added_at),
            )
            for line in cart.lines
        ],
        subtotal=_money(cart.subtotal) if cart.subtotal else None,
        item_count=cart.item_count,
        checkout_ready=cart.checkout_ready,
        expires_at=_ts(cart.expires_at),
    )


class CartService(cart_pb2_grpc.CartServiceServicer):
    def __init__(self, carts: Carts) -> None:
        self.carts = carts

    @callers("edge")
    async def GetCart(self, request: cart_pb2.GetCartRequest, context: Context) -> cart_pb2.GetCartResponse:
        cart = await self.carts.get(self.carts.who(_user(), request.cart_token))
        return cart_pb2.GetCartResponse(cart=cart_to_proto(cart))

    @callers("edge")
    async def AddItem(self, request: cart_pb2.AddItemRequest, context: Context) -> cart_pb2.AddItemResponse:
        who = self.carts.who(_user(), request.cart_token, create=True)
        assert who is not None
        cart = await self.carts.add(who, request.product_id, request.quantity)
        return cart_pb2.AddItemResponse(cart=cart_to_proto(cart))

    @callers("edge")
    async def UpdateItemQuantity(
        self, request: cart_pb2.UpdateItemQuantityRequest, context: Context
    ) -> cart_pb2.UpdateItemQuantityResponse:
        who = self.carts.who(_user(), request.cart_token, create=True)
        assert who is not None
        cart = await self.carts.set_quantity(who, request.product_id, request.quantity)
        return cart_pb2.UpdateItemQuantityResponse(cart=cart_to_proto(cart))

    @callers("edge")
    async def RemoveItem(self, request: cart_pb2.RemoveItemRequest, context: Context) -> cart_pb2.RemoveItemResponse:
        who = self.carts.who(_user(), request.cart_token)
        cart = await (self.carts.remove(who, request.product_id) if who else self.carts.get(None))
        return cart_pb2.RemoveItemResponse(cart=cart_to_proto(cart))

    @callers("edge")
    async def ClearCart(self, request: cart_pb2.ClearCartRequest, context: Context) -> cart_pb2.ClearCartResponse:
        who = self.carts.who(_user(), request.cart_token)
        cart = await (self.carts.clear(who) if who else self.carts.get(None))
        return cart_pb2.ClearCartResponse(cart=cart_to_proto(cart))

    @callers("edge")
    async def MergeGuestCart(
        self, request: cart_pb2.MergeGuestCartRequest, context: Context
    ) -> cart_pb2.MergeGuestCartResponse:
        user_id = require_signed_in(_user())
        cart, capped = await self.carts.merge(user_id, request.guest_cart_token)
        return cart_pb2.MergeGuestCartResponse(cart=cart_to_proto(cart), capped_product_ids=capped)

    @callers("edge")
    async def GetShippingOptions(
        self, request: cart_pb2.GetShippingOptionsRequest, context: Context
    ) -> cart_pb2.GetShippingOptionsResponse:
        quotes = await self.carts.quotes(self.carts.who(_user(), request.cart_token))
        return cart_pb2.GetShippingOptionsResponse(
            options=[
                cart_pb2.ShippingQuote(
                    method=METHOD_TO_PROTO[quote.method],
                    price=_money(quote.price),
                    free_shipping=quote.free,
                    estimated_days_min=quote.days[0],
                    estimated_days_max=quote.days[1],
                )
                for quote in quotes
            ]
        )

    @callers("edge")
    async def Checkout(self, request: cart_pb2.CheckoutRequest, context: Context) -> cart_pb2.CheckoutResponse:
        user_id = require_signed_in(_user())
        principal = current_principal.get()
        caller = Caller(user_id=user_id, admin=bool(principal and principal.is_admin))
        keyed = _keyed(request.idempotency_key, request)
        result = await self.carts.checkout(
            caller,
            METHOD_OF_PROTO.get(request.shipping_method),
            address_from_proto(request.shipping_address),
            keyed,
            render=lambda order: cart_pb2.CheckoutResponse(order=order_to_proto(order)).SerializeToString(),
        )
        if isinstance(result, bytes):
            return cart_pb2.CheckoutResponse.FromString(result)
        return cart_pb2.CheckoutResponse(order=order_to_proto(result))
