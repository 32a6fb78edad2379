"""The rules of notifications: plain Python, no I/O.

* Which event notifies whom, with what text (:func:`from_event`).
* Folding likes of one comment into one notification (:func:`fold_like`).
* Feed paging cursors, webhook URL rules, delivery backoff and signatures.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from urllib.parse import urlsplit

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from shop.common.v1 import money_pb2
from shop.events.v1 import comment_events_pb2, order_events_pb2, platform_events_pb2

from common.errors import FieldViolation, InvalidArgumentError
from common.money import Money, MoneyError
from common.validation import control_problem

VALIDATION_FAILED = "VALIDATION_FAILED"

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
# event names the same notification.
_NAMESPACE = uuid.UUID("6f1c1d1e-54a4-4d0b-9a53-3b8f3f0c7a11")
# Distinct likers remembered per folded notification (to count people, not clicks).
MAX_LIKERS = 100
MAX_ID_LENGTH = 128


class InvalidEventError(ValueError):
    """An event that decodes but cannot be turned into a notification (no recipient)."""


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


def notification_id(event_id: str, recipient: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{event_id}/{recipient}"))


def _micros(stamp: Timestamp) -> int:
    return int(stamp.ToMicroseconds()) if stamp.seconds or stamp.nanos else 0


def _money(value: money_pb2.Money) -> str:
    try:
        return str(Money(int(value.amount_minor), value.currency_code))
    except MoneyError:
        return f"{value.amount_minor} {value.currency_code}".strip()


def _short(order_id: str) -> str:
    return order_id[:8]


def _recipient(value: str, what: str) -> str:
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidEventError(f"the event has no valid {what}")
    return value


def _name(display_name: str) -> str:
    return display_name.strip() or "Someone"


CANCEL_REASONS = {
    order_events_pb2.ORDER_CANCEL_REASON_CUSTOMER: ("CUSTOMER", "at your request"),
    order_events_pb2.ORDER_CANCEL_REASON_ADMIN: ("ADMIN", "by the shop"),
    order_events_pb2.ORDER_CANCEL_REASON_EXPIRED: ("EXPIRED", "because it was not paid in time"),
}


def from_event(event_id: str, event: Message, now_us: int) -> Draft | None:
    """The notification an event asks for; None for events nobody is notified of."""

    def note(kind: str, user_id: str, title: str, body: str, data: dict[str, str], occurred: Timestamp,
             committed: Timestamp) -> Notification:  # fmt: skip
        return Notification(
            id=notification_id(event_id, user_id),
            kind=kind,
            title=title,
            body=body,
            data={key: value for key, value in data.items() if value},
            created_at_us=_micros(occurred) or now_us,
            source_event_id=event_id,
            source_committed_at_us=_micros(committed),
            user_id=user_id,
        )

    if isinstance(event, order_events_pb2.OrderCreated):
        buyer = _recipient(event.user_id, "user_id")
        return Draft(
            note(ORDER_CREATED, buyer, "Order placed",
                 f"Your order {_short(event.order_id)} of {_money(event.total)} is waiting for payment.",
                 {"order_id": event.order_id}, event.occurred_at, event.committed_at)
        )  # fmt: skip
    if isinstance(event, order_events_pb2.OrderPaid):
        buyer = _recipient(event.user_id, "user_id")
        return Draft(
            note(ORDER_PAID, buyer, "Payment received",
                 f"We received your payment of {_money(event.amount)} for order {_short(event.order_id)}.",
                 {"order_id": event.order_id, "payment_id": event.payment_id}, event.occurred_at,
                 event.committed_at)
        )  # fmt: skip
    if isinstance(event, order_events_pb2.OrderShipped):
        buyer = _recipient(event.user_id, "user_id")
        how = f" with {event.carrier}" if event.carrier else ""
        tracking = f" (tracking number {event.tracking_number})" if event.tracking_number else ""
        return Draft(
            note(ORDER_SHIPPED, buyer, "Order shipped",
                 f"Order {_short(event.order_id)} is on its way{how}{tracking}.",
                 {"order_id": event.order_id, "carrier": event.carrier, "tracking_number": event.tracking_number},
                 event.occurred_at, event.committed_at)
        )  # fmt: skip
    if isinstance(event, order_events_pb2.OrderDelivered):
        buyer = _recipient(event.user_id, "user_id")
        return Draft(
            note(ORDER_DELIVERED, buyer, "Order delivered", f"Order {_short(event.order_id)} was delivered.",
                 {"order_id": event.order_id}, event.occurred_at, event.committed_at)
        )  # fmt: skip
    if isinstance(event, order_events_pb2.OrderCancelled):
        buyer = _recipient(event.user_id, "user_id")
        reason, why = CANCEL_REASONS.get(event.reason, ("", ""))
        text = f"Order {_short(event.order_id)} was cancelled{' ' + why if why else ''}."
        if event.refunded and event.HasField("refund_amount"):
            text += f" {_money(event.refund_amount)} will be refunded."
        elif event.refunded:
            text += " Your payment will be refunded."
        return Draft(
            note(ORDER_CANCELLED, buyer, "Order cancelled", text, {"order_id": event.order_id, "reason": reason},
                 event.occurred_at, event.committed_at)
        )  # fmt: skip
    if isinstance(event, comment_events_pb2.CommentReplied):
        author = _recipient(event.parent_author_id, "parent_author_id")
        if author == event.author_id:
            return None
        excerpt = event.body_excerpt.strip()
        return Draft(
            note(COMMENT_REPLY, author, f"{_name(event.author_display_name)} replied to your comment",
                 f"“{excerpt}”" if excerpt else "",
                 {"comment_id": event.comment_id, "product_id": event.product_id, "parent_id": event.parent_id},
                 event.occurred_at, event.committed_at)
        )  # fmt: skip
    if isinstance(event, comment_events_pb2.CommentLiked):
        author = _recipient(event.comment_author_id, "comment_author_id")
        if author == event.liker_id:
            return None
        liker = (event.liker_id, _name(event.liker_display_name))
        first = note(COMMENT_LIKED, author, "", "",
                     {"comment_id": event.comment_id, "product_id": event.product_id,
                      "like_count": str(event.like_count) if event.like_count else ""},
                     event.occurred_at, event.committed_at)  # fmt: skip
        return Draft(fold_like(None, first, liker), fold_on=event.comment_id or first.id, liker=liker)
    if isinstance(event, platform_events_pb2.AnnouncementPublished):
        announcement_id = event.announcement_id if _is_uuid(event.announcement_id) else notification_id(event_id, "")
        announcement = note(ANNOUNCEMENT, "", event.title, event.body, dict(event.data), event.occurred_at,
                            event.committed_at)  # fmt: skip
        announcement.id = announcement_id
        announcement.data["announcement_id"] = announcement_id
        return Draft(announcement)
    return None  # e.g. CommentCreated: nobody to tell


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# --- likes ------------------------------------------------------------------------------


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


# --- paging --------------------------------------------------------------------------------

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def page_size(requested: int, field_path: str = "page.page_size") -> int:
    if requested < 0:
        raise InvalidArgumentError(
            "the request has invalid fields",
            [FieldViolation(field_path, "must not be negative")],
            reason=VALIDATION_FAILED,
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_cursor(position: int, scope: str) -> str:
    raw = json.dumps({"p": position, "s": scope}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, scope: str, field_path: str = "page.page_token") -> int | None:
    """The position a page token continues after; None for the first page.

    ``scope`` names the listing and its filters: a token is only valid with the
    same ones."""
    if not token:
        return None
    try:
        document = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, token_scope = document["p"], document["s"]
        valid = isinstance(position, int) and position > 0 and token_scope == scope
    except (binascii.Error, ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise InvalidArgumentError(
            "the page token is invalid for this request",
            [FieldViolation(field_path, "use the next_page_token of the same listing with the same filters")],
            reason=VALIDATION_FAILED,
        )
    return int(position)


def stream_position(last_event_id: str) -> int | None:
    """The stream position a Subscribe resumes after (the SSE Last-Event-ID)."""
    value = last_event_id.strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise InvalidArgumentError(
            "last_event_id is not a position of this stream",
            [FieldViolation("last_event_id", "send the event_id of the last message received")],
            reason=VALIDATION_FAILED,
        )
    return int(value)


# --- announcements -------------------------------------------------------------------------

MAX_TITLE = 200
MAX_BODY = 5000
MAX_DATA_ENTRIES = 20


def validate_announcement(title: str, body: str, data: Mapping[str, str]) -> tuple[str, str, dict[str, str]]:
    violations: list[FieldViolation] = []
    title, body = title.strip(), body.strip()
    if not 1 <= len(title) <= MAX_TITLE:
        violations.append(FieldViolation("title", f"must be 1 to {MAX_TITLE} characters"))
    elif control := control_problem(title):
        violations.append(FieldViolation("title", control))
    if not 1 <= len(body) <= MAX_BODY:
        violations.append(FieldViolation("body", f"must be 1 to {MAX_BODY} characters"))
    elif control := control_problem(body, multiline=True):
        violations.append(FieldViolation("body", control))
    if len(data) > MAX_DATA_ENTRIES:
        violations.append(FieldViolation("data", f"at most {MAX_DATA_ENTRIES} entries"))
    for key, value in data.items():
        if not 1 <= len(key) <= 64 or len(value) > 2000:
            violations.append(FieldViolation(f"data[{key[:64]}]", "keys are 1 to 64 characters, values at most 2000"))
        elif control := control_problem(key) or control_problem(value, multiline=True):
            violations.append(FieldViolation(f"data[{control_free(key)}]", control))
    if violations:
        raise InvalidArgumentError("the announcement has invalid fields", violations, reason=VALIDATION_FAILED)
    return title, body, dict(data)


def control_free(text: str) -> str:
    """``text`` as a field path may name it: its control characters dropped."""
    return "".join(ch for ch in text if not control_problem(ch))


# --- webhooks -------------------------------------------------------------------------------

WEBHOOK_ADDRESS_FORBIDDEN = "WEBHOOK_ADDRESS_FORBIDDEN"
MAX_URL = 2048
MAX_DESCRIPTION = 500

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def description_problem(description: str) -> str | None:
    if len(description) > MAX_DESCRIPTION:
        return f"at most {MAX_DESCRIPTION} characters"
    return control_problem(description)


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    host: str
    port: int


def parse_ports(text: str) -> tuple[tuple[int, int], ...]:
    """``"80,443,8000-8999"`` as inclusive ranges; ValueError when malformed."""
    ranges = []
    for part in text.replace(" ", "").split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ValueError(f"{part!r} is not a port or a range of ports (like 443 or 8000-8999)")
        first, last = int(low), int(high or low)
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"{part!r} is not within 1-65535")
        ranges.append((first, last))
    return tuple(ranges)


@dataclass(frozen=True)
class WebhookPolicy:
    """Where webhooks may go: https only outside development, to these ports, and
    to public addresses only, plus the networks allowed explicitly (the tests'
    receivers on loopback).  The same checks in every mode."""

    https_only: bool = True
    ports: tuple[tuple[int, int], ...] = ((80, 80), (443, 443))
    allowed_networks: tuple[IPNetwork, ...] = ()

    def port_allowed(self, port: int) -> bool:
        return any(first <= port <= last for first, last in self.ports)

    def address_allowed(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed_networks):
            return True
        return not forbidden_address(address)

    def describe_ports(self) -> str:
        return ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in self.ports)


def forbidden_address(address: IPAddress) -> bool:
    """Private, loopback, link-local, and any other address that is not globally
    reachable (shared 100.64/10, documentation, multicast, unspecified...)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return bool(
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )


def forbidden_host(host: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        "webhooks may not target private, loopback or link-local addresses",
        [FieldViolation("url", f"{host} resolves to an address that is not public")],
        reason=WEBHOOK_ADDRESS_FORBIDDEN,
    )


def validate_webhook_url(url: str, policy: WebhookPolicy) -> WebhookTarget:
    """Check a webhook URL's shape, scheme and port, and an IP-literal host's
    address.  (A name is resolved and its addresses checked by the caller: that
    is I/O; the name itself decides nothing.)"""

    def bad(description: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            "the webhook URL is invalid", [FieldViolation("url", description)], reason=VALIDATION_FAILED
        )

    url = url.strip()
    if not url or len(url) > MAX_URL:
        raise bad(f"send an absolute http(s) URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise bad(f"not a valid URL: {exc}") from exc
    schemes = ("https",) if policy.https_only else ("https", "http")
    if parts.scheme not in schemes:
        raise bad("must be an https URL" if policy.https_only else "must be an http or https URL")
    if not parts.hostname:
        raise bad("must name a host")
    if parts.username or parts.password:
        raise bad("must not carry credentials")
    if parts.fragment:
        raise bad("must not have a fragment")
    if any(ch.isspace() or ord(ch) < 0x21 for ch in url):
        raise bad("must not contain spaces or control characters")
    port = port or (443 if parts.scheme == "https" else 80)
    if not policy.port_allowed(port):
        raise bad(f"port {port} is not allowed for webhooks (allowed: {policy.describe_ports()})")
    host = parts.hostname
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and not policy.address_allowed(literal):
        raise forbidden_host(host)
    return WebhookTarget(url=url, host=host, port=port)


def wants(kinds: Sequence[str], kind: str) -> bool:
    """Whether a webhook subscribed to ``kinds`` (empty: all) gets ``kind``."""
    return not kinds or kind in kinds


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Shop-Signature value: HMAC-SHA256 over ``"<timestamp>.<body>"``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str, timestamp: str, body: bytes, signature: str, *, now: int, tolerance: int = 300
) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def delivery_id(notification_id: str, position: int, webhook_id: str) -> str:
    """One delivery per stored version of a notification per webhook."""
    return str(uuid.uuid5(_NAMESPACE, f"delivery/{notification_id}/{position}/{webhook_id}"))


def describe_error(status: int | None, error: str | None) -> str:
    if status is not None:
        return f"HTTP {status}"
    return error or "no response"
