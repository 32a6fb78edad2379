"""Paging, the same in every service: one page-size rule and one page-token format.

A page token is opaque to clients: base64url of a small JSON object holding the
format version, the *scope* it was issued for (the list and its filters and
order, usually a :func:`scope` fingerprint) and the *position* after the last
item of the page (keyset values such as a timestamp in microseconds and an id).
A token presented with another scope, or that this code did not write, is an
INVALID_ARGUMENT on ``page.page_token`` that tells the caller to start again.

Plain Python, no protobuf and no database types: domain modules use it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from common.errors import FieldViolation, InvalidArgumentError
from common.validation import invalid

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
PAGE_TOKEN_MAX = 512  # characters; the edge accepts no longer token either
PAGE_SIZE_PATH = "page.page_size"
PAGE_TOKEN_PATH = "page.page_token"

_VERSION = 1
_INT64_MAX = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Scalar = int | str | None


def page_size(
    requested: int, path: str = PAGE_SIZE_PATH, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE
) -> int:
    """The page size to use: 0 means the default, larger than the maximum means the maximum."""
    if requested < 0:
        raise invalid(FieldViolation(path, "must not be negative"))
    return min(requested or default, maximum)


def scope(*parts: object) -> str:
    """A short fingerprint of what a token belongs to: the list, its filters and its order."""
    raw = json.dumps([str(part) for part in parts], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def micros(moment: datetime) -> int:
    """A timestamp as whole microseconds since the epoch (exact, unlike float seconds)."""
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND


def created_position(created_at: datetime, item_id: uuid.UUID) -> dict[str, Scalar]:
    """The position after an item in (created_at, id) order, the order most lists page in;
    read back with :meth:`Position.created`."""
    return {"t": micros(created_at), "i": item_id.hex}


def encode_page_token(position: Mapping[str, Scalar], token_scope: str) -> str:
    payload = json.dumps(
        {"v": _VERSION, "s": token_scope, "p": dict(position)}, separators=(",", ":"), ensure_ascii=False
    )
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


class Position:
    """The position a page token holds, read field by field; anything unexpected
    is the same INVALID_ARGUMENT as a malformed token."""

    def __init__(self, values: Mapping[str, object], path: str) -> None:
        self._values = values
        self._path = path

    def _get(self, key: str) -> object:
        if key not in self._values:
            raise not_a_token(self._path)
        return self._values[key]

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) > _INT64_MAX:
            raise not_a_token(self._path)
        return value

    def optional_integer(self, key: str) -> int | None:
        if self._values.get(key) is None:
            return None
        return self.integer(key)

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise not_a_token(self._path)
        return value

    def identifier(self, key: str) -> uuid.UUID:
        try:
            return uuid.UUID(hex=self.text(key))
        except ValueError:
            raise not_a_token(self._path) from None

    def moment(self, key: str) -> datetime:
        try:
            return from_micros(self.integer(key))
        except OverflowError:
            raise not_a_token(self._path) from None

    def created(self) -> tuple[datetime, uuid.UUID]:
        """The (created_at, id) of a :func:`created_position`."""
        return self.moment("t"), self.identifier("i")


def decode_page_token(token: str, token_scope: str, path: str = PAGE_TOKEN_PATH) -> Position | None:
    """The position in ``token`` (None for an empty token, the first page);
    INVALID_ARGUMENT when it is malformed or was issued for another scope."""
    token = token.strip()
    if not token:
        return None
    if len(token) > PAGE_TOKEN_MAX:
        raise not_a_token(path)
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise not_a_token(path) from None
    if not isinstance(data, dict) or data.get("v") != _VERSION or not isinstance(data.get("p"), dict):
        raise not_a_token(path)
    if data.get("s") != token_scope:
        raise invalid(
            FieldViolation(path, "belongs to a list with other filters or another order; start again without a token")
        )
    return Position(data["p"], path)


def not_a_token(path: str = PAGE_TOKEN_PATH) -> InvalidArgumentError:
    return invalid(FieldViolation(path, "is not a page token of this list; start again without one"))
