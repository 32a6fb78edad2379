"""The rules of accounts: plain Python, no I/O.

Validation failures raise :class:`~common.errors.InvalidArgumentError` with one
:class:`~common.errors.FieldViolation` per bad field (paths relative to the
request message, e.g. ``profile.shipping_addresses[0].address.city``) and
reason ``VALIDATION_FAILED``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from shop.user.v1 import user_pb2

from common import validation
from common.errors import FieldViolation, InvalidArgumentError

# The shared rules (common/validation.py), used through this module too.
from common.validation import (
    COUNTRY_CODES as COUNTRY_CODES,
    MAX_PAGE_SIZE as MAX_PAGE_SIZE,
    VALIDATION_FAILED as VALIDATION_FAILED,
    Address as Address,
    Cursor as Cursor,
    Violations as Violations,
    control_problem as control_problem,
    decode_page_token as decode_page_token,
    encode_page_token as encode_page_token,
    filters_key as filters_key,
    invalid as invalid,
    normalize_phone as normalize_phone,
    page_size as page_size,
    parse_uuid as parse_uuid,
    phone_problem as phone_problem,
    validate_address as validate_address,
)


def require_uuid(value: str, path: str) -> uuid.UUID:
    return validation.require_uuid(value, path, "a user id")


# --- email -----------------------------------------------------------------

_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
EMAIL_MAX = 254


def normalize_email(raw: str) -> str:
    """Trimmed and lower-cased, without checking the syntax (login lookups)."""
    return raw.strip().lower()


def email_problem(email: str) -> str | None:
    """Why a normalized email is not acceptable, or None."""
    example = "a valid email address such as name@example.com"
    if not email:
        return "is required"
    if len(email) > EMAIL_MAX:
        return f"must be at most {EMAIL_MAX} characters"
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        return f"must be {example}"
    labels = domain.split(".")
    if (
        len(local) > 64
        or not _LOCAL.match(local)
        or len(labels) < 2
        or not all(_LABEL.match(label) for label in labels)
        or not re.fullmatch(r"[a-z]{2,63}|xn--[a-z0-9-]{1,59}", labels[-1])
    ):
        return f"must be {example}"
    return None


def validate_email(raw: str, path: str = "email") -> str:
    email = normalize_email(raw)
    problem = email_problem(email)
    if problem:
        raise invalid(FieldViolation(path, problem))
    return email


# --- password ----------------------------------------------------------------

PASSWORD_MIN = 10
PASSWORD_MAX = 128
PASSWORD_POLICY = "10 to 128 characters, not only letters or only digits, not your email address"


def password_problem(password: str, email: str) -> str | None:
    """Which rule of the password policy fails, with the whole policy; None when it passes."""
    rule: str | None = None
    if len(password) < PASSWORD_MIN:
        rule = f"too short: use at least {PASSWORD_MIN} characters"
    elif len(password) > PASSWORD_MAX:
        rule = f"too long: use at most {PASSWORD_MAX} characters"
    elif password.isalpha():
        rule = "only letters: add a digit or a symbol"
    elif password.isdigit():
        rule = "only digits: add a letter or a symbol"
    elif email and password.strip().lower() == normalize_email(email):
        rule = "the same as your email address"
    return f"{rule} (password policy: {PASSWORD_POLICY})" if rule else None


def validate_password(password: str, email: str, path: str = "password") -> None:
    problem = password_problem(password, email)
    if problem:
        raise invalid(FieldViolation(path, problem))


# --- display name, phone -----------------------------------------------------

DISPLAY_NAME_MAX = 100


def display_name_problem(value: str) -> str | None:
    if not value:
        return "is required"
    if len(value) > DISPLAY_NAME_MAX:
        return f"must be at most {DISPLAY_NAME_MAX} characters"
    return control_problem(value)


@dataclass(frozen=True)
class Registration:
    email: str
    display_name: str


def validate_registration(email: str, password: str, display_name: str) -> Registration:
    violations = Violations()
    normalized = normalize_email(email)
    problem = email_problem(normalized)
    if problem:
        violations.add("email", problem)
    problem = password_problem(password, normalized)
    if problem:
        violations.add("password", problem)
    name = display_name.strip()
    problem = display_name_problem(name)
    if problem:
        violations.add("display_name", problem)
    violations.check()
    return Registration(email=normalized, display_name=name)


# --- addresses ----------------------------------------------------------------

MAX_ADDRESSES = 10
LABEL_MAX = 50


@dataclass(frozen=True)
class SavedAddress:
    id: str = ""
    label: str = ""
    is_default: bool = False
    address: Address = field(default_factory=Address)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SavedAddress:
        fields = Address.__dataclass_fields__
        address = Address(**{k: str(v) for k, v in dict(data.get("address") or {}).items() if k in fields})
        return cls(
            id=str(data.get("id", "")),
            label=str(data.get("label", "")),
            is_default=bool(data.get("is_default", False)),
            address=address,
        )


def validate_saved_addresses(
    addresses: Sequence[SavedAddress],
    existing_ids: Iterable[str],
    path: str = "profile.shipping_addresses",
    *,
    new_id: Any = None,
) -> list[SavedAddress]:
    """The new list of saved addresses: at most 10, at most one default, ids kept
    for existing entries and assigned (UUID) for new ones."""
    violations = Violations()
    known = set(existing_ids)
    make_id = new_id or (lambda: str(uuid.uuid4()))
    if len(addresses) > MAX_ADDRESSES:
        violations.add(path, f"at most {MAX_ADDRESSES} addresses may be saved, got {len(addresses)}")
    if sum(1 for item in addresses if item.is_default) > 1:
        violations.add(path, "at most one address may be the default")
    result: list[SavedAddress] = []
    seen: set[str] = set()
    for index, item in enumerate(addresses):
        where = f"{path}[{index}]"
        item_id = item.id.strip()
        if item_id:
            if item_id not in known:
                violations.add(f"{where}.id", "unknown address id: leave it empty to add a new address")
            elif item_id in seen:
                violations.add(f"{where}.id", "the same address id appears twice")
            seen.add(item_id)
        label = item.label.strip()
        if len(label) > LABEL_MAX:
            violations.add(f"{where}.label", f"must be at most {LABEL_MAX} characters")
        elif control := control_problem(label):
            violations.add(f"{where}.label", control)
        address = validate_address(item.address, f"{where}.address", violations)
        result.append(SavedAddress(id=item_id or make_id(), label=label, is_default=item.is_default, address=address))
    violations.check()
    return result


# --- profile updates -----------------------------------------------------------

PROFILE_PATHS = ("display_name", "phone", "shipping_addresses")


@dataclass(frozen=True)
class Profile:
    display_name: str
    phone: str
    shipping_addresses: tuple[SavedAddress, ...]


def check_update_mask(paths: Sequence[str]) -> None:
    if not paths:
        raise invalid(FieldViolation("update_mask", f"name at least one field to update: {', '.join(PROFILE_PATHS)}"))
    unknown = [p for p in paths if p not in PROFILE_PATHS]
    if unknown:
        raise invalid(
            FieldViolation(
                "update_mask", f"unknown field {', '.join(map(repr, unknown))}; allowed: {', '.join(PROFILE_PATHS)}"
            )
        )


def apply_profile_update(current: Profile, paths: Sequence[str], new: Profile) -> Profile:
    """``current`` with the fields named in ``paths`` taken from ``new``, validated."""
    check_update_mask(paths)
    violations = Violations()
    result = current
    if "display_name" in paths:
        name = new.display_name.strip()
        problem = display_name_problem(name)
        if problem:
            violations.add("profile.display_name", problem)
        result = replace(result, display_name=name)
    if "phone" in paths:
        phone = normalize_phone(new.phone.strip())
        problem = phone_problem(phone) if phone else None
        if problem:
            violations.add("profile.phone", problem)
        result = replace(result, phone=phone)
    if "shipping_addresses" in paths:
        try:
            saved = validate_saved_addresses(new.shipping_addresses, (a.id for a in current.shipping_addresses))
        except InvalidArgumentError as exc:
            violations.items.extend(exc.violations)
        else:
            result = replace(result, shipping_addresses=tuple(saved))
    violations.check()
    return result


# --- roles ---------------------------------------------------------------------

CUSTOMER = "customer"
ADMIN = "admin"
_ROLE_BY_PROTO: dict[int, str] = {user_pb2.ROLE_CUSTOMER: CUSTOMER, user_pb2.ROLE_ADMIN: ADMIN}
_PROTO_BY_ROLE: dict[str, user_pb2.Role.ValueType] = {CUSTOMER: user_pb2.ROLE_CUSTOMER, ADMIN: user_pb2.ROLE_ADMIN}


def role_from_proto(value: int, path: str = "role") -> str:
    role = _ROLE_BY_PROTO.get(value)
    if role is None:
        raise invalid(FieldViolation(path, "must be ROLE_CUSTOMER or ROLE_ADMIN"))
    return role


def role_filter_from_proto(value: int, path: str = "role") -> str | None:
    """A list filter: ROLE_UNSPECIFIED means every role."""
    if value == user_pb2.ROLE_UNSPECIFIED:
        return None
    return role_from_proto(value, path)


def role_to_proto(role: str) -> user_pb2.Role.ValueType:
    return _PROTO_BY_ROLE.get(role, user_pb2.ROLE_UNSPECIFIED)


# --- refresh tokens -------------------------------------------------------------

REFRESH_TOKEN_MAX = 256


def new_refresh_token() -> str:
    """An opaque refresh token (256 random bits); only its hash is stored."""
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def refresh_expiry(now: datetime, ttl_seconds: int) -> datetime:
    return now + timedelta(seconds=ttl_seconds)


# --- ids and paging ---------------------------------------------------------------


MAX_BATCH = 100


def batch_ids(values: Sequence[str], path: str = "user_ids") -> list[str]:
    """The requested ids without duplicates, in request order (1 to 100)."""
    ids = list(dict.fromkeys(v.strip() for v in values))
    if not ids:
        raise invalid(FieldViolation(path, "name at least one user id"))
    if len(ids) > MAX_BATCH:
        raise invalid(FieldViolation(path, f"at most {MAX_BATCH} ids per call, got {len(ids)}"))
    return ids


QUERY_MAX = EMAIL_MAX


def list_query(raw: str, path: str = "query") -> str:
    query = raw.strip().lower()
    if len(query) > QUERY_MAX:
        raise invalid(FieldViolation(path, f"must be at most {QUERY_MAX} characters"))
    if control := control_problem(query):
        raise invalid(FieldViolation(path, control))
    return query


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
