"""The rules of reading a feed: page tokens and stream positions, which ids a
read mark may name, and what an announcement may say."""

from __future__ import annotations

from collections.abc import Mapping

from common.errors import FieldViolation, InvalidArgumentError
from common.paging import decode_page_token, encode_page_token, not_a_token, scope
from common.validation import VALIDATION_FAILED, control_problem

MAX_NOTIFICATION_ID = 64
MAX_STREAM_POSITION_DIGITS = 18


# --- paging -------------------------------------------------------------------------------
# A feed (and a webhook's deliveries) is paged by position: a token holds the
# position the next page continues below, bound to the listing and its filters.


def feed_scope(*, unread_only: bool) -> str:
    return scope("feed", "unread") if unread_only else scope("feed")


def deliveries_scope(webhook_id: str, status: str | None) -> str:
    return scope("deliveries", webhook_id, status or "")


def page_token(position: int | None, token_scope: str) -> str:
    """The next_page_token for a page that continues below ``position`` ("" after the last page)."""
    return encode_page_token({"p": position}, token_scope) if position else ""


def page_position(token: str, token_scope: str) -> int | None:
    """The position a page token continues below; None for the first page."""
    position = decode_page_token(token, token_scope)
    if position is None:
        return None
    value = position.integer("p")
    if value <= 0:
        raise not_a_token()
    return value


def stream_position(last_event_id: str) -> int | None:
    """The stream position a Subscribe resumes after (the SSE Last-Event-ID)."""
    value = last_event_id.strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > MAX_STREAM_POSITION_DIGITS:
        raise InvalidArgumentError(
            "last_event_id is not a position of this stream",
            [FieldViolation("last_event_id", "send the event_id of the last message received")],
            reason=VALIDATION_FAILED,
        )
    return int(value)


def check_notification_id(value: str) -> str:
    """The id a read mark names; INVALID_ARGUMENT when it cannot be one."""
    if not value or len(value) > MAX_NOTIFICATION_ID:
        raise InvalidArgumentError(
            "notification_id is required",
            [FieldViolation("notification_id", "send the id of a notification in your feed")],
            reason=VALIDATION_FAILED,
        )
    return value


# --- announcements ------------------------------------------------------------------------

MAX_TITLE = 200
MAX_BODY = 5000
MAX_DATA_ENTRIES = 20
MAX_DATA_KEY = 64
MAX_DATA_VALUE = 2000


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
    violations += _data_violations(data)
    if violations:
        raise InvalidArgumentError("the announcement has invalid fields", violations, reason=VALIDATION_FAILED)
    return title, body, dict(data)


def _data_violations(data: Mapping[str, str]) -> list[FieldViolation]:
    violations = []
    for key, value in data.items():
        if not 1 <= len(key) <= MAX_DATA_KEY or len(value) > MAX_DATA_VALUE:
            violations.append(
                FieldViolation(f"data[{key[:MAX_DATA_KEY]}]", "keys are 1 to 64 characters, values at most 2000")
            )
        elif control := control_problem(key) or control_problem(value, multiline=True):
            violations.append(FieldViolation(f"data[{control_free(key)}]", control))
    return violations


def control_free(text: str) -> str:
    """``text`` as a field path may name it: its control characters dropped."""
    return "".join(ch for ch in text if not control_problem(ch))
