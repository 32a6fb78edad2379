"""Orders, lines, payments, idempotency keys, reservation safety net, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from common.outbox import create_outbox, drop_outbox

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("user_id", sa.Uuid, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("subtotal_minor", sa.BigInteger, nullable=False),
        sa.Column("shipping_minor", sa.BigInteger, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("shipping_method", sa.Text, nullable=False),
        sa.Column("shipping_address", postgresql.JSONB, nullable=False),
        sa.Column("carrier", sa.Text),
        sa.Column("tracking_number", sa.Text),
        sa.Column("cancel_reason", sa.Text),
        sa.Column("cancel_note", sa.Text),
        sa.Column("refunded", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("expires_at", TZ),
        sa.Column("paid_at", TZ),
        sa.Column("shipped_at", TZ),
        sa.Column("delivered_at", TZ),
        sa.Column("cancelled_at", TZ),
        sa.CheckConstraint(
            "status in ('PENDING_PAYMENT', 'PAID', 'SHIPPED', 'DELIVERED', 'CANCELLED')", name="orders_status"
        ),
        sa.CheckConstraint("total_minor = subtotal_minor + shipping_minor", name="orders_total"),
    )
    op.create_index("orders_user_created", "orders", ["user_id", sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index("orders_created", "orders", [sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index("orders_expiring", "orders", ["expires_at"], postgresql_where=sa.text("status = 'PENDING_PAYMENT'"))
    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.Uuid, sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("product_id", sa.Uuid, nullable=False),
        sa.Column("product_name", sa.Text, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger, nullable=False),
        sa.Column("line_total_minor", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("order_id", "position"),
        sa.CheckConstraint("quantity > 0", name="order_lines_quantity"),
        sa.CheckConstraint("line_total_minor = unit_price_minor * quantity", name="order_lines_total"),
    )
    op.create_index("order_lines_product", "order_lines", ["product_id"])
    op.create_table(
        "payments",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("order_id", sa.Uuid, sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("decline_reason", sa.Text),
        sa.Column("provider_reference", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("refunded_at", TZ),
    )
    op.create_index("ix_payments_order_id", "payments", ["order_id"])
    # At most one approved (or later refunded) charge per order: never charged twice.
    op.create_index(
        "payments_one_charge",
        "payments",
        ["order_id"],
        unique=True,
        postgresql_where=sa.text("status in ('APPROVED', 'REFUNDED')"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.Uuid, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("resource_id", sa.Uuid, nullable=False),
        sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("response", sa.LargeBinary),
        sa.Column("locked_until", TZ, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "scope", "key"),
    )
    op.create_index("idempotency_keys_created", "idempotency_keys", ["created_at"])
    op.create_table(
        "pending_reservations",
        sa.Column("order_id", sa.Uuid, primary_key=True),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "stock_actions",
        sa.Column("order_id", sa.Uuid, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("order_id", "action"),
    )
    create_outbox(op.get_bind())


def downgrade() -> None:
    drop_outbox(op.get_bind())
    for table in ("stock_actions", "pending_reservations", "idempotency_keys", "payments", "order_lines", "orders"):
        op.drop_table(table)
