"""Comments and reviews (``/api/v1/products/{id}/comments``, ``/api/v1/comments``)
and rating summaries (``/api/v1/products/{id}/rating``).  Reads are public (a
token, when sent, fills ``liked_by_me``); writes need a signed-in user."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from pydantic import BaseModel, Field
from shop.comment.v1 import comment_pb2
from starlette.requests import Request

from common.convert import optional_datetime_of
from common.errors import FieldViolation
from edge.api import Api, Contract
from edge.clients import call_options, clients
from edge.problems import HttpProblemError, renaming_fields
from edge.ratings import RatingCache
from edge.routes.models import PageQuery, Strict, Uuid

api = Api(upstreams=["comment_svc"])
log = logging.getLogger("shop.edge.comments")

T = TypeVar("T")

Sort = Literal["newest", "most_liked"]
SORT_TO_PROTO: dict[Sort, comment_pb2.CommentSort.ValueType] = {
    "newest": comment_pb2.COMMENT_SORT_NEWEST,
    "most_liked": comment_pb2.COMMENT_SORT_MOST_LIKED,
}

Id = Annotated[Uuid, Field(min_length=1, max_length=64)]
# The service counts characters after trimming (1-5000); this only bounds the JSON.
Body = Annotated[
    str, Field(max_length=20_000, description="1 to 5000 characters after trimming; no control characters")
]
Rating = Annotated[int, Field(ge=1, le=5, description="1 to 5 stars; top-level reviews only")]


# --- shapes -----------------------------------------------------------------------------------------


class Reply(BaseModel):
    """A comment as it appears under its parent in a listing."""

    id: Uuid
    product_id: Uuid
    parent_id: Uuid | None = Field(description="the comment this one replies to; null for a review")
    author_id: Uuid | None = Field(description="null once removed")
    author_display_name: str
    body: str = Field(description="empty once removed")
    rating: int | None
    like_count: int
    liked_by_me: bool
    verified_purchase: bool = Field(description="the author had received the product when posting")
    edited: bool
    edited_at: datetime | None
    deleted: bool = Field(description="a removed comment kept as a placeholder because it has replies")
    reply_count: int
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def fields_of(cls, message: comment_pb2.Comment) -> dict[str, Any]:
        return {
            "id": message.id,
            "product_id": message.product_id,
            "parent_id": message.parent_id if message.HasField("parent_id") else None,
            "author_id": message.author_id or None,
            "author_display_name": message.author_display_name,
            "body": message.body,
            "rating": message.rating if message.HasField("rating") else None,
            "like_count": message.like_count,
            "liked_by_me": message.liked_by_me,
            "verified_purchase": message.verified_purchase,
            "edited": message.edited,
            "edited_at": optional_datetime_of(message.edited_at),
            "deleted": message.deleted,
            "reply_count": message.reply_count,
            "created_at": optional_datetime_of(message.created_at),
            "updated_at": optional_datetime_of(message.updated_at),
        }

    @classmethod
    def of(cls, message: comment_pb2.Comment) -> Reply:
        return cls(**cls.fields_of(message))


class Comment(Reply):
    replies: list[Reply] = Field(description="the first replies, oldest first (top-level listings only)")

    @classmethod
    def of(cls, message: comment_pb2.Comment) -> Comment:
        return cls(**cls.fields_of(message), replies=[Reply.of(reply) for reply in message.replies])


class CommentPage(BaseModel):
    items: list[Comment]
    next_page_token: str


class Likes(BaseModel):
    like_count: int
    liked_by_me: bool


class RatingBucket(BaseModel):
    rating: int
    count: int


class RatingSummary(BaseModel):
    product_id: Uuid
    count: int = Field(description="rated reviews (removed ones excluded)")
    sum: int = Field(description="sum of their ratings: the exact average is sum / count")
    average: float = Field(description="sum / count rounded to two decimals; 0 without ratings")
    histogram: list[RatingBucket] = Field(description="ratings 1 to 5, in order")

    @classmethod
    def of(cls, message: comment_pb2.RatingSummary) -> RatingSummary:
        return cls(
            product_id=message.product_id,
            count=message.count,
            sum=message.sum,
            average=message.average,
            histogram=[RatingBucket(rating=b.rating, count=b.count) for b in message.histogram],
        )


class CommentBody(Strict):
    body: Body
    rating: Rating | None = None
    parent_id: Id | None = Field(default=None, description="reply to this comment (of the same product)")


class CommentPatch(Strict):
    """Only the fields present change; ``"rating": null`` removes the rating."""

    body: Body | None = None
    rating: Rating | None = None


class CommentsQuery(PageQuery):
    sort: Sort = Field(default="newest", description="order of top-level comments; replies are oldest first")
    parent_id: Id | None = Field(default=None, description="list the replies of this comment instead")
    reply_limit: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3, description="replies shown under each top-level comment"
    )


# --- calls ------------------------------------------------------------------------------------------

# The service names fields after the proto; clients know the JSON names.
_FIELD_NAMES = {"page.page_token": "page_token", "page.page_size": "page_size", "update_mask": "body"}


async def _call(call: Awaitable[T]) -> T:
    """An upstream call whose 4xx problems name the fields as this API does."""
    return await renaming_fields(call, lambda field: _FIELD_NAMES.get(field, field))


# Codes with which comment_svc refuses a write it did not make; after any
# other failure (a lost answer, an internal error) it may have been made.
_REFUSED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def _maybe_written(exc: BaseException) -> bool:
    """Whether a failed write may still have happened: not when comment_svc
    refused it (a 4xx problem), yes when its answer was lost or it failed inside."""
    if isinstance(exc, HttpProblemError):
        return exc.problem.status >= 500
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() not in _REFUSED
    return True


def rating_cache(request: Request) -> RatingCache[RatingSummary]:
    cache: RatingCache[RatingSummary] = request.app.state.ratings
    return cache


async def rating_summary(request: Request, product_id: str) -> RatingSummary | None:
    """A product's rating summary for other routes (product detail), kept briefly
    (edge/ratings.py); None when comment_svc cannot give it, so the product is
    still shown."""
    cache = rating_cache(request)
    cached = cache.get(product_id)
    if cached is not None:
        return cached
    asked_at = cache.clock()
    try:
        reply = await clients(request).comment.GetRatingSummary(
            comment_pb2.GetRatingSummaryRequest(product_id=product_id), **call_options(request)
        )
    except grpc.aio.AioRpcError as exc:
        log.warning("no rating summary for a product", extra={"code": exc.code().name, "product_id": product_id})
        return None
    summary = RatingSummary.of(reply.summary)
    cache.put(product_id, summary, asked_at)
    return summary


# --- /api/v1/products/{product_id}/comments -------------------------------------------------------------


@api.operation("GET", "/api/v1/products/{product_id}/comments", Contract(
    summary="A product's comments and reviews", tag="comments",
    query=CommentsQuery, response=CommentPage, errors=(404,),
))  # fmt: skip
async def list_comments(request: Request, query: CommentsQuery) -> CommentPage:
    """Top-level comments (newest or most liked first) with their first replies
    grouped under them; with ``parent_id``, that comment's replies, oldest first.
    Page with ``next_page_token``; a token only works for the list that produced it."""
    message = comment_pb2.ListCommentsRequest(
        product_id=request.path_params["product_id"],
        sort=SORT_TO_PROTO[query.sort],
        page=query.page(),
        reply_limit=query.reply_limit,
    )
    if query.parent_id is not None:
        message.parent_id = query.parent_id
    reply = await _call(clients(request).comment.ListComments(message, **call_options(request)))
    return CommentPage(items=[Comment.of(c) for c in reply.comments], next_page_token=reply.page.next_page_token)


@api.operation("POST", "/api/v1/products/{product_id}/comments", Contract(
    summary="Post a review or a reply", tag="comments",
    body=CommentBody, response=Comment, status=201, auth=True, errors=(404, 409, 503), limits=("comments",),
))  # fmt: skip
async def create_comment(request: Request, body: CommentBody) -> Comment:
    """A review (top level) may carry a ``rating``; a reply (``parent_id``) may
    not. The product must exist (404). A review is marked ``verified_purchase``
    when its author has received the product. Replying to a removed comment is 409.
    Too many comments by one user lately get 429 (policy `comments`) with
    `Retry-After`, `RateLimit-Policy` and `RateLimit`."""
    message = comment_pb2.CreateCommentRequest(
        product_id=request.path_params["product_id"], body=body.body, rating=body.rating, parent_id=body.parent_id
    )
    try:
        reply = await _call(clients(request).comment.CreateComment(message, **call_options(request)))
    finally:  # also when the answer is lost: the comment may have been written
        rating_cache(request).drop(message.product_id)
    return Comment.of(reply.comment)


@api.operation("GET", "/api/v1/products/{product_id}/rating", Contract(
    summary="A product's rating summary", tag="comments",
    response=RatingSummary, errors=(400,),
))  # fmt: skip
async def get_rating(request: Request) -> RatingSummary:
    """Count, sum, average and the histogram of 1 to 5 stars; zero for a product without ratings."""
    reply = await _call(
        clients(request).comment.GetRatingSummary(
            comment_pb2.GetRatingSummaryRequest(product_id=request.path_params["product_id"]), **call_options(request)
        )
    )
    return RatingSummary.of(reply.summary)


# --- /api/v1/comments/{comment_id} ------------------------------------------------------------------------


@api.operation("GET", "/api/v1/comments/{comment_id}", Contract(
    summary="One comment", tag="comments", response=Comment, errors=(400, 404),
))  # fmt: skip
async def get_comment(request: Request) -> Comment:
    reply = await _call(
        clients(request).comment.GetComment(
            comment_pb2.GetCommentRequest(comment_id=request.path_params["comment_id"]), **call_options(request)
        )
    )
    return Comment.of(reply.comment)


@api.operation("PATCH", "/api/v1/comments/{comment_id}", Contract(
    summary="Edit your comment", tag="comments",
    body=CommentPatch, response=Comment, auth=True, errors=(403, 404, 409),
))  # fmt: skip
async def update_comment(request: Request, body: CommentPatch) -> Comment:
    """The author only (403 for anyone else); the comment is marked edited. A
    removed comment cannot be edited (409)."""
    present = body.model_dump(exclude_unset=True)
    if not present:
        raise HttpProblemError(400, "send body, rating or both")
    if "body" in present and body.body is None:
        raise HttpProblemError(400, "the request has invalid fields", [FieldViolation("body", "must not be null")])
    message = comment_pb2.UpdateCommentRequest(
        comment_id=request.path_params["comment_id"],
        body=body.body or "",
        rating=body.rating,
        update_mask=FieldMask(paths=sorted(present)),
    )
    try:
        reply = await _call(clients(request).comment.UpdateComment(message, **call_options(request)))
    except BaseException as exc:
        if _maybe_written(exc):
            rating_cache(request).drop()  # the product is not known here
        raise
    rating_cache(request).drop(reply.comment.product_id)
    return Comment.of(reply.comment)


@api.operation("DELETE", "/api/v1/comments/{comment_id}", Contract(
    summary="Delete a comment", tag="comments",
    status=204, auth=True, errors=(400, 403, 404),
))  # fmt: skip
async def delete_comment(request: Request) -> None:
    """The author or an admin (403 for anyone else). A comment with replies stays
    as a removed placeholder so its thread survives; one without disappears."""
    try:
        await _call(
            clients(request).comment.DeleteComment(
                comment_pb2.DeleteCommentRequest(comment_id=request.path_params["comment_id"]), **call_options(request)
            )
        )
    except BaseException as exc:
        if _maybe_written(exc):
            rating_cache(request).drop()  # the product is not known here
        raise
    rating_cache(request).drop()


@api.operation("PUT", "/api/v1/comments/{comment_id}/like", Contract(
    summary="Like a comment", tag="comments",
    response=Likes, auth=True, errors=(400, 404, 409),
))  # fmt: skip
async def like_comment(request: Request) -> Likes:
    """One like per user; liking again changes nothing."""
    reply = await _call(
        clients(request).comment.LikeComment(
            comment_pb2.LikeCommentRequest(comment_id=request.path_params["comment_id"]), **call_options(request)
        )
    )
    return Likes(like_count=reply.like_count, liked_by_me=reply.liked_by_me)


@api.operation("DELETE", "/api/v1/comments/{comment_id}/like", Contract(
    summary="Take back a like", tag="comments",
    response=Likes, auth=True, errors=(400, 404),
))  # fmt: skip
async def unlike_comment(request: Request) -> Likes:
    """Idempotent: without a like nothing changes."""
    reply = await _call(
        clients(request).comment.UnlikeComment(
            comment_pb2.UnlikeCommentRequest(comment_id=request.path_params["comment_id"]), **call_options(request)
        )
    )
    return Likes(like_count=reply.like_count, liked_by_me=reply.liked_by_me)
