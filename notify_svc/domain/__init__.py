"""The rules of notifications: plain Python, no I/O, no protobuf.

* :mod:`.drafts`: which event notifies whom, with what text, and folding likes.
* :mod:`.feed`: feed page tokens, stream positions, read marks, announcements.
* :mod:`.webhooks`: webhooks and deliveries, URL rules, backoff and signatures.

This module holds what they share: the notification kinds and the
:class:`Notification` aggregate.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field

# Notification kinds: the NotificationKind enum names without their prefix.
ORDER_CREATED = "ORDER_CREATED"
ORDER_PAID = "ORDER_PAID"
ORDER_CANCELLED = "ORDER_CANCELLED"
ORDER_SHIPPED = "ORDER_SHIPPED"
ORDER_DELIVERED = "ORDER_DELIVERED"
COMMENT_REPLY = "COMMENT_REPLY"
COMMENT_LIKED = "COMMENT_LIKED"
ANNOUNCEMENT = "ANNOUNCEMENT"
KINDS = (
    ORDER_CREATED,
    ORDER_PAID,
    ORDER_CANCELLED,
    ORDER_SHIPPED,
    ORDER_DELIVERED,
    COMMENT_REPLY,
    COMMENT_LIKED,
    ANNOUNCEMENT,
)

# Notification ids are derived from the source event id, so a redelivered
# event names the same notification (and deliveries from those).
NAMESPACE = uuid.UUID("6f1c1d1e-54a4-4d0b-9a53-3b8f3f0c7a11")


@dataclass
class Notification:
    """One feed entry as stored.  ``user_id`` is empty for announcements (one
    copy, shared by every feed)."""

    id: str
    kind: str
    title: str
    body: str
    data: dict[str, str]
    created_at_us: int
    source_event_id: str
    source_committed_at_us: int = 0
    folded_count: int = 1
    user_id: str = ""
    # Folded likes only: distinct likers as [user id, display name], oldest first.
    likers: list[list[str]] = field(default_factory=list)

    def to_json(self) -> str:
        document = asdict(self)
        if not self.likers:
            del document["likers"]
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Notification:
        document = json.loads(raw)
        return cls(**document)


@dataclass(frozen=True)
class FeedItem:
    """A notification at its place in one user's feed, read or not."""

    position: int
    notification: Notification
    read: bool


def notification_id(event_id: str, recipient: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{event_id}/{recipient}"))
