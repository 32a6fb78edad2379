"""Payments for real: key holders, the processor of each payment, processor events, cart checkouts.

* ``idempotency_keys.holder``: each claim of a key carries its own token; only
  the current holder completes, releases or lapses the key (a takeover of a
  payment key keeps the payment id, so the id cannot tell the holders apart).
* ``payments.processor``: the processor that took the payment ("test" or
  "stripe"), which is also the one that refunds it.  At most one APPROVED
  payment per order (a second charge that went through anyway is refunded and
  kept as REFUNDED beside it).
* ``payment_events``: processor events (Stripe webhooks) already applied, by id.
* ``cart_checkouts``: one order per cart generation (a cart's contents as of
  its last change), written with the order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "idempotency_keys",
        sa.Column("holder", sa.Uuid, nullable=False, server_default=sa.text("gen_random_uuid()")),
    )
    op.add_column("payments", sa.Column("processor", sa.Text, nullable=False, server_default="test"))
    op.drop_index("payments_one_charge", table_name="payments")
    op.create_index(
        "payments_one_charge", "payments", ["order_id"], unique=True, postgresql_where=sa.text("status = 'APPROVED'")
    )
    op.create_index(
        "payments_reference",
        "payments",
        ["processor", "provider_reference"],
        postgresql_where=sa.text("provider_reference <> ''"),
    )
    op.create_table(
        "payment_events",
        sa.Column("processor", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("order_id", sa.Uuid),
        sa.Column("received_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("processor", "event_id"),
    )
    op.create_index("payment_events_received", "payment_events", ["received_at"])
    op.create_table(
        "cart_checkouts",
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("generation", sa.Text, nullable=False),
        sa.Column("order_id", sa.Uuid, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("owner", "generation"),
    )
    op.create_index("cart_checkouts_created", "cart_checkouts", ["created_at"])


def downgrade() -> None:
    op.drop_table("cart_checkouts")
    op.drop_table("payment_events")
    op.drop_index("payments_reference", table_name="payments")
    op.drop_index("payments_one_charge", table_name="payments")
    op.create_index(
        "payments_one_charge",
        "payments",
        ["order_id"],
        unique=True,
        postgresql_where=sa.text("status in ('APPROVED', 'REFUNDED')"),
    )
    op.drop_column("payments", "processor")
    op.drop_column("idempotency_keys", "holder")
