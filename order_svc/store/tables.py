"""The tables of order_svc (SQLAlchemy Core): what migrations/order declares.

Besides orders, their lines and payments:

* ``idempotency_keys``: one row per (buyer, scope, key), claimed before the work
  and completed with the response in the work's own transaction;
* ``pending_reservations``: a stock reservation asked for but whose order is
  not written yet; an order's transaction removes its row, and the sweeper
  releases the reservation of any row left behind (a crash, a timeout);
* ``stock_actions``: releases and commits of reservations still to be sent to
  product_svc, written in the same transaction as the state change that needs
  them, so none is lost when product_svc is down;
* ``payment_events``: the payment processor's events (Stripe webhooks) already
  applied, by id, written in the transaction of their effect;
* ``cart_checkouts``: which order a cart generation became, written in the
  order's transaction, so one cart generation never becomes two orders;
* ``outbox``: the events (common/outbox.py).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from common.outbox import outbox_table
from order_svc.domain import Status

metadata = MetaData()
TZ = DateTime(timezone=True)

orders = Table(
    "orders",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, nullable=False),
    Column("status", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("subtotal_minor", BigInteger, nullable=False),
    Column("shipping_minor", BigInteger, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("shipping_method", Text, nullable=False),
    Column("shipping_address", JSONB, nullable=False),
    Column("carrier", Text),
    Column("tracking_number", Text),
    Column("cancel_reason", Text),
    Column("cancel_note", Text),
    Column("refunded", Boolean, nullable=False, server_default=false()),
    Column("created_at", TZ, nullable=False),
    Column("updated_at", TZ, nullable=False),
    Column("expires_at", TZ),
    Column("paid_at", TZ),
    Column("shipped_at", TZ),
    Column("delivered_at", TZ),
    Column("cancelled_at", TZ),
)
Index("orders_user_created", orders.c.user_id, orders.c.created_at.desc(), orders.c.id.desc())
Index("orders_created", orders.c.created_at.desc(), orders.c.id.desc())
Index("orders_expiring", orders.c.expires_at, postgresql_where=orders.c.status == Status.PENDING_PAYMENT.value)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("product_id", Uuid, nullable=False),
    Column("product_name", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    Column("line_total_minor", BigInteger, nullable=False),
    PrimaryKeyConstraint("order_id", "position"),
)
Index("order_lines_product", order_lines.c.product_id)

payments = Table(
    "payments",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", Text, nullable=False),
    Column("decline_reason", Text),
    Column("provider_reference", Text, nullable=False, server_default=""),
    Column("created_at", TZ, nullable=False),
    Column("refunded_at", TZ),
    # The processor that took it ("test" | "stripe"): the one that refunds it.
    Column("processor", Text, nullable=False, server_default="test"),
)
# At most one approved charge per order: never charged twice.
Index("payments_one_charge", payments.c.order_id, unique=True, postgresql_where=payments.c.status == "APPROVED")
Index(
    "payments_reference",
    payments.c.processor,
    payments.c.provider_reference,
    postgresql_where=payments.c.provider_reference != "",
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", Uuid, nullable=False),
    Column("scope", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("request_hash", Text, nullable=False),
    Column("resource_id", Uuid, nullable=False),
    Column("done", Boolean, nullable=False, server_default=false()),
    Column("response", LargeBinary),
    Column("locked_until", TZ, nullable=False),
    Column("created_at", TZ, nullable=False),
    # This claim's own token: only the current holder completes, releases or lapses the key.
    Column("holder", Uuid, nullable=False, server_default=func.gen_random_uuid()),
    PrimaryKeyConstraint("user_id", "scope", "key"),
)
Index("idempotency_keys_created", idempotency_keys.c.created_at)

pending_reservations = Table(
    "pending_reservations",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("created_at", TZ, nullable=False),
)

stock_actions = Table(
    "stock_actions",
    metadata,
    Column("order_id", Uuid, nullable=False),
    Column("action", Text, nullable=False),  # "release" | "commit"
    Column("created_at", TZ, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("order_id", "action"),
)

payment_events = Table(
    "payment_events",
    metadata,
    Column("processor", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("order_id", Uuid),
    Column("received_at", TZ, nullable=False),
    PrimaryKeyConstraint("processor", "event_id"),
)
Index("payment_events_received", payment_events.c.received_at)

cart_checkouts = Table(
    "cart_checkouts",
    metadata,
    Column("owner", Text, nullable=False),
    Column("generation", Text, nullable=False),
    Column("order_id", Uuid, nullable=False),
    Column("created_at", TZ, nullable=False),
    PrimaryKeyConstraint("owner", "generation"),
)
Index("cart_checkouts_created", cart_checkouts.c.created_at)

outbox = outbox_table(metadata)
