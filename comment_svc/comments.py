"""The use cases of comments, reviews, likes and ratings: one method each.

Writes run in one transaction through the store's unit of work (the comment's
row locked and read first, the rules of ``comment_svc/domain.py`` checked
against it, the events of ``comment_svc/events.py`` written to the outbox in the
same transaction); the other services are asked through ``comment_svc/clients.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from comment_svc import domain, events
from comment_svc.clients import Clients, Metadata
from comment_svc.domain import Comment, Deletion, ListQuery, NewComment, RatingSummary
from comment_svc.store import Store, Work
from common.errors import NotFoundError
from common.ratelimit import Limiter, Window

log = logging.getLogger("shop.comment")


@dataclass(frozen=True)
class Caller:
    """The signed-in account a write is made for."""

    user_id: uuid.UUID
    role: str
    admin: bool = False


@dataclass(frozen=True)
class Viewed:
    """A comment as its viewer sees it: which of the comments shown they like."""

    comment: Comment
    liked: frozenset[uuid.UUID] = frozenset()


@dataclass(frozen=True)
class Page:
    """A page of a list, the first replies of each top-level comment, what the
    viewer likes among all of them and the token of the next page ("" at the end)."""

    comments: list[Comment]
    next_page_token: str
    replies: dict[uuid.UUID, list[Comment]] = field(default_factory=dict)
    liked: frozenset[uuid.UUID] = frozenset()


async def _cancel(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task


async def _false() -> bool:
    return False


class Comments:
    def __init__(
        self, *, store: Store, clients: Clients, limiter: Limiter | None = None, create_window: Window | None = None
    ) -> None:
        self.store = store
        self.clients = clients
        self.limiter = limiter
        self.create_window = create_window

    # -- writes
    async def create(self, author: Caller, new: NewComment, forwarded: Metadata) -> Comment:
        """Store a review or reply, count it in its parent and its product's
        summary, and write CommentCreated (and CommentReplied) to the outbox."""
        if self.limiter is not None and self.create_window is not None:
            await self.limiter.hit(
                self.create_window, str(author.user_id), "you posted too many comments lately; try again later"
            )
        authorship = await self._authorship(author.user_id, new, forwarded)
        async with self.store.unit_of_work() as work:
            parent: Comment | None = None
            if new.parent_id is not None:
                parent = domain.check_parent(await work.locked(new.parent_id), new)
            comment = await work.insert(new, authorship)
            if parent is not None:
                await work.count_reply(parent.id, +1)
            await work.rate(new.product_id, domain.rating_delta(None, new.rating))
            await work.publish(comment.id, events.comment_created(comment))
            if parent is not None:
                replied = events.comment_replied(comment, parent)
                if replied is not None:
                    await work.publish(comment.id, replied)
        log.info(
            "comment created",
            extra={"comment_id": str(comment.id), "product_id": str(comment.product_id), "reply": comment.is_reply},
        )
        return comment

    async def _authorship(self, author: uuid.UUID, new: NewComment, forwarded: Metadata) -> domain.Authorship:
        """Asked at once: the product (required), whether the author received it
        (reviews only; best effort) and the author's display name (best effort)."""
        verified = asyncio.ensure_future(
            self.clients.has_purchased(author, new.product_id, forwarded) if new.parent_id is None else _false()
        )
        name = asyncio.ensure_future(self.clients.display_name(author, forwarded))
        try:
            await self.clients.require_product(new.product_id, forwarded)
            verified_purchase, display_name = await verified, await name
        except BaseException:
            await _cancel([verified, name])
            raise
        return domain.Authorship(author, display_name, verified_purchase)

    async def update(self, caller: Caller, comment_id: uuid.UUID, change: domain.Change) -> Viewed:
        """The author's edit; the summary follows a changed rating."""
        async with self.store.unit_of_work() as work:
            current = await work.locked(comment_id)
            if current is None:
                raise NotFoundError("no comment with this id")
            edit = domain.apply_change(current, change, caller.user_id)
            comment = current
            if edit.changed:
                comment = await work.edit(comment_id, edit)
                await work.rate(current.product_id, domain.rating_delta(current.rating, edit.rating))
        liked = await self.store.liked_by(caller.user_id, [comment.id])
        return Viewed(comment, frozenset(liked))

    async def delete(self, caller: Caller, comment_id: uuid.UUID) -> Deletion:
        """Remove a comment (the author or an admin): a placeholder when it has
        replies, else the row; a removed placeholder left without replies goes too."""
        async with self.store.unit_of_work() as work:
            current = await work.locked(comment_id, key=True)
            if current is None:
                raise NotFoundError("no comment with this id")
            plan = domain.plan_deletion(current, caller.user_id, admin=caller.admin)
            if plan is Deletion.PLACEHOLDER:
                await work.blank(comment_id)
            elif plan is Deletion.REMOVE:
                await work.remove(comment_id)
                await self._prune_ancestors(work, current.parent_id)
            if plan is not Deletion.ALREADY:
                await work.rate(current.product_id, domain.rating_delta(current.rating, None))
        log.info("comment deleted", extra={"comment_id": str(comment_id), "outcome": plan.value, "by": caller.role})
        return plan

    @staticmethod
    async def _prune_ancestors(work: Work, parent_id: uuid.UUID | None) -> None:
        """One reply fewer for the parent; a removed placeholder with no replies
        left has nothing to hold together any more and is removed, up the thread."""
        while parent_id is not None:
            parent = await work.locked(parent_id, key=True)
            if parent is None:
                return
            if not domain.left_empty(parent):
                await work.count_reply(parent_id, -1)
                return
            await work.remove(parent_id)
            parent_id = parent.parent_id

    async def like(self, caller: Caller, comment_id: uuid.UUID, forwarded: Metadata) -> int:
        """Add the user's like (once); the like count after it."""
        name = await self.clients.display_name(caller.user_id, forwarded)
        async with self.store.unit_of_work() as work:
            comment = domain.check_likeable(await work.locked(comment_id))
            liked_at = await work.add_like(comment_id, caller.user_id)
            if liked_at is None:
                return comment.like_count
            count = await work.count_like(comment_id, +1)
            await work.publish(comment_id, events.comment_liked(comment, caller.user_id, name, count, liked_at))
            return count

    async def unlike(self, caller: Caller, comment_id: uuid.UUID) -> int:
        """Remove the user's like if there is one; the like count after it."""
        async with self.store.unit_of_work() as work:
            comment = await work.locked(comment_id)
            if comment is None:
                raise NotFoundError("no comment with this id")
            if not await work.remove_like(comment_id, caller.user_id):
                return comment.like_count
            return await work.count_like(comment_id, -1)

    # -- reads
    async def list_comments(self, query: ListQuery, viewer: uuid.UUID | None) -> Page:
        """A page of a product's top-level comments (each with its first replies)
        or of one comment's replies."""
        listing = query.listing
        grouped: dict[uuid.UUID, list[Comment]] = {}
        if listing.parent_id is not None:
            parent = await self.store.get_comment(listing.parent_id)
            if parent is None or parent.product_id != listing.product_id:
                raise NotFoundError("no comment with this id on this product")
            rows = await self.store.list_replies(listing.parent_id, query.after, query.size + 1)
            page, token = domain.next_page(rows, query.size, listing)
        else:
            rows = await self.store.list_top_level(listing.product_id, listing.sort, query.after, query.size + 1)
            page, token = domain.next_page(rows, query.size, listing)
            with_replies = [comment.id for comment in page if comment.reply_count > 0]
            grouped = domain.group_replies(await self.store.first_replies(with_replies, query.per_parent))
        shown = [comment.id for comment in page] + [reply.id for replies in grouped.values() for reply in replies]
        liked = await self.store.liked_by(viewer, shown) if viewer else set()
        return Page(page, token, grouped, frozenset(liked))

    async def get(self, comment_id: uuid.UUID, viewer: uuid.UUID | None) -> Viewed:
        comment = await self.store.get_comment(comment_id)
        if comment is None:
            raise NotFoundError("no comment with this id")
        liked = await self.store.liked_by(viewer, [comment.id]) if viewer else set()
        return Viewed(comment, frozenset(liked))

    async def rating_summaries(self, product_ids: Sequence[uuid.UUID]) -> list[RatingSummary]:
        """One summary per product, in the given order (zero for unrated ones)."""
        return await self.store.rating_summaries(product_ids)

    async def rating_summary(self, product_id: uuid.UUID) -> RatingSummary:
        [summary] = await self.store.rating_summaries([product_id])
        return summary
