"""Persistence of comments, likes and rating summaries in PostgreSQL (SQLAlchemy
Core, async).  The only module of comment_svc that knows SQL: it hands out the
unit of work the use cases (``comment_svc/comments.py``) write through, and
returns domain objects; the rules stay in ``comment_svc/domain.py``.

The schema is managed by Alembic (``migrations/comment/``); the tables below
describe it for queries and for ``alembic revision --autogenerate``.

Exactness under concurrency comes from row locks, not from retries:

* every write to a comment first locks its row (``FOR NO KEY UPDATE``, or
  ``FOR UPDATE`` to delete it) and reads it (:meth:`Work.locked`), so rights,
  state and the old rating are checked against what is committed;
* a like is a row of ``comment_likes`` (primary key (comment_id, user_id)):
  ``INSERT … ON CONFLICT DO NOTHING`` tells whether it is new, and only then is
  ``comments.like_count`` incremented, in the same transaction, under the
  comment's lock (an unlike mirrors it);
* ``rating_summaries`` holds per product count, sum and the five buckets,
  changed by a delta (old rating → new rating) in the transaction that
  creates, edits or deletes the review: a zero row is inserted if missing,
  then an UPDATE adds the delta under the row's lock; check constraints keep
  count = Σ buckets and sum = Σ rating × bucket.

Locks are always taken child before parent and comment before summary, so two
writers never wait on each other in a circle.  Events go to the outbox in the
same transactions (:meth:`Work.publish`; see ``comment_svc/events.py``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Row,
    SmallInteger,
    Table,
    Text,
    Uuid,
    bindparam,
    delete,
    func,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from comment_svc import domain
from comment_svc.domain import Comment, Cursor, Edit, NewComment, RatingDelta, RatingSummary, Sort
from common.events import COMMENTS_TOPIC
from common.outbox import add_event, outbox_table
from common.unit_of_work import unit_of_work

log = logging.getLogger("shop.comment.store")

metadata = MetaData()

comments = Table(
    "comments",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("product_id", Uuid, nullable=False),
    # The comment this one replies to; NULL for a top-level review.
    Column("parent_id", Uuid, ForeignKey("comments.id", name="comments_parent_id_fkey"), nullable=True),
    # NULL (and name and body empty, rating NULL) once deleted.
    Column("author_id", Uuid, nullable=True),
    Column("author_display_name", Text, nullable=False, server_default=""),
    Column("body", Text, nullable=False, server_default=""),
    Column("rating", SmallInteger, nullable=True),
    Column("like_count", BigInteger, nullable=False, server_default="0"),
    # Direct replies, removed placeholders included.
    Column("reply_count", Integer, nullable=False, server_default="0"),
    Column("verified_purchase", Boolean, nullable=False, server_default="false"),
    Column("edited_at", DateTime(timezone=True), nullable=True),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("rating BETWEEN 1 AND 5", name="comments_rating_check"),
    CheckConstraint("parent_id IS NULL OR rating IS NULL", name="comments_reply_rating_check"),
    CheckConstraint("like_count >= 0", name="comments_like_count_check"),
    CheckConstraint("reply_count >= 0", name="comments_reply_count_check"),
    CheckConstraint(
        "CASE WHEN deleted_at IS NULL THEN author_id IS NOT NULL AND body <> '' "
        "ELSE author_id IS NULL AND body = '' AND rating IS NULL END",
        name="comments_deleted_check",
    ),
)
# Keyset paging of a product's top-level comments, newest or most liked first,
# and of a comment's replies, oldest first (the same indexes scanned either way).
Index(
    "comments_top_newest_idx",
    comments.c.product_id,
    comments.c.created_at,
    comments.c.id,
    postgresql_where=comments.c.parent_id.is_(None),
)
Index(
    "comments_top_liked_idx",
    comments.c.product_id,
    comments.c.like_count,
    comments.c.created_at,
    comments.c.id,
    postgresql_where=comments.c.parent_id.is_(None),
)
Index(
    "comments_replies_idx",
    comments.c.parent_id,
    comments.c.created_at,
    comments.c.id,
    postgresql_where=comments.c.parent_id.isnot(None),
)

comment_likes = Table(
    "comment_likes",
    metadata,
    Column(
        "comment_id",
        Uuid,
        ForeignKey("comments.id", ondelete="CASCADE", name="comment_likes_comment_id_fkey"),
        nullable=False,
    ),
    Column("user_id", Uuid, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # One like per user per comment.
    PrimaryKeyConstraint("comment_id", "user_id", name="comment_likes_pkey"),
)

BUCKETS = tuple(f"stars_{rating}" for rating in domain.RATINGS)

rating_summaries = Table(
    "rating_summaries",
    metadata,
    Column("product_id", Uuid, primary_key=True),
    Column("rating_count", BigInteger, nullable=False, server_default="0"),
    Column("rating_sum", BigInteger, nullable=False, server_default="0"),
    *(Column(name, BigInteger, nullable=False, server_default="0") for name in BUCKETS),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "stars_1 >= 0 AND stars_2 >= 0 AND stars_3 >= 0 AND stars_4 >= 0 AND stars_5 >= 0",
        name="rating_summaries_buckets_check",
    ),
    CheckConstraint(
        "rating_count = stars_1 + stars_2 + stars_3 + stars_4 + stars_5", name="rating_summaries_count_check"
    ),
    CheckConstraint(
        "rating_sum = stars_1 + 2 * stars_2 + 3 * stars_3 + 4 * stars_4 + 5 * stars_5",
        name="rating_summaries_sum_check",
    ),
)

outbox = outbox_table(metadata)


def _comment(row: Row[Any]) -> Comment:
    m = row._mapping
    return Comment(
        id=m["id"],
        product_id=m["product_id"],
        parent_id=m["parent_id"],
        author_id=m["author_id"],
        author_display_name=m["author_display_name"],
        body=m["body"],
        rating=m["rating"],
        like_count=m["like_count"],
        reply_count=m["reply_count"],
        verified_purchase=m["verified_purchase"],
        edited_at=m["edited_at"],
        deleted_at=m["deleted_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _summary(product_id: uuid.UUID, row: Row[Any] | None) -> RatingSummary:
    if row is None:
        return RatingSummary(product_id)
    m = row._mapping
    histogram = (m["stars_1"], m["stars_2"], m["stars_3"], m["stars_4"], m["stars_5"])
    return RatingSummary(product_id, count=m["rating_count"], sum=m["rating_sum"], histogram=histogram)


class Work:
    """One transaction of writes (from :meth:`Store.unit_of_work`): committed when
    the ``async with`` block ends, rolled back when it raises."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def locked(self, comment_id: uuid.UUID, *, key: bool = False) -> Comment | None:
        """The comment, its row locked until the transaction ends (``key``: FOR
        UPDATE, needed to delete it; else FOR NO KEY UPDATE)."""
        query = select(comments).where(comments.c.id == comment_id)
        query = query.with_for_update() if key else query.with_for_update(key_share=True)
        row = (await self._conn.execute(query)).one_or_none()
        return _comment(row) if row else None

    async def insert(self, new: NewComment, author: domain.Authorship) -> Comment:
        row = (
            await self._conn.execute(
                comments.insert()
                .values(
                    id=uuid.uuid4(),
                    product_id=new.product_id,
                    parent_id=new.parent_id,
                    author_id=author.author_id,
                    author_display_name=author.display_name,
                    body=new.body,
                    rating=new.rating,
                    verified_purchase=author.verified_purchase,
                    # The time of the insert, not of the transaction's start.
                    created_at=func.clock_timestamp(),
                    updated_at=func.clock_timestamp(),
                )
                .returning(*comments.c)
            )
        ).one()
        return _comment(row)

    async def edit(self, comment_id: uuid.UUID, edit: Edit) -> Comment:
        """The new body and rating, marked edited."""
        row = (
            await self._conn.execute(
                update(comments)
                .where(comments.c.id == comment_id)
                .values(body=edit.body, rating=edit.rating, edited_at=func.now(), updated_at=func.now())
                .returning(*comments.c)
            )
        ).one()
        return _comment(row)

    async def blank(self, comment_id: uuid.UUID) -> None:
        """Turn the comment into a "removed" placeholder: no author, body or rating."""
        await self._conn.execute(
            update(comments)
            .where(comments.c.id == comment_id)
            .values(
                author_id=None,
                author_display_name="",
                body="",
                rating=None,
                verified_purchase=False,
                deleted_at=func.now(),
                updated_at=func.now(),
            )
        )

    async def remove(self, comment_id: uuid.UUID) -> None:
        await self._conn.execute(delete(comments).where(comments.c.id == comment_id))

    async def count_reply(self, parent_id: uuid.UUID, step: int) -> None:
        """One reply more (+1) or fewer (-1) for the parent."""
        await self._conn.execute(
            update(comments).where(comments.c.id == parent_id).values(reply_count=comments.c.reply_count + step)
        )

    async def add_like(self, comment_id: uuid.UUID, user_id: uuid.UUID) -> datetime | None:
        """Record the user's like; when it was made, or None when it existed already."""
        added = (
            await self._conn.execute(
                insert(comment_likes)
                .values(comment_id=comment_id, user_id=user_id)
                .on_conflict_do_nothing(index_elements=["comment_id", "user_id"])
                .returning(comment_likes.c.created_at)
            )
        ).one_or_none()
        return None if added is None else added.created_at

    async def remove_like(self, comment_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        """Drop the user's like; whether there was one."""
        removed = (
            await self._conn.execute(
                delete(comment_likes)
                .where(comment_likes.c.comment_id == comment_id, comment_likes.c.user_id == user_id)
                .returning(comment_likes.c.user_id)
            )
        ).one_or_none()
        return removed is not None

    async def count_like(self, comment_id: uuid.UUID, step: int) -> int:
        """One like more (+1) or fewer (-1) on the comment; the count after it."""
        return int(
            (
                await self._conn.execute(
                    update(comments)
                    .where(comments.c.id == comment_id)
                    .values(like_count=comments.c.like_count + step)
                    .returning(comments.c.like_count)
                )
            ).scalar_one()
        )

    async def rate(self, product_id: uuid.UUID, delta: RatingDelta) -> None:
        """Apply a rating change to the product's summary, under the summary row's
        lock.  (Not one INSERT … ON CONFLICT DO UPDATE: PostgreSQL checks the
        constraints of the row it would insert, and a delta alone is no valid row.)"""
        if delta.empty:
            return
        await self._conn.execute(
            insert(rating_summaries).values(product_id=product_id).on_conflict_do_nothing(index_elements=["product_id"])
        )
        table = rating_summaries.c
        await self._conn.execute(
            update(rating_summaries)
            .where(table.product_id == product_id)
            .values(
                rating_count=table.rating_count + delta.count,
                rating_sum=table.rating_sum + delta.sum,
                updated_at=func.now(),
                **{name: table[name] + value for name, value in zip(BUCKETS, delta.buckets, strict=True)},
            )
        )

    async def publish(self, comment_id: uuid.UUID, message: Message) -> str:
        """Write one event, keyed by the comment it is about, to the outbox in this
        transaction (published after commit); its event id."""
        return await add_event(self._conn, outbox, topic=COMMENTS_TOPIC, key=str(comment_id), message=message)


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Every read below is one statement: on an autocommit connection it is
        # one round trip, without the BEGIN and ROLLBACK of an implicit transaction.
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")

    def unit_of_work(self) -> AbstractAsyncContextManager[Work]:
        """A transaction of writes: ``async with store.unit_of_work() as work: ...``."""
        return unit_of_work(self._engine, Work)

    # -- reads
    async def get_comment(self, comment_id: uuid.UUID) -> Comment | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(comments).where(comments.c.id == comment_id))).one_or_none()
        return _comment(row) if row else None

    async def list_top_level(
        self, product_id: uuid.UUID, sort: Sort, after: Cursor | None, limit: int
    ) -> list[Comment]:
        """A product's top-level comments, newest or most liked first."""
        c = comments.c
        query = select(comments).where(c.product_id == product_id, c.parent_id.is_(None))
        if sort == "most_liked":
            query = query.order_by(c.like_count.desc(), c.created_at.desc(), c.id.desc())
            if after is not None:
                position = (after.like_count, after.created_at, after.id)
                query = query.where(tuple_(c.like_count, c.created_at, c.id) < position)
        else:
            query = query.order_by(c.created_at.desc(), c.id.desc())
            if after is not None:
                query = query.where(tuple_(c.created_at, c.id) < (after.created_at, after.id))
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        return [_comment(row) for row in rows]

    async def list_replies(self, parent_id: uuid.UUID, after: Cursor | None, limit: int) -> list[Comment]:
        """A comment's direct replies, oldest first."""
        c = comments.c
        query = select(comments).where(c.parent_id == parent_id).order_by(c.created_at, c.id)
        if after is not None:
            query = query.where(tuple_(c.created_at, c.id) > (after.created_at, after.id))
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        return [_comment(row) for row in rows]

    async def first_replies(self, parent_ids: Sequence[uuid.UUID], per_parent: int) -> list[Comment]:
        """The oldest ``per_parent`` direct replies of each parent, in one query
        (a LATERAL index scan per parent)."""
        if not parent_ids:
            return []
        c = comments.c
        ids = bindparam("parent_ids", list(parent_ids), type_=ARRAY(Uuid))
        parents = func.unnest(ids).table_valued("id").render_derived(name="parents")
        replies = (
            select(comments)
            .where(c.parent_id == parents.c.id)
            .order_by(c.created_at, c.id)
            .limit(per_parent)
            .lateral("replies")
        )
        query = select(replies).select_from(parents.join(replies, true()))
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_comment(row) for row in rows]

    async def liked_by(self, user_id: uuid.UUID, comment_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these comments the user likes."""
        if not comment_ids:
            return set()
        query = select(comment_likes.c.comment_id).where(
            comment_likes.c.user_id == user_id, comment_likes.c.comment_id.in_(list(comment_ids))
        )
        async with self._reader.connect() as conn:
            return set((await conn.scalars(query)).all())

    async def rating_summaries(self, product_ids: Sequence[uuid.UUID]) -> list[RatingSummary]:
        """One summary per product, in the given order (zero for unrated ones)."""
        if not product_ids:
            return []
        query = select(rating_summaries).where(rating_summaries.c.product_id.in_(list(product_ids)))
        async with self._reader.connect() as conn:
            rows = {row.product_id: row for row in (await conn.execute(query)).all()}
        return [_summary(product_id, rows.get(product_id)) for product_id in product_ids]
