"""The rules of accounts and their aggregate, the user: email and password
policy, profiles and saved addresses, roles, listing.  Plain Python: no I/O, no
protobuf, no database types.

Validation failures raise :class:`~common.errors.InvalidArgumentError` with one
:class:`~common.errors.FieldViolation` per bad field (paths relative to the
request message, e.g. ``profile.shipping_addresses[0].address.city``) and
reason ``VALIDATION_FAILED``.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from common import paging
from common.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from common.validation import (
    Address,
    Violations,
    control_problem,
    invalid,
    normalize_phone,
    parse_uuid,
    phone_problem,
    validate_address,
)

if TYPE_CHECKING:
    from common.auth import Principal


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


# --- accounts --------------------------------------------------------------------

CUSTOMER = "customer"
ADMIN = "admin"


@dataclass(frozen=True)
class User:
    """An account: who it is, its credentials' hash, its profile and its role."""

    id: uuid.UUID
    email: str
    password_hash: str
    display_name: str
    phone: str
    role: str
    shipping_addresses: tuple[SavedAddress, ...]
    created_at: datetime
    updated_at: datetime

    @property
    def profile(self) -> Profile:
        return Profile(self.display_name, self.phone, self.shipping_addresses)


def no_account() -> UnauthenticatedError:
    """A valid access token whose account is gone (or whose subject is no user id)."""
    return UnauthenticatedError("the access token names no account; sign in again", reason="INVALID_TOKEN")


def no_such_user() -> NotFoundError:
    return NotFoundError("no user with this id")


def check_may_read(principal: Principal, user_ids: Sequence[str]) -> None:
    """Readers of other accounts: an admin or the account's owner.  Internal
    callers (e.g. comment_svc resolving author names) need a service identity,
    which the shared auth does not have yet; until then they call as an admin."""

    def same(raw: str) -> str:
        return str(parse_uuid(raw) or raw)

    if not principal.is_admin and any(same(user_id) != same(principal.user_id) for user_id in user_ids):
        raise PermissionDeniedError("only an admin or the account's owner may read an account", reason="NOT_OWNER")


def is_demotion(current: User, role: str) -> bool:
    return current.role == ADMIN and role != ADMIN


def check_demotion(admins: int) -> None:
    """The last admin is never demoted (``admins``: how many there are now)."""
    if admins <= 1:
        raise FailedPreconditionError("this is the last admin: make another user admin first", reason="LAST_ADMIN")


class AdminOutcome(enum.StrEnum):
    """What making an account an admin did (create-admin, the bootstrap admin)."""

    CREATED = "created"
    PROMOTED = "promoted"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    EXISTS = "exists"


def admin_outcome(current: User | None, *, new_password: bool, promote: bool) -> AdminOutcome:
    """Create an admin when ``current`` is None (a password is needed), or (with
    ``promote``) make the existing account one and set its password when a new
    one is given; without ``promote`` an existing account stays as it is."""
    if current is None:
        if not new_password:
            raise NotFoundError("no account with this email; a password is needed to create it")
        return AdminOutcome.CREATED
    if not promote:
        return AdminOutcome.EXISTS
    if current.role != ADMIN:
        return AdminOutcome.PROMOTED
    return AdminOutcome.UPDATED if new_password else AdminOutcome.UNCHANGED


# --- ids, listing and paging ----------------------------------------------------------

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


@dataclass(frozen=True)
class UserCursor:
    """Position after the last user of a page, in (created_at, id) descending order."""

    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True)
class UserQuery:
    """A request for a page of the user list, as asked (the use case checks it): at
    most ``page_size`` users after ``page_token``, whose email or display name starts
    with ``query``, of one role or all."""

    page_size: int
    page_token: str
    query: str
    role: str | None


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    next_page_token: str


@dataclass(frozen=True)
class UserBatch:
    users: list[User]
    missing_ids: list[str]


def list_scope(query: str, role: str | None) -> str:
    """What a page token of the user list is bound to: its filters."""
    return paging.scope(query, role or "")


def encode_cursor(cursor: UserCursor, scope: str) -> str:
    return paging.encode_page_token(paging.created_position(cursor.created_at, cursor.id), scope)


def decode_cursor(token: str, scope: str) -> UserCursor | None:
    position = paging.decode_page_token(token, scope)
    if position is None:
        return None
    created_at, user_id = position.created()
    return UserCursor(created_at=created_at, id=user_id)
