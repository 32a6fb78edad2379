"""The gRPC servicers of order_svc, ``OrderService`` and ``CartService``:
proto in → convert → one use-case call → convert → proto out."""

from __future__ import annotations

import uuid

from shop.order.v1 import cart_pb2, cart_pb2_grpc, order_pb2, order_pb2_grpc

from common.auth import current_principal, require_admin, require_user
from common.convert import address_from_proto, optional_datetime_of, optional_timestamp
from common.grpc_server import Context
from common.identity import callers
from common.validation import require_uuid
from order_svc import convert
from order_svc.billing import Billing
from order_svc.carts import Carts, require_signed_in
from order_svc.domain import Caller, Item, OrderQuery
from order_svc.orders import Orders, Placement


def _caller() -> Caller:
    principal = require_user()
    return Caller(user_id=require_uuid(principal.user_id, "authorization", "a user id"), admin=principal.is_admin)


def _order_id(value: str) -> uuid.UUID:
    return require_uuid(value, "order_id", "an order id")


class OrderService(order_pb2_grpc.OrderServiceServicer):
    def __init__(self, orders: Orders, billing: Billing) -> None:
        self.orders = orders
        self.billing = billing

    @callers("edge")
    async def CreateOrder(
        self, request: order_pb2.CreateOrderRequest, context: Context
    ) -> order_pb2.CreateOrderResponse:
        placement = Placement(
            caller=_caller(),
            items=[Item(item.product_id, item.quantity) for item in request.items],
            address=address_from_proto(request.shipping_address),
            method=convert.method_of(request.shipping_method),
            keyed=convert.keyed(request.idempotency_key, request),
            render=convert.render_created,
        )
        result = await self.orders.create(placement)
        if isinstance(result, bytes):
            return order_pb2.CreateOrderResponse.FromString(result)
        return order_pb2.CreateOrderResponse(order=convert.order_to_proto(result))

    @callers("edge")
    async def GetOrder(self, request: order_pb2.GetOrderRequest, context: Context) -> order_pb2.GetOrderResponse:
        order = await self.orders.get(_caller(), _order_id(request.order_id))
        return order_pb2.GetOrderResponse(order=convert.order_to_proto(order))

    @callers("edge")
    async def ListMyOrders(
        self, request: order_pb2.ListMyOrdersRequest, context: Context
    ) -> order_pb2.ListMyOrdersResponse:
        caller = _caller()
        query = OrderQuery(user_id=caller.user_id, statuses=convert.statuses_of([request.status]))
        orders, token = await self.orders.page("mine", query, request.page.page_size, request.page.page_token)
        return order_pb2.ListMyOrdersResponse(
            orders=[convert.order_to_proto(o) for o in orders], page=convert.page_response(token)
        )

    @callers("edge")
    async def ListOrders(self, request: order_pb2.ListOrdersRequest, context: Context) -> order_pb2.ListOrdersResponse:
        require_admin()
        query = OrderQuery(
            user_id=require_uuid(request.user_id, "user_id", "a user id") if request.HasField("user_id") else None,
            statuses=convert.statuses_of(request.statuses),
            created_after=optional_datetime_of(request.created_after),
            created_before=optional_datetime_of(request.created_before),
        )
        orders, token = await self.orders.page("all", query, request.page.page_size, request.page.page_token)
        return order_pb2.ListOrdersResponse(
            orders=[convert.order_to_proto(o) for o in orders], page=convert.page_response(token)
        )

    @callers("edge")
    async def PayOrder(self, request: order_pb2.PayOrderRequest, context: Context) -> order_pb2.PayOrderResponse:
        caller = _caller()
        order_id = _order_id(request.order_id)
        keyed = convert.keyed(request.idempotency_key, request)
        result = await self.billing.pay(caller, order_id, request.payment_method_token, keyed, convert.render_paid)
        if isinstance(result, bytes):
            return order_pb2.PayOrderResponse.FromString(result)
        return convert.paid_to_proto(*result)

    @callers("edge")
    async def CancelOrder(
        self, request: order_pb2.CancelOrderRequest, context: Context
    ) -> order_pb2.CancelOrderResponse:
        order = await self.orders.cancel(_caller(), _order_id(request.order_id), request.note)
        return order_pb2.CancelOrderResponse(order=convert.order_to_proto(order))

    @callers("edge")
    async def ShipOrder(self, request: order_pb2.ShipOrderRequest, context: Context) -> order_pb2.ShipOrderResponse:
        require_admin()
        order = await self.orders.ship(_order_id(request.order_id), request.carrier, request.tracking_number)
        return order_pb2.ShipOrderResponse(order=convert.order_to_proto(order))

    @callers("edge")
    async def DeliverOrder(
        self, request: order_pb2.DeliverOrderRequest, context: Context
    ) -> order_pb2.DeliverOrderResponse:
        require_admin()
        order = await self.orders.deliver(_order_id(request.order_id))
        return order_pb2.DeliverOrderResponse(order=convert.order_to_proto(order))

    # The verified-purchase mark of a review: comment_svc only.
    @callers("comment_svc")
    async def HasPurchased(
        self, request: order_pb2.HasPurchasedRequest, context: Context
    ) -> order_pb2.HasPurchasedResponse:
        delivered = await self.orders.purchased(
            _caller(),
            require_uuid(request.user_id, "user_id", "a user id"),
            require_uuid(request.product_id, "product_id", "a product id"),
        )
        return order_pb2.HasPurchasedResponse(
            purchased=delivered is not None, first_delivered_at=optional_timestamp(delivered)
        )

    @callers("edge")
    async def HandleStripeEvent(
        self, request: order_pb2.HandleStripeEventRequest, context: Context
    ) -> order_pb2.HandleStripeEventResponse:
        # No caller token: the event's signature (verified in the use case) is its credential.
        done = await self.billing.apply_stripe_event(request.payload, request.signature)
        return order_pb2.HandleStripeEventResponse(
            event_id=done.event_id, duplicate=done.duplicate, applied=done.applied,
            order_id=str(done.order_id) if done.order_id else "", note=done.note,
        )  # fmt: skip


# --- carts ---------------------------------------------------------------------------------------


def _user() -> uuid.UUID | None:
    principal = current_principal.get()
    return require_uuid(principal.user_id, "authorization", "a user id") if principal else None


class CartService(cart_pb2_grpc.CartServiceServicer):
    def __init__(self, carts: Carts) -> None:
        self.carts = carts

    @callers("edge")
    async def GetCart(self, request: cart_pb2.GetCartRequest, context: Context) -> cart_pb2.GetCartResponse:
        cart = await self.carts.get(self.carts.who(_user(), request.cart_token))
        return cart_pb2.GetCartResponse(cart=convert.cart_to_proto(cart))

    @callers("edge")
    async def AddItem(self, request: cart_pb2.AddItemRequest, context: Context) -> cart_pb2.AddItemResponse:
        who = self.carts.who(_user(), request.cart_token, create=True)
        assert who is not None
        cart = await self.carts.add(who, request.product_id, request.quantity)
        return cart_pb2.AddItemResponse(cart=convert.cart_to_proto(cart))

    @callers("edge")
    async def UpdateItemQuantity(
        self, request: cart_pb2.UpdateItemQuantityRequest, context: Context
    ) -> cart_pb2.UpdateItemQuantityResponse:
        who = self.carts.who(_user(), request.cart_token, create=True)
        assert who is not None
        cart = await self.carts.set_quantity(who, request.product_id, request.quantity)
        return cart_pb2.UpdateItemQuantityResponse(cart=convert.cart_to_proto(cart))

    @callers("edge")
    async def RemoveItem(self, request: cart_pb2.RemoveItemRequest, context: Context) -> cart_pb2.RemoveItemResponse:
        who = self.carts.who(_user(), request.cart_token)
        cart = await (self.carts.remove(who, request.product_id) if who else self.carts.get(None))
        return cart_pb2.RemoveItemResponse(cart=convert.cart_to_proto(cart))

    @callers("edge")
    async def ClearCart(self, request: cart_pb2.ClearCartRequest, context: Context) -> cart_pb2.ClearCartResponse:
        who = self.carts.who(_user(), request.cart_token)
        cart = await (self.carts.clear(who) if who else self.carts.get(None))
        return cart_pb2.ClearCartResponse(cart=convert.cart_to_proto(cart))

    @callers("edge")
    async def MergeGuestCart(
        self, request: cart_pb2.MergeGuestCartRequest, context: Context
    ) -> cart_pb2.MergeGuestCartResponse:
        user_id = require_signed_in(_user())
        cart, capped = await self.carts.merge(user_id, request.guest_cart_token)
        return cart_pb2.MergeGuestCartResponse(cart=convert.cart_to_proto(cart), capped_product_ids=capped)

    @callers("edge")
    async def GetShippingOptions(
        self, request: cart_pb2.GetShippingOptionsRequest, context: Context
    ) -> cart_pb2.GetShippingOptionsResponse:
        quotes = await self.carts.quotes(self.carts.who(_user(), request.cart_token))
        return cart_pb2.GetShippingOptionsResponse(options=[convert.quote_to_proto(quote) for quote in quotes])

    @callers("edge")
    async def Checkout(self, request: cart_pb2.CheckoutRequest, context: Context) -> cart_pb2.CheckoutResponse:
        user_id = require_signed_in(_user())
        principal = current_principal.get()
        result = await self.carts.checkout(
            Caller(user_id=user_id, admin=bool(principal and principal.is_admin)),
            convert.METHOD_OF_PROTO.get(request.shipping_method),
            address_from_proto(request.shipping_address),
            convert.keyed(request.idempotency_key, request),
            convert.render_checkout,
        )
        if isinstance(result, bytes):
            return cart_pb2.CheckoutResponse.FromString(result)
        return cart_pb2.CheckoutResponse(order=convert.order_to_proto(result))
