"""The shopping cart (``/api/v1/cart``), for signed-in users and guests.

A guest cart is named by a token: the edge returns it in the ``X-Cart-Token``
response header and reads it back from the same request header.  Signing in
with that header merges the guest cart into the user's cart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field
from shop.order.v1 import cart_pb2, order_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from common.convert import optional_datetime_of
from edge.api import Api, Contract
from edge.clients import call_options, clients
from edge.routes.models import Address, Money, Strict, Uuid
from edge.routes.orders import Order, idempotency_key

api = Api(upstreams=["order_svc"])

CART_TOKEN = "x-cart-token"
METHODS = {"standard": order_pb2.SHIPPING_METHOD_STANDARD, "express": order_pb2.SHIPPING_METHOD_EXPRESS}
METHOD_NAMES = {value: name for name, value in METHODS.items()}


class CartLine(BaseModel):
    product_id: Uuid
    product_name: str
    quantity: int
    unit_price: Money | None
    line_total: Money | None
    available_stock: int
    archived: bool
    insufficient_stock: bool
    unavailable: bool
    image_url: str
    added_at: datetime | None


class Cart(BaseModel):
    cart_token: str
    lines: list[CartLine]
    subtotal: Money | None
    item_count: int
    checkout_ready: bool
    expires_at: datetime | None

    @classmethod
    def of(cls, cart: cart_pb2.Cart) -> Cart:
        return cls(
            cart_token=cart.cart_token,
            lines=[
                CartLine(
                    product_id=line.product_id,
                    product_name=line.product_name,
                    quantity=line.quantity,
                    unit_price=Money.of(line.unit_price) if line.HasField("unit_price") else None,
                    line_total=Money.of(line.line_total) if line.HasField("line_total") else None,
                    available_stock=line.available_stock,
                    archived=line.archived,
                    insufficient_stock=line.insufficient_stock,
                    unavailable=line.unavailable,
                    image_url=line.image_url,
                    added_at=optional_datetime_of(line.added_at),
                )
                for line in cart.lines
            ],
            subtotal=Money.of(cart.subtotal) if cart.HasField("subtotal") else None,
            item_count=cart.item_count,
            checkout_ready=cart.checkout_ready,
            expires_at=optional_datetime_of(cart.expires_at),
        )


class ShippingQuote(BaseModel):
    method: Literal["standard", "express"]
    price: Money
    free_shipping: bool
    estimated_days_min: int
    estimated_days_max: int


class ShippingOptions(BaseModel):
    options: list[ShippingQuote]


ProductId = Annotated[Uuid, Field(min_length=1, max_length=64)]
Quantity = Annotated[int, Field(ge=1, le=1000)]


class AddItem(Strict):
    product_id: ProductId
    quantity: Quantity = 1


class SetQuantity(Strict):
    quantity: Quantity


class CheckoutIn(Strict):
    shipping_method: Literal["standard", "express"]
    shipping_address: Address


def _token(request: Request) -> str:
    return request.headers.get(CART_TOKEN, "")


def _respond(cart: cart_pb2.Cart, status: int = 200) -> Response:
    headers = {"X-Cart-Token": cart.cart_token} if cart.cart_token else {}
    return JSONResponse(Cart.of(cart).model_dump(mode="json"), status_code=status, headers=headers)


@api.operation("GET", "/api/v1/cart", Contract(
    summary="The cart, priced now", tag="cart", response=Cart, errors=(401, 503),
    headers=("X-Cart-Token",),
))  # fmt: skip
async def get_cart(request: Request) -> Response:
    """Signed in: the user's cart. Guest: the cart named by ``X-Cart-Token`` (401
    when that token is expired or forged). Lines whose product was archived,
    deleted or is short of stock are flagged and block checkout."""
    reply = await clients(request).cart.GetCart(
        cart_pb2.GetCartRequest(cart_token=_token(request)), **call_options(request)
    )
    return _respond(reply.cart)


@api.operation("DELETE", "/api/v1/cart", Contract(
    summary="Empty the cart", tag="cart", response=Cart, errors=(401,),
    headers=("X-Cart-Token",),
))  # fmt: skip
async def clear_cart(request: Request) -> Response:
    reply = await clients(request).cart.ClearCart(
        cart_pb2.ClearCartRequest(cart_token=_token(request)), **call_options(request)
    )
    return _respond(reply.cart)


@api.operation("POST", "/api/v1/cart/items", Contract(
    summary="Add a product (a guest without a token gets a new cart)", tag="cart",
    body=AddItem, response=Cart, errors=(401, 404, 409),
    headers=("X-Cart-Token",),
))  # fmt: skip
async def add_item(request: Request, body: AddItem) -> Response:
    """409 when the stock cannot cover the quantity (naming the product), the
    product is archived, or it is priced in another currency than the cart."""
    reply = await clients(request).cart.AddItem(
        cart_pb2.AddItemRequest(cart_token=_token(request), product_id=body.product_id, quantity=body.quantity),
        **call_options(request),
    )
    return _respond(reply.cart)


@api.operation("PATCH", "/api/v1/cart/items/{product_id}", Contract(
    summary="Change a line's quantity", tag="cart",
    body=SetQuantity, response=Cart, errors=(401, 404, 409),
    headers=("X-Cart-Token",),
))  # fmt: skip
async def set_quantity(request: Request, body: SetQuantity) -> Response:
    reply = await clients(request).cart.UpdateItemQuantity(
        cart_pb2.UpdateItemQuantityRequest(
            cart_token=_token(request), product_id=request.path_params["product_id"], quantity=body.quantity
        ),
        **call_options(request),
    )
    return _respond(reply.cart)


@api.operation("DELETE", "/api/v1/cart/items/{product_id}", Contract(
    summary="Remove a line", tag="cart", response=Cart, errors=(401,),
    headers=("X-Cart-Token",),
))  # fmt: skip
async def remove_item(request: Request) -> Response:
    reply = await clients(request).cart.RemoveItem(
        cart_pb2.RemoveItemRequest(cart_token=_token(request), product_id=request.path_params["product_id"]),
        **call_options(request),
    )
    return _respond(reply.cart)


@api.operation("GET", "/api/v1/cart/shipping-options", Contract(
    summary="Shipping quotes for the cart", tag="cart",
    response=ShippingOptions, errors=(401,),
    headers=("X-Cart-Token",),
))  # fmt: skip
async def shipping_options(request: Request) -> ShippingOptions:
    reply = await clients(request).cart.GetShippingOptions(
        cart_pb2.GetShippingOptionsRequest(cart_token=_token(request)), **call_options(request)
    )
    return ShippingOptions(
        options=[
            ShippingQuote(
                method=METHOD_NAMES[quote.method],
                price=Money.of(quote.price),
                free_shipping=quote.free_shipping,
                estimated_days_min=quote.estimated_days_min,
                estimated_days_max=quote.estimated_days_max,
            )
            for quote in reply.options
        ]
    )


@api.operation("POST", "/api/v1/cart/checkout", Contract(
    summary="Order the cart (send an Idempotency-Key)", tag="cart",
    body=CheckoutIn, response=Order, status=201, auth=True, errors=(404, 409, 422, 503),
    headers=("Idempotency-Key",), limits=("orders",),
))  # fmt: skip
async def checkout(request: Request, body: CheckoutIn) -> Order:
    """The same saga as ``POST /api/v1/orders``. The cart is emptied only when the
    order is created and stays as it was on any failure."""
    reply = await clients(request).cart.Checkout(
        cart_pb2.CheckoutRequest(
            shipping_method=METHODS[body.shipping_method],
            shipping_address=body.shipping_address.to_proto(),
            idempotency_key=idempotency_key(request),
        ),
        **call_options(request),
    )
    return Order.of(reply.order)
