"""Proto ⇄ domain for the CommentService: requests into checked domain values,
comments and summaries into messages (Timestamps through ``common.convert``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from shop.comment.v1 import comment_pb2
from shop.common.v1 import paging_pb2

from comment_svc import domain
from comment_svc.clients import Metadata
from comment_svc.comments import Caller, Page, Viewed
from comment_svc.domain import Comment, ListQuery, NewComment, RatingSummary, Sort
from common.auth import current_principal, require_user
from common.convert import optional_timestamp, timestamp
from common.errors import UnauthenticatedError
from common.grpc_server import Context
from common.validation import parse_uuid, require_uuid

SORTS: dict[int, Sort] = {
    comment_pb2.COMMENT_SORT_UNSPECIFIED: "newest",
    comment_pb2.COMMENT_SORT_NEWEST: "newest",
    comment_pb2.COMMENT_SORT_MOST_LIKED: "most_liked",
}
FORWARDED = ("authorization", "x-request-id")


# --- the caller ----------------------------------------------------------------------


def caller() -> Caller:
    """The signed-in caller of a write (UNAUTHENTICATED without one)."""
    principal = require_user()
    user_id = parse_uuid(principal.user_id)
    if user_id is None:
        raise UnauthenticatedError("the access token names no account; sign in again", reason="INVALID_TOKEN")
    return Caller(user_id=user_id, role=principal.role, admin=principal.is_admin)


def viewer() -> uuid.UUID | None:
    """The signed-in caller of a public read, if any."""
    principal = current_principal.get()
    return parse_uuid(principal.user_id) if principal else None


def forwarded(context: Context) -> Metadata:
    """The caller's token and request id, passed on to the services asked on their behalf."""
    return tuple((key, str(value)) for key, value in context.invocation_metadata() or () if key in FORWARDED)


# --- requests -------------------------------------------------------------------------


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def comment_id(request: Any) -> uuid.UUID:
    """The ``comment_id`` of a request naming one comment."""
    return require_uuid(request.comment_id, "comment_id", "a comment id")


def product_id(request: Any) -> uuid.UUID:
    """The ``product_id`` of a request naming one product."""
    return require_uuid(request.product_id, "product_id", "a product id")


def new_comment(request: comment_pb2.CreateCommentRequest) -> NewComment:
    return domain.validate_new_comment(
        request.product_id, _optional(request, "parent_id"), request.body, _optional(request, "rating")
    )


def change(request: comment_pb2.UpdateCommentRequest) -> domain.Change:
    return domain.validate_change(list(request.update_mask.paths), request.body, _optional(request, "rating"))


def list_query(request: comment_pb2.ListCommentsRequest) -> ListQuery:
    return domain.list_query(
        product_id=request.product_id,
        parent_id=_optional(request, "parent_id"),
        sort=SORTS.get(request.sort),
        page_size=request.page.page_size,
        page_token=request.page.page_token,
        replies=request.reply_limit,
    )


def product_ids(request: comment_pb2.BatchGetRatingSummariesRequest) -> list[uuid.UUID]:
    return domain.batch_product_ids(list(request.product_ids))


# --- answers --------------------------------------------------------------------------


def comment_to_proto(
    comment: Comment, liked: frozenset[uuid.UUID] = frozenset(), replies: Sequence[Comment] = ()
) -> comment_pb2.Comment:
    return comment_pb2.Comment(
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
        created_at=timestamp(comment.created_at),
        updated_at=timestamp(comment.updated_at),
        edited_at=optional_timestamp(comment.edited_at),
    )


def viewed_to_proto(viewed: Viewed) -> comment_pb2.Comment:
    return comment_to_proto(viewed.comment, viewed.liked)


def page_to_proto(page: Page) -> comment_pb2.ListCommentsResponse:
    return comment_pb2.ListCommentsResponse(
        comments=[comment_to_proto(comment, page.liked, page.replies.get(comment.id, ())) for comment in page.comments],
        page=paging_pb2.PageResponse(next_page_token=page.next_page_token),
    )


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
