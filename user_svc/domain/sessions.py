"""The rules of sessions: sign-in input, refresh tokens (issue, rotation,
reuse) and the client address a sign-in counts against.  Plain Python: no I/O,
no protobuf, no database types.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from common.errors import FieldViolation, UnauthenticatedError
from common.validation import Violations, invalid
from user_svc.domain.accounts import User, normalize_email, password_problem

# --- sign-in ---------------------------------------------------------------------

WRONG_CREDENTIALS = "wrong email or password"
PASSWORD_INPUT_MAX = 1024  # longer input is refused before any hashing


def _password_input(violations: Violations, path: str, password: str) -> None:
    if not password:
        violations.add(path, "is required")
    elif len(password) > PASSWORD_INPUT_MAX:
        violations.add(path, f"must be at most {PASSWORD_INPUT_MAX} characters")


def check_sign_in(email: str, password: str) -> str:
    """The normalized email of a sign-in, when both inputs are there (not checking
    the email's syntax: an account of any email may sign in)."""
    normalized = normalize_email(email)
    violations = Violations()
    if not normalized:
        violations.add("email", "is required")
    _password_input(violations, "password", password)
    violations.check()
    return normalized


def check_password_change(user: User, current_password: str, new_password: str) -> None:
    violations = Violations()
    _password_input(violations, "current_password", current_password)
    problem = password_problem(new_password, user.email)
    if problem:
        violations.add("new_password", problem)
    violations.check()


def wrong_password() -> UnauthenticatedError:
    return UnauthenticatedError(WRONG_CREDENTIALS, reason="INVALID_CREDENTIALS")


def wrong_current_password() -> UnauthenticatedError:
    return UnauthenticatedError("the current password is wrong", reason="INVALID_CREDENTIALS")


# --- refresh tokens -------------------------------------------------------------

REFRESH_TOKEN_MAX = 256
INVALID_REFRESH = "the refresh token is invalid, expired or revoked; sign in again"
REUSED_REFRESH = (
    "this refresh token was already used; every session of that sign-in has been ended for safety; sign in again"
)


def new_refresh_token() -> str:
    """An opaque refresh token (256 random bits); only its hash is stored."""
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def refresh_expiry(now: datetime, ttl_seconds: int) -> datetime:
    return now + timedelta(seconds=ttl_seconds)


def presented_refresh_token(raw: str) -> str:
    """The refresh token a caller presents to exchange it: required, and no
    longer than any token this service hands out."""
    presented = raw.strip()
    if not presented:
        raise invalid(FieldViolation("refresh_token", "is required"))
    if len(presented) > REFRESH_TOKEN_MAX:
        raise invalid_refresh()
    return presented


def session_to_end(raw: str) -> str | None:
    """The refresh token whose session a sign-out ends; None for one longer than
    any token this service hands out (no session to end)."""
    presented = raw.strip()
    if not presented:
        raise invalid(
            FieldViolation("refresh_token", "give the refresh token of the session to end, or set all_sessions")
        )
    return presented if len(presented) <= REFRESH_TOKEN_MAX else None


def invalid_refresh() -> UnauthenticatedError:
    return UnauthenticatedError(INVALID_REFRESH, reason="INVALID_TOKEN")


def reused_refresh() -> UnauthenticatedError:
    return UnauthenticatedError(REUSED_REFRESH, reason="REFRESH_TOKEN_REUSED")


@dataclass(frozen=True)
class NewRefreshToken:
    """A refresh token to store: its hash and expiry (the family is a new sign-in
    unless given)."""

    token_hash: str
    expires_at: datetime
    family_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True)
class RefreshToken:
    """A stored refresh token.  One family per sign-in: every rotation stays in it."""

    id: uuid.UUID
    family_id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


class RefreshVerdict(enum.Enum):
    VALID = "valid"  # exchange it for a new one of the same family
    REUSED = "reused"  # already exchanged: reuse, the whole family is revoked
    INVALID = "invalid"  # unknown, revoked or expired


def judge_refresh(token: RefreshToken, now: datetime) -> RefreshVerdict:
    """What presenting a stored refresh token at ``now`` means (an unknown one is invalid)."""
    if token.used_at is not None:
        return RefreshVerdict.REUSED
    if token.revoked_at is not None or token.expires_at <= now:
        return RefreshVerdict.INVALID
    return RefreshVerdict.VALID


# Tokens that expired longer ago than this are forgotten (reuse detection no longer needs them).
PURGE_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class IssuedTokens:
    """An access token (valid for ``expires_in`` seconds) and the refresh token of its session."""

    access_token: str
    expires_in: int
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime


@dataclass(frozen=True)
class SignedIn:
    user: User
    tokens: IssuedTokens


@dataclass(frozen=True)
class KeySet:
    """The public keys that verify access tokens (a JWKS), and how long callers may cache it."""

    jwks_json: str
    max_age: int


# --- client addresses (login rate limit) -------------------------------------------


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string: "ipv4:127.0.0.1:5000" -> "127.0.0.1",
    "ipv6:[::1]:5000" -> "::1"; anything else is returned as given."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] if rest.startswith("[") else rest
        return host.strip("[]") or rest
    return peer


def address_bucket(address: str) -> str:
    """The rate-limit bucket of a client address: the IPv4 address itself, the
    /64 network for IPv6 (one subscriber usually holds a whole /64)."""
    candidate = address.strip()
    try:
        ip = ipaddress.ip_address(candidate.strip("[]"))
    except ValueError:
        return candidate[:100] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


@dataclass(frozen=True)
class ClientOrigin:
    """Where a sign-in or sign-up comes from: the calling process, the client
    address it gives, and the gRPC peer."""

    caller: str | None
    given: str
    peer: str

    def bucket(self) -> str:
        """The address it counts against: the end user's, as the edge reports it;
        from any other caller the address given is ignored and the gRPC peer (the
        calling process's own address) counts, so no caller picks a fresh budget."""
        given = self.given if self.caller == "edge" else ""
        return address_bucket(given or peer_host(self.peer))
