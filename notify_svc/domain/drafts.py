"""Which event notifies whom, with what text; and folding likes of one comment
into one notification.

The event readers (``notify_svc/events.py``) take the values out of the event
messages; the rules here see plain values only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from common.money import Money, MoneyError
from notify_svc.domain import (
    ANNOUNCEMENT,
    COMMENT_LIKED,
    COMMENT_REPLY,
    ORDER_CANCELLED,
    ORDER_CREATED,
    ORDER_DELIVERED,
    ORDER_PAID,
    ORDER_SHIPPED,
    Notification,
    notification_id,
)

# Distinct likers remembered per folded notification (to count people, not clicks).
MAX_LIKERS = 100
MAX_ID_LENGTH = 128

# An amount of money as an event carries it: (minor units, currency code), unchecked.
Amount = tuple[int, str]

# Why an order was cancelled: the reason's name (OrderCancelReason without its
# prefix) and how the notification says it.
CANCEL_REASONS = {
    "CUSTOMER": "at your request",
    "ADMIN": "by the shop",
    "EXPIRED": "because it was not paid in time",
}


class InvalidEventError(ValueError):
    """An event that decodes but cannot be turned into a notification (no recipient)."""


@dataclass(frozen=True)
class Draft:
    """What an event asks for: a notification for ``recipient`` ("" = everyone);
    likes carry the comment they fold on and the liker."""

    notification: Notification
    fold_on: str | None = None
    liker: tuple[str, str] | None = None

    @property
    def recipient(self) -> str:
        return self.notification.user_id

    @property
    def is_announcement(self) -> bool:
        return self.notification.kind == ANNOUNCEMENT


@dataclass(frozen=True)
class Source:
    """The event a notification comes from: its id and times (microseconds, 0
    when the event has none), and the time it is handled."""

    event_id: str
    occurred_us: int
    committed_us: int
    now_us: int

    def note(self, kind: str, user_id: str, *, title: str, body: str, data: Mapping[str, str]) -> Notification:
        return Notification(
            id=notification_id(self.event_id, user_id),
            kind=kind,
            title=title,
            body=body,
            data={key: value for key, value in data.items() if value},
            created_at_us=self.occurred_us or self.now_us,
            source_event_id=self.event_id,
            source_committed_at_us=self.committed_us,
            user_id=user_id,
        )


def recipient(value: str, what: str) -> str:
    """The user an event names in its field ``what``; InvalidEventError when there is none."""
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidEventError(f"the event has no valid {what}")
    return value


def money_text(amount: Amount) -> str:
    minor, currency = amount
    try:
        return str(Money(int(minor), currency))
    except MoneyError:
        return f"{minor} {currency}".strip()


def _short(order_id: str) -> str:
    return order_id[:8]


def _name(display_name: str) -> str:
    return display_name.strip() or "Someone"


# --- orders -------------------------------------------------------------------------------


def order_created(source: Source, *, buyer: str, order_id: str, total: Amount) -> Draft:
    body = f"Your order {_short(order_id)} of {money_text(total)} is waiting for payment."
    return Draft(source.note(ORDER_CREATED, buyer, title="Order placed", body=body, data={"order_id": order_id}))


def order_paid(source: Source, *, buyer: str, order_id: str, amount: Amount, payment_id: str) -> Draft:
    body = f"We received your payment of {money_text(amount)} for order {_short(order_id)}."
    data = {"order_id": order_id, "payment_id": payment_id}
    return Draft(source.note(ORDER_PAID, buyer, title="Payment received", body=body, data=data))


def order_shipped(source: Source, *, buyer: str, order_id: str, carrier: str, tracking_number: str) -> Draft:
    how = f" with {carrier}" if carrier else ""
    tracking = f" (tracking number {tracking_number})" if tracking_number else ""
    body = f"Order {_short(order_id)} is on its way{how}{tracking}."
    data = {"order_id": order_id, "carrier": carrier, "tracking_number": tracking_number}
    return Draft(source.note(ORDER_SHIPPED, buyer, title="Order shipped", body=body, data=data))


def order_delivered(source: Source, *, buyer: str, order_id: str) -> Draft:
    body = f"Order {_short(order_id)} was delivered."
    return Draft(source.note(ORDER_DELIVERED, buyer, title="Order delivered", body=body, data={"order_id": order_id}))


def order_cancelled(
    source: Source, *, buyer: str, order_id: str, reason: str, refunded: bool, refund: Amount | None
) -> Draft:
    """``reason`` a CANCEL_REASONS name ("" when unknown); ``refund`` the amount when the event says it."""
    why = CANCEL_REASONS.get(reason, "")
    text = f"Order {_short(order_id)} was cancelled{' ' + why if why else ''}."
    if refunded and refund is not None:
        text += f" {money_text(refund)} will be refunded."
    elif refunded:
        text += " Your payment will be refunded."
    data = {"order_id": order_id, "reason": reason if why else ""}
    return Draft(source.note(ORDER_CANCELLED, buyer, title="Order cancelled", body=text, data=data))


# --- comments -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CommentRef:
    """The comment an event is about (ids as the event names them)."""

    comment_id: str
    product_id: str
    parent_id: str = ""


def comment_replied(
    source: Source, *, parent_author: str, author: tuple[str, str], comment: CommentRef, excerpt: str
) -> Draft | None:
    """A reply notifies the parent's author (not when replying to oneself); ``author`` is (id, display name)."""
    if parent_author == author[0]:
        return None
    excerpt = excerpt.strip()
    data = {"comment_id": comment.comment_id, "product_id": comment.product_id, "parent_id": comment.parent_id}
    return Draft(
        source.note(
            COMMENT_REPLY,
            parent_author,
            title=f"{_name(author[1])} replied to your comment",
            body=f"“{excerpt}”" if excerpt else "",
            data=data,
        )
    )


def comment_liked(
    source: Source, *, comment_author: str, liker: tuple[str, str], comment: CommentRef, like_count: int
) -> Draft | None:
    """A like notifies the comment's author (not a like of one's own), folding on the comment."""
    if comment_author == liker[0]:
        return None
    who = (liker[0], _name(liker[1]))
    data = {
        "comment_id": comment.comment_id,
        "product_id": comment.product_id,
        "like_count": str(like_count) if like_count else "",
    }
    first = source.note(COMMENT_LIKED, comment_author, title="", body="", data=data)
    return Draft(fold_like(None, first, who), fold_on=comment.comment_id or first.id, liker=who)


# --- announcements ------------------------------------------------------------------------


def announcement(source: Source, *, announcement_id: str, title: str, body: str, data: Mapping[str, str]) -> Draft:
    """An announcement for everyone, under its own id (or one derived from the event)."""
    ident = announcement_id if _is_uuid(announcement_id) else notification_id(source.event_id, "")
    note = source.note(ANNOUNCEMENT, "", title=title, body=body, data=data)
    note.id = ident
    note.data["announcement_id"] = ident
    return Draft(note)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# --- likes ----------------------------------------------------------------------------------


def like_texts(names: Sequence[str], people: int) -> tuple[str, str]:
    """(title, body) for ``people`` distinct likers, ``names`` newest first."""
    if people <= 1:
        return f"{names[0]} liked your comment", f"{names[0]} liked your comment."
    if people == 2:
        return f"{names[0]} and {names[1]} liked your comment", f"{names[0]} and {names[1]} liked your comment."
    others = people - 2
    return (
        f"{people} people liked your comment",
        f"{names[0]}, {names[1]} and {others} {'other' if others == 1 else 'others'} liked your comment.",
    )


def fold_like(current: Notification | None, latest: Notification, liker: tuple[str, str]) -> Notification:
    """The like notification after one more like.

    ``current`` is the notification the likes of this comment are folded into
    (None: this like starts one); ``latest`` is what the new like alone would
    make.  A folded notification keeps its id and first source event, counts
    the events folded and the distinct people, and takes the newest like's time.
    """
    if current is None:
        title, body = like_texts([liker[1]], 1)
        return replace(latest, title=title, body=body, folded_count=1, likers=[list(liker)])
    likers = [pair for pair in current.likers if pair[0] != liker[0]] + [list(liker)]
    people = len(likers) if len(current.likers) < MAX_LIKERS else current.folded_count + 1
    likers = likers[-MAX_LIKERS:]
    title, body = like_texts([pair[1] for pair in reversed(likers)], people)
    data = {**current.data, **{k: v for k, v in latest.data.items() if k == "like_count"}}
    return replace(
        current,
        title=title,
        body=body,
        data=data,
        folded_count=current.folded_count + 1,
        likers=likers,
        created_at_us=max(current.created_at_us, latest.created_at_us),
        source_committed_at_us=latest.source_committed_at_us or current.source_committed_at_us,
    )
