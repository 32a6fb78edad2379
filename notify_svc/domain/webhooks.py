"""Webhooks: the aggregates (a webhook, a delivery), where a webhook may point,
which notifications it gets, how deliveries are retried and signed."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from common.errors import FieldViolation, InvalidArgumentError, NotFoundError
from common.validation import VALIDATION_FAILED, control_problem
from notify_svc.domain import NAMESPACE

# Delivery statuses (the WebhookDeliveryStatus names without their prefix).
PENDING = "PENDING"
RETRYING = "RETRYING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
FINAL = (SUCCEEDED, FAILED)


@dataclass(frozen=True)
class Webhook:
    id: str
    user_id: str
    url: str
    description: str
    kinds: list[str]
    secret: str
    created_at_us: int
    last_status: str = ""
    last_delivery_at_us: int = 0
    last_success_at_us: int = 0
    last_failure_at_us: int = 0
    last_error: str = ""
    failed_count: int = 0


@dataclass(frozen=True)
class Delivery:
    id: str
    webhook_id: str
    notification_id: str
    body: bytes
    status: str
    attempts: int
    http_status: int
    error: str
    next_at_us: int
    created_at_us: int
    updated_at_us: int
    position: int


@dataclass(frozen=True)
class Attempt:
    """The outcome of one delivery attempt, as recorded."""

    status: str
    attempts: int
    http_status: int
    error: str
    next_attempt_us: int = 0


def webhook_id(value: str) -> str:
    """A webhook id as stored; NOT_FOUND for anything that cannot be one."""
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise NotFoundError("no such webhook") from exc


def owned(hook: Webhook | None, user: str) -> Webhook:
    """The webhook if ``user`` owns it; NOT_FOUND otherwise (another's webhook is not shown to exist)."""
    if hook is None or hook.user_id != user:
        raise NotFoundError("no such webhook")
    return hook


def validate_registration(kinds: Sequence[str | None], description: str) -> tuple[list[str], str]:
    """The kinds a webhook subscribes to (``None``: a value that is no kind), deduplicated,
    and its description; INVALID_ARGUMENT listing every problem."""
    violations = []
    wanted: list[str] = []
    for index, kind in enumerate(kinds):
        if kind is None:
            violations.append(FieldViolation(f"kinds[{index}]", "not a notification kind"))
        elif kind not in wanted:
            wanted.append(kind)
    description = description.strip()
    if problem := description_problem(description):
        violations.append(FieldViolation("description", problem))
    if violations:
        raise InvalidArgumentError("the webhook has invalid fields", violations, reason=VALIDATION_FAILED)
    return wanted, description


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
    return str(uuid.uuid5(NAMESPACE, f"delivery/{notification_id}/{position}/{webhook_id}"))


def describe_error(status: int | None, error: str | None) -> str:
    if status is not None:
        return f"HTTP {status}"
    return error or "no response"


@dataclass(frozen=True)
class RetryPolicy:
    """How often a delivery is attempted, and how long to wait between attempts."""

    max_attempts: int
    base: float
    cap: float

    def outcome(self, attempt: int, http_status: int | None, error: str | None, *, now_us: int) -> Attempt:
        """What attempt number ``attempt`` (1-based) comes to: succeeded on a 2xx,
        failed for good after the last attempt, retrying after the backoff otherwise."""
        if http_status is not None and 200 <= http_status < 300:
            return Attempt(status=SUCCEEDED, attempts=attempt, http_status=http_status, error="")
        message = describe_error(http_status, error)
        if attempt >= self.max_attempts:
            return Attempt(status=FAILED, attempts=attempt, http_status=http_status or 0, error=message)
        delay = retry_delay(attempt, self.base, self.cap)
        return Attempt(
            status=RETRYING,
            attempts=attempt,
            http_status=http_status or 0,
            error=message,
            next_attempt_us=now_us + int(delay * 1_000_000),
        )


@dataclass(frozen=True)
class StatusFilter:
    """The delivery status a listing asks for: None for every status; ``known``
    false when the request named a status that does not exist."""

    status: str | None
    known: bool = True

    def checked(self) -> str | None:
        if not self.known:
            raise InvalidArgumentError(
                "status is not a delivery status",
                [FieldViolation("status", "use a WebhookDeliveryStatus value")],
                reason=VALIDATION_FAILED,
            )
        return self.status
