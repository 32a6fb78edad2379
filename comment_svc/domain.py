"""The rules of comments, reviews, likes and ratings: plain Python, no I/O.

Validation failures raise :class:`~common.errors.InvalidArgumentError` with one
:class:`~common.errors.FieldViolation` per bad field (paths relative to the
request message) and reason ``VALIDATION_FAILED``; rights and states raise
PERMISSION_DENIED (``NOT_OWNER``) and FAILED_PRECONDITION (``INVALID_STATE``).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from common.errors import FailedPreconditionError, FieldViolation, NotFoundError, PermissionDeniedError
from common.validation import Violations, control_problem, invalid, parse_uuid

BODY_MAX = 5000  # characters, after trimming
RATING_MIN, RATING_MAX = 1, 5
RATINGS = tuple(range(RATING_MIN, RATING_MAX + 1))
EXCERPT_MAX = 200  # characters of a reply in CommentReplied
REPLY_LIMIT_DEFAULT = 3
REPLY_LIMIT_MAX = 20
BATCH_MAX = 500
PAGE_TOKEN_MAX = 512
UPDATE_PATHS = ("body", "rating")

Sort = Literal["newest", "most_liked"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


# --- ids ---------------------------------------------------------------------------------


def id_problem(value: str, what: str) -> str | None:
    if not value.strip():
        return "is required"
    if parse_uuid(value) is None:
        return f"must be a {what} id (UUID)"
    return None


def require_uuid(value: str, path: str, what: str) -> uuid.UUID:
    problem = id_problem(value, what)
    parsed = parse_uuid(value)
    if problem or parsed is None:
        raise invalid(FieldViolation(path, problem or "must be a UUID"))
    return parsed


# --- body and rating ------------------------------------------------------------------------


def normalize_body(raw: str) -> str:
    """Line breaks as ``\\n`` (browsers send ``\\r\\n`` from text areas), trimmed."""
    return raw.replace("\r\n", "\n").replace("\r", "\n").strip()


def body_problem(body: str) -> str | None:
    """Why a normalized body is not acceptable, or None."""
    if not body:
        return "is required: write 1 to 5000 characters"
    if len(body) > BODY_MAX:
        return f"must be at most {BODY_MAX} characters (it has {len(body)})"
    return control_problem(body, multiline=True)


def rating_problem(rating: int | None, *, reply: bool) -> str | None:
    if rating is None:
        return None
    if reply:
        return "only a top-level review may carry a rating, not a reply"
    if not RATING_MIN <= rating <= RATING_MAX:
        return f"must be a whole number from {RATING_MIN} to {RATING_MAX} (got {rating})"
    return None


def excerpt(body: str, limit: int = EXCERPT_MAX) -> str:
    return body if len(body) <= limit else body[: limit - 1] + "…"


# --- the comment ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comment:
    """A stored comment.  A deleted placeholder has no author, body or rating."""

    id: uuid.UUID
    product_id: uuid.UUID
    parent_id: uuid.UUID | None
    author_id: uuid.UUID | None
    author_display_name: str
    body: str
    rating: int | None
    like_count: int
    reply_count: int
    verified_purchase: bool
    edited_at: datetime | None
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def is_reply(self) -> bool:
        return self.parent_id is not None


@dataclass(frozen=True)
class NewComment:
    product_id: uuid.UUID
    parent_id: uuid.UUID | None
    body: str
    rating: int | None


def validate_new_comment(product_id: str, parent_id: str | None, body: str, rating: int | None) -> NewComment:
    """The request of CreateComment, checked before anything is asked of anyone."""
    violations = Violations()
    problem = id_problem(product_id, "product")
    if problem:
        violations.add("product_id", problem)
    if parent_id is not None:
        problem = id_problem(parent_id, "comment")
        if problem:
            violations.add("parent_id", problem)
    text = normalize_body(body)
    problem = body_problem(text)
    if problem:
        violations.add("body", problem)
    problem = rating_problem(rating, reply=parent_id is not None)
    if problem:
        violations.add("rating", problem)
    violations.check()
    parent = parse_uuid(parent_id) if parent_id is not None else None
    product = parse_uuid(product_id)
    assert product is not None
    return NewComment(product_id=product, parent_id=parent, body=text, rating=rating)


def _removed(action: str) -> FailedPreconditionError:
    message = f"this comment was removed and cannot be {action}"
    return FailedPreconditionError(message, reason="INVALID_STATE", metadata={"current_state": "DELETED"})


def check_parent(parent: Comment | None, new: NewComment) -> Comment:
    """The comment a reply answers must exist, be of the same product and not be removed."""
    if parent is None:
        raise NotFoundError(
            "the comment you reply to does not exist", violations=[FieldViolation("parent_id", "no such comment")]
        )
    if parent.product_id != new.product_id:
        raise FailedPreconditionError(
            "the comment you reply to belongs to another product",
            violations=[FieldViolation("parent_id", "belongs to another product")],
            reason="INVALID_STATE",
            metadata={"current_state": "OTHER_PRODUCT"},
        )
    if parent.deleted:
        raise _removed("replied to")
    return parent


# --- edits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What UpdateComment asks for: a new body and/or a new rating (None removes it)."""

    body: str | None
    set_rating: bool
    rating: int | None


def validate_change(paths: Sequence[str], body: str, rating: int | None) -> Change:
    """The update mask and the values it names (the reply/review check needs the comment)."""
    violations = Violations()
    wanted = list(dict.fromkeys(path.strip() for path in paths))
    if not wanted:
        violations.add("update_mask", f"name at least one of {', '.join(UPDATE_PATHS)}")
    unknown = [path for path in wanted if path not in UPDATE_PATHS]
    if unknown:
        violations.add("update_mask", f"unknown path {', '.join(unknown)}; allowed: {', '.join(UPDATE_PATHS)}")
    text: str | None = None
    if "body" in wanted:
        text = normalize_body(body)
        problem = body_problem(text)
        if problem:
            violations.add("body", problem)
    if "rating" in wanted and rating is not None and not RATING_MIN <= rating <= RATING_MAX:
        violations.add("rating", f"must be a whole number from {RATING_MIN} to {RATING_MAX} (got {rating})")
    violations.check()
    return Change(body=text, set_rating="rating" in wanted, rating=rating if "rating" in wanted else None)


@dataclass(frozen=True)
class Edit:
    """The new body and rating of an edited comment; ``changed`` is False when
    the edit repeats what is stored (nothing is written, no edited mark)."""

    body: str
    rating: int | None
    changed: bool


def apply_change(comment: Comment, change: Change, user_id: uuid.UUID) -> Edit:
    """An author's edit of their comment (checked against the locked row)."""
    if comment.deleted:
        raise _removed("edited")
    if comment.author_id != user_id:
        raise PermissionDeniedError("only the author may edit a comment", reason="NOT_OWNER")
    if change.set_rating and change.rating is not None and comment.is_reply:
        raise invalid(FieldViolation("rating", "only a top-level review may carry a rating, not a reply"))
    body = change.body if change.body is not None else comment.body
    rating = change.rating if change.set_rating else comment.rating
    return Edit(body=body, rating=rating, changed=(body, rating) != (comment.body, comment.rating))


# --- deletion --------------------------------------------------------------------------------

Deletion = Literal["already", "placeholder", "remove"]


def plan_deletion(comment: Comment, user_id: uuid.UUID, *, admin: bool) -> Deletion:
    """What deleting a comment does: nothing (already a placeholder), keep a
    "removed" placeholder (it has replies), or remove the row."""
    if comment.deleted:
        return "already"
    if comment.author_id != user_id and not admin:
        raise PermissionDeniedError("only the author or an admin may delete a comment", reason="NOT_OWNER")
    return "placeholder" if comment.reply_count > 0 else "remove"


def check_likeable(comment: Comment | None) -> Comment:
    if comment is None:
        raise NotFoundError("no comment with this id")
    if comment.deleted:
        raise _removed("liked")
    return comment


# --- ratings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatingDelta:
    """A change to a product's summary: count, sum and the five buckets."""

    count: int
    sum: int
    buckets: tuple[int, int, int, int, int]

    @property
    def empty(self) -> bool:
        return self.count == 0 and self.sum == 0 and not any(self.buckets)


def rating_delta(old: int | None, new: int | None) -> RatingDelta:
    """How a product's summary changes when a review's rating goes from old to new
    (None: no rating, or no review)."""
    buckets = [0, 0, 0, 0, 0]
    count = total = 0
    if old is not None:
        buckets[old - 1] -= 1
        count -= 1
        total -= old
    if new is not None:
        buckets[new - 1] += 1
        count += 1
        total += new
    return RatingDelta(count, total, (buckets[0], buckets[1], buckets[2], buckets[3], buckets[4]))


@dataclass(frozen=True)
class RatingSummary:
    product_id: uuid.UUID
    count: int = 0
    sum: int = 0
    histogram: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    @property
    def average(self) -> float:
        """sum / count rounded half up to two decimals (integer arithmetic); 0 without ratings."""
        if self.count <= 0:
            return 0.0
        hundredths = (self.sum * 200 + self.count) // (2 * self.count)
        return hundredths / 100


def batch_product_ids(raw: Sequence[str]) -> list[uuid.UUID]:
    """1 to 500 product ids, duplicates dropped, request order kept."""
    if not raw:
        raise invalid(FieldViolation("product_ids", "give 1 to 500 product ids"))
    violations = Violations()
    found: dict[uuid.UUID, None] = {}
    for index, value in enumerate(raw):
        parsed = parse_uuid(value)
        if parsed is None:
            violations.add(f"product_ids[{index}]", "must be a product id (UUID)")
        else:
            found[parsed] = None
    if len(found) > BATCH_MAX:
        violations.add("product_ids", f"at most {BATCH_MAX} distinct ids per call")
    violations.check()
    return list(found)


# --- listing and paging ----------------------------------------------------------------------


def reply_limit(requested: int, path: str = "reply_limit") -> int:
    if requested < 0:
        raise invalid(FieldViolation(path, "must not be negative"))
    return min(requested or REPLY_LIMIT_DEFAULT, REPLY_LIMIT_MAX)


@dataclass(frozen=True)
class Cursor:
    """Position after the last item of a page: (like_count,) created_at, id in the
    list's order (most liked: like_count set; newest and replies: None)."""

    created_at: datetime
    id: uuid.UUID
    like_count: int | None = None

    @classmethod
    def after(cls, comment: Comment, sort: Sort | None) -> Cursor:
        return cls(comment.created_at, comment.id, comment.like_count if sort == "most_liked" else None)


def list_scope(product_id: uuid.UUID, parent_id: uuid.UUID | None, sort: Sort) -> str:
    """What a page token is valid for: the same product, parent and order."""
    if parent_id is not None:
        return f"{product_id.hex}/{parent_id.hex}/replies"
    return f"{product_id.hex}/{sort}"


def encode_page_token(cursor: Cursor, scope: str) -> str:
    micros = (cursor.created_at - EPOCH) // MICROSECOND
    data: dict[str, object] = {"v": 1, "t": micros, "i": cursor.id.hex, "s": scope}
    if cursor.like_count is not None:
        data["l"] = cursor.like_count
    payload = json.dumps(data, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str, scope: str, path: str = "page.page_token") -> Cursor | None:
    """The cursor in ``token`` (None for an empty token); INVALID_ARGUMENT when it is
    malformed or was issued for another list."""
    token = token.strip()
    if not token:
        return None
    bad = invalid(FieldViolation(path, "is not a page token of this list; start again without one"))
    if len(token) > PAGE_TOKEN_MAX:
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(data, dict) or data.get("v") != 1:
            raise bad
        micros = data["t"]
        likes = data.get("l")
        if not isinstance(micros, int) or (likes is not None and not isinstance(likes, int)):
            raise bad
        created_at = EPOCH + micros * MICROSECOND
        cursor = Cursor(created_at=created_at, id=uuid.UUID(hex=str(data["i"])), like_count=likes)
        issued_for = str(data["s"])
    except (ValueError, KeyError, TypeError, OverflowError, OSError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if issued_for != scope or (cursor.like_count is not None) != scope.endswith("/most_liked"):
        raise bad
    return cursor


def next_page(rows: Sequence[Comment], size: int, sort: Sort | None, scope: str) -> tuple[list[Comment], str]:
    """The page (rows were fetched with limit size + 1) and the token of the next one."""
    page = list(rows[:size])
    if len(rows) <= size or not page:
        return page, ""
    return page, encode_page_token(Cursor.after(page[-1], sort), scope)


def group_replies(replies: Iterable[Comment]) -> dict[uuid.UUID, list[Comment]]:
    """Replies by parent, oldest first."""
    grouped: dict[uuid.UUID, list[Comment]] = {}
    for reply in sorted(replies, key=lambda c: (c.created_at, c.id)):
        assert reply.parent_id is not None
        grouped.setdefault(reply.parent_id, []).append(reply)
    return grouped
