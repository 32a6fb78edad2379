"""comments, likes, rating summaries and the outbox

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from common.outbox import create_outbox, drop_outbox

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUCKETS = [f"stars_{rating}" for rating in range(1, 6)]


def upgrade() -> None:
    op.create_table(
        "comments",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("parent_id", sa.Uuid(), sa.ForeignKey("comments.id", name="comments_parent_id_fkey"), nullable=True),
        sa.Column("author_id", sa.Uuid(), nullable=True),
        sa.Column("author_display_name", sa.Text(), nullable=False, server_default=""),
        sa.Column("body", sa.Text(), nullable=False, server_default=""),
        sa.Column("rating", sa.SmallInteger(), nullable=True),
        sa.Column("like_count", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("reply_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("verified_purchase", sa.Boolean(), nullable=False, server_default="false"),
        sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name="comments_rating_check"),
        sa.CheckConstraint("parent_id IS NULL OR rating IS NULL", name="comments_reply_rating_check"),
        sa.CheckConstraint("like_count >= 0", name="comments_like_count_check"),
        sa.CheckConstraint("reply_count >= 0", name="comments_reply_count_check"),
        sa.CheckConstraint(
            "CASE WHEN deleted_at IS NULL THEN author_id IS NOT NULL AND body <> '' "
            "ELSE author_id IS NULL AND body = '' AND rating IS NULL END",
            name="comments_deleted_check",
        ),
    )
    op.create_index(
        "comments_top_newest_idx",
        "comments",
        ["product_id", "created_at", "id"],
        postgresql_where=sa.text("parent_id IS NULL"),
    )
    op.create_index(
        "comments_top_liked_idx",
        "comments",
        ["product_id", "like_count", "created_at", "id"],
        postgresql_where=sa.text("parent_id IS NULL"),
    )
    op.create_index(
        "comments_replies_idx",
        "comments",
        ["parent_id", "created_at", "id"],
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )

    op.create_table(
        "comment_likes",
        sa.Column(
            "comment_id",
            sa.Uuid(),
            sa.ForeignKey("comments.id", ondelete="CASCADE", name="comment_likes_comment_id_fkey"),
            nullable=False,
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("comment_id", "user_id", name="comment_likes_pkey"),
    )

    op.create_table(
        "rating_summaries",
        sa.Column("product_id", sa.Uuid(), primary_key=True),
        sa.Column("rating_count", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("rating_sum", sa.BigInteger(), nullable=False, server_default="0"),
        *(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0") for name in BUCKETS),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "stars_1 >= 0 AND stars_2 >= 0 AND stars_3 >= 0 AND stars_4 >= 0 AND stars_5 >= 0",
            name="rating_summaries_buckets_check",
        ),
        sa.CheckConstraint(
            "rating_count = stars_1 + stars_2 + stars_3 + stars_4 + stars_5", name="rating_summaries_count_check"
        ),
        sa.CheckConstraint(
            "rating_sum = stars_1 + 2 * stars_2 + 3 * stars_3 + 4 * stars_4 + 5 * stars_5",
            name="rating_summaries_sum_check",
        ),
    )

    create_outbox(op.get_bind())


def downgrade() -> None:
    drop_outbox(op.get_bind())
    op.drop_table("rating_summaries")
    op.drop_table("comment_likes")
    op.drop_table("comments")
