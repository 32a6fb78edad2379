"""The CommentService servicer: proto in → domain rules, store and peers → proto out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from shop.comment.v1 import comment_pb2, comment_pb2_grpc
from shop.common.v1 import paging_pb2

from comment_svc import domain
from comment_svc.domain import Comment, RatingSummary, Sort
from comment_svc.store import Store
from comment_svc.upstreams import Metadata, Upstreams
from common.auth import Principal, current_principal, require_user
from common.errors import FieldViolation, NotFoundError, UnauthenticatedError
from common.identity import callers
from common.ratelimit import Limiter, Window
from common.validation import invalid, page_size, parse_uuid

log = logging.getLogger("shop.comment")

Context = grpc.aio.ServicerContext[Any, Any]

SORTS: dict[int, Sort] = {
    comment_pb2.COMMENT_SORT_UNSPECIFIED: "newest",
    comment_pb2.COMMENT_SORT_NEWEST: "newest",
    comment_pb2.COMMENT_SORT_MOST_LIKED: "most_liked",
}
FORWARDED = ("authorization", "x-request-id")


# --- proto <-> domain ---------------------------------------------------------------


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def comment_to_proto(
    comment: Comment, liked: set[uuid.UUID] | frozenset[uuid.UUID] = frozenset(), replies: Sequence[Comment] = ()
) -> comment_pb2.Comment:
    message = comment_pb2.Comment(
        id=str(comment.id),
        product_id=str(comment.product_id),
        parent_id=str(comment.parent_id) if comment.parent_id else None,
        author_id=str(comment.author_id) if comment.author_id else "",
        author_display_name=comment.author_display_name,
        body=comment.body,
        rating=comment.rating,
        like_count=comment.like_count,
        liked_by_me=comment.id in liked,
        verified_purchase=comment.verified_purchase,
        edited=comment.edited_at is not None,
        deleted=comment.deleted,
        reply_count=comment.reply_count,
        replies=[comment_to_proto(reply, liked) for reply in replies],
        created_at=_timestamp(comment.created_at),
        updated_at=_timestamp(comment.updated_at),
    )
    if comment.edited_at is not None:
        message.edited_at.CopyFrom(_timestamp(comment.edited_at))
    return message


def summary_to_proto(summary: RatingSummary) -> comment_pb2.RatingSummary:
    return comment_pb2.RatingSummary(
        product_id=str(summary.product_id),
        count=summary.count,
        sum=summary.sum,
        average=summary.average,
        histogram=[
            comment_pb2.RatingBucket(rating=rating, count=count)
            for rating, count in zip(domain.RATINGS, summary.histogram, strict=True)
        ],
    )


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _user_id(principal: Principal) -> uuid.UUID:
    user_id = parse_uuid(principal.user_id)
    if user_id is None:
        raise UnauthenticatedError("the access token names no account; sign in again", reason="INVALID_TOKEN")
    return user_id


def _viewer() -> uuid.UUID | None:
    """The signed-in caller of a public read, if any."""
    principal = current_principal.get()
    return parse_uuid(principal.user_id) if principal else None


def _forwarded(context: Context) -> Metadata:
    """The caller's token and request id, passed on to the services asked on their behalf."""
    return tuple((key, str(value)) for key, value in context.invocation_metadata() or () if key in FORWARDED)


async def _cancel(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task


async def _false() -> bool:
    return False


class CommentService(comment_pb2_grpc.CommentServiceServicer):
    def __init__(
        self, *, store: Store, upstreams: Upstreams, limiter: Limiter | None = None, create_window: Window | None = None
    ) -> None:
        self.store = store
        self.upstreams = upstreams
        self.limiter = limiter
        self.create_window = create_window

    # -- writes
    @callers("edge")
    async def CreateComment(
        self, request: comment_pb2.CreateCommentRequest, context: Context
    ) -> comment_pb2.CreateCommentResponse:
        author = _user_id(require_user())
        new = domain.validate_new_comment(
            request.product_id, _optional(request, "parent_id"), request.body, _optional(request, "rating")
        )
        if self.limiter is not None and self.create_window is not None:
            await self.limiter.hit(
                self.create_window, str(author), "you posted too many comments lately; try again later"
            )
        forwarded = _forwarded(context)
        # Asked at once: the product (required), whether the author received it
        # (reviews only; best effort) and the author's display name (best effort).
        verified = asyncio.ensure_future(
            self.upstreams.has_purchased(author, new.product_id, forwarded) if new.parent_id is None else _false()
        )
        name = asyncio.ensure_future(self.upstreams.display_name(author, forwarded))
        try:
            await self.upstreams.require_product(new.product_id, forwarded)
            verified_purchase, display_name = await verified, await name
        except BaseException:
            await _cancel([verified, name])
            raise
        comment = await self.store.create_comment(
            new, author_id=author, author_display_name=display_name, verified_purchase=verified_purchase
        )
        log.info(
            "comment created",
            extra={"comment_id": str(comment.id), "product_id": str(comment.product_id), "reply": comment.is_reply},
        )
        return comment_pb2.CreateCommentResponse(comment=comment_to_proto(comment))

    @callers("edge")
    async def UpdateComment(
        self, request: comment_pb2.UpdateCommentRequest, context: Context
    ) -> comment_pb2.UpdateCommentResponse:
        user = _user_id(require_user())
        comment_id = domain.require_uuid(request.comment_id, "comment_id", "comment")
        change = domain.validate_change(list(request.update_mask.paths), request.body, _optional(request, "rating"))
        comment = await self.store.update_comment(comment_id, user, change)
        liked = await self.store.liked_by(user, [comment.id])
        return comment_pb2.UpdateCommentResponse(comment=comment_to_proto(comment, liked))

    @callers("edge")
    async def DeleteComment(
        self, request: comment_pb2.DeleteCommentRequest, context: Context
    ) -> comment_pb2.DeleteCommentResponse:
        principal = require_user()
        comment_id = domain.require_uuid(request.comment_id, "comment_id", "comment")
        outcome = await self.store.delete_comment(comment_id, _user_id(principal), admin=principal.is_admin)
        log.info("comment deleted", extra={"comment_id": str(comment_id), "outcome": outcome, "by": principal.role})
        return comment_pb2.DeleteCommentResponse()

    @callers("edge")
    async def LikeComment(
        self, request: comment_pb2.LikeCommentRequest, context: Context
    ) -> comment_pb2.LikeCommentResponse:
        user = _user_id(require_user())
        comment_id = domain.require_uuid(request.comment_id, "comment_id", "comment")
        name = await self.upstreams.display_name(user, _forwarded(context))
        count = await self.store.like(comment_id, user, name)
        return comment_pb2.LikeCommentResponse(like_count=count, liked_by_me=True)

    @callers("edge")
    async def UnlikeComment(
        self, request: comment_pb2.UnlikeCommentRequest, context: Context
    ) -> comment_pb2.UnlikeCommentResponse:
        user = _user_id(require_user())
        comment_id = domain.require_uuid(request.comment_id, "comment_id", "comment")
        count = await self.store.unlike(comment_id, user)
        return comment_pb2.UnlikeCommentResponse(like_count=count, liked_by_me=False)

    # -- reads
    @callers("edge")
    async def ListComments(
        self, request: comment_pb2.ListCommentsRequest, context: Context
    ) -> comment_pb2.ListCommentsResponse:
        product_id = domain.require_uuid(request.product_id, "product_id", "product")
        raw_parent = _optional(request, "parent_id")
        parent_id = domain.require_uuid(raw_parent, "parent_id", "comment") if raw_parent is not None else None
        sort = SORTS.get(request.sort)
        if sort is None:
            raise invalid(FieldViolation("sort", "unknown sort order"))
        size = page_size(request.page.page_size)
        per_parent = domain.reply_limit(request.reply_limit)
        scope = domain.list_scope(product_id, parent_id, sort)
        cursor = domain.decode_page_token(request.page.page_token, scope)

        grouped: dict[uuid.UUID, list[Comment]] = {}
        if parent_id is not None:
            parent = await self.store.get_comment(parent_id)
            if parent is None or parent.product_id != product_id:
                raise NotFoundError("no comment with this id on this product")
            rows = await self.store.list_replies(parent_id, cursor, size + 1)
            page, token = domain.next_page(rows, size, None, scope)
        else:
            rows = await self.store.list_top_level(product_id, sort, cursor, size + 1)
            page, token = domain.next_page(rows, size, sort, scope)
            with_replies = [comment.id for comment in page if comment.reply_count > 0]
            grouped = domain.group_replies(await self.store.first_replies(with_replies, per_parent))

        viewer = _viewer()
        shown = [comment.id for comment in page] + [reply.id for replies in grouped.values() for reply in replies]
        liked = await self.store.liked_by(viewer, shown) if viewer else set()
        return comment_pb2.ListCommentsResponse(
            comments=[comment_to_proto(comment, liked, grouped.get(comment.id, ())) for comment in page],
            page=paging_pb2.PageResponse(next_page_token=token),
        )

    @callers("edge")
    async def GetComment(
        self, request: comment_pb2.GetCommentRequest, context: Context
    ) -> comment_pb2.GetCommentResponse:
        comment_id = domain.require_uuid(request.comment_id, "comment_id", "comment")
        comment = await self.store.get_comment(comment_id)
        if comment is None:
            raise NotFoundError("no comment with this id")
        viewer = _viewer()
        liked = await self.store.liked_by(viewer, [comment.id]) if viewer else set()
        return comment_pb2.GetCommentResponse(comment=comment_to_proto(comment, liked))

    @callers("edge")
    async def GetRatingSummary(
        self, request: comment_pb2.GetRatingSummaryRequest, context: Context
    ) -> comment_pb2.GetRatingSummaryResponse:
        product_id = domain.require_uuid(request.product_id, "product_id", "product")
        [summary] = await self.store.rating_summaries([product_id])
        return comment_pb2.GetRatingSummaryResponse(summary=summary_to_proto(summary))

    @callers("edge")
    async def BatchGetRatingSummaries(
        self, request: comment_pb2.BatchGetRatingSummariesRequest, context: Context
    ) -> comment_pb2.BatchGetRatingSummariesResponse:
        product_ids = domain.batch_product_ids(list(request.product_ids))
        summaries = await self.store.rating_summaries(product_ids)
        return comment_pb2.BatchGetRatingSummariesResponse(summaries=[summary_to_proto(s) for s in summaries])
