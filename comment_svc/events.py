"""The events comment_svc publishes on ``shop.comments.v1``.

The use cases (``comment_svc/comments.py``) write them to the outbox through the
unit of work of the change they describe (``common.outbox.add_event``, in the same
transaction), and the shared ``OutboxRelay`` publishes them.
Every event is keyed by the id of the comment it is about (the reply for
CommentCreated/CommentReplied of a reply, the liked comment for CommentLiked),
as ``proto/shop/events/v1/comment_events.proto`` specifies, so one comment's
events stay in order on one partition.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from shop.events.v1 import comment_events_pb2

from comment_svc.domain import Comment, excerpt
from common.convert import timestamp
from common.events import COMMENTS_TOPIC

TOPIC = COMMENTS_TOPIC

Event = comment_events_pb2.CommentCreated | comment_events_pb2.CommentReplied | comment_events_pb2.CommentLiked


def comment_created(comment: Comment) -> comment_events_pb2.CommentCreated:
    return comment_events_pb2.CommentCreated(
        comment_id=str(comment.id),
        product_id=str(comment.product_id),
        parent_id=str(comment.parent_id) if comment.parent_id else None,
        author_id=str(comment.author_id or ""),
        rating=comment.rating,
        verified_purchase=comment.verified_purchase,
        occurred_at=timestamp(comment.created_at),
    )


def comment_replied(reply: Comment, parent: Comment) -> comment_events_pb2.CommentReplied | None:
    """For the parent's author; None when there is nobody else to tell (a reply to
    oneself, or to a removed comment)."""
    if parent.deleted or parent.author_id is None or parent.author_id == reply.author_id:
        return None
    return comment_events_pb2.CommentReplied(
        comment_id=str(reply.id),
        product_id=str(reply.product_id),
        parent_id=str(parent.id),
        parent_author_id=str(parent.author_id),
        author_id=str(reply.author_id or ""),
        author_display_name=reply.author_display_name,
        body_excerpt=excerpt(reply.body),
        occurred_at=timestamp(reply.created_at),
    )


def comment_liked(
    comment: Comment, liker_id: uuid.UUID, liker_display_name: str, like_count: int, at: datetime
) -> comment_events_pb2.CommentLiked:
    return comment_events_pb2.CommentLiked(
        comment_id=str(comment.id),
        product_id=str(comment.product_id),
        comment_author_id=str(comment.author_id or ""),
        liker_id=str(liker_id),
        liker_display_name=liker_display_name,
        like_count=like_count,
        occurred_at=timestamp(at),
    )
