"""Input rules shared by the services: field violations, free text, addresses, ids (paging: common/paging.py).

Validation failures raise :class:`~common.errors.InvalidArgumentError` with one
:class:`~common.errors.FieldViolation` per bad field (paths relative to the
request message, e.g. ``shipping_address.city``) and reason ``VALIDATION_FAILED``.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass

from common.errors import FieldViolation, InvalidArgumentError

VALIDATION_FAILED = "VALIDATION_FAILED"


class Violations:
    """Collects field violations; ``check()`` raises them all at once.  With a
    ``prefix`` (such as ``"product."``) every path is relative to that message."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.items: list[FieldViolation] = []

    def add(self, path: str, description: str) -> None:
        self.items.append(FieldViolation(f"{self.prefix}{path}", description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def check(self) -> None:
        if self.items:
            raise invalid(*self.items)


NAMED_FIELDS = 3  # fields the message names; the violations list them all (within the status budget)


def invalid(*violations: FieldViolation) -> InvalidArgumentError:
    """One INVALID_ARGUMENT for all the violations: its message names the fields
    (and says what is wrong when there is one)."""
    if len(violations) == 1:
        (only,) = violations
        return InvalidArgumentError(
            f"invalid {only.field}: {only.description}", violations=[only], reason=VALIDATION_FAILED
        )
    names = list(dict.fromkeys(v.field for v in violations))
    fields = ", ".join(names[:NAMED_FIELDS])
    if len(names) > NAMED_FIELDS:
        fields += f" and {len(names) - NAMED_FIELDS} more"
    return InvalidArgumentError(f"invalid {fields}", violations=list(violations), reason=VALIDATION_FAILED)


# --- free text ----------------------------------------------------------------------

# Control characters (C0, DEL, C1), unpaired surrogates, and the line and paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_MULTILINE_ALLOWED = frozenset("\n\r\t")


def control_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why free text holds characters it may not, or None: the one rule of every
    service's free-text field (names, titles, descriptions, addresses, comments,
    announcements, ...).  No control character at all on one line; multi-line
    text (descriptions, bodies) keeps line breaks and tabs."""
    for ch in value:
        if unicodedata.category(ch) in _CONTROL_CATEGORIES and not (multiline and ch in _MULTILINE_ALLOWED):
            found = f"U+{ord(ch):04X}"
            if multiline:
                return f"must not contain control characters (found {found}); line breaks and tabs are fine"
            return f"must not contain control characters or line breaks (found {found})"
    return None


# --- phone numbers and addresses ------------------------------------------------

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_PHONE_SEPARATORS = re.compile(r"[\s().-]")


def normalize_phone(raw: str) -> str:
    """Spaces, dots, dashes and parentheses dropped: "+49 (30) 123-456" -> "+4930123456"."""
    return _PHONE_SEPARATORS.sub("", raw)


def phone_problem(phone: str) -> str | None:
    if not _E164.match(phone):
        return "must be an E.164 number: '+', country code and number, up to 15 digits (e.g. +4930123456)"
    return None


_COUNTRY_CODES = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT
    BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH
    ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT
    HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS
    LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI
    NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG
    SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG
    UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
"""
COUNTRY_CODES = frozenset(_COUNTRY_CODES.split())


@dataclass(frozen=True)
class Address:
    """shop.common.v1.Address."""

    recipient_name: str = ""
    line1: str = ""
    line2: str = ""
    city: str = ""
    region: str = ""
    postal_code: str = ""
    country_code: str = ""
    phone: str = ""


# (field, required, max length)
_ADDRESS_FIELDS: tuple[tuple[str, bool, int], ...] = (
    ("recipient_name", True, 100),
    ("line1", True, 200),
    ("line2", False, 200),
    ("city", True, 100),
    ("region", False, 100),
    ("postal_code", True, 20),
    ("country_code", True, 2),
    ("phone", False, 32),
)
_POSTAL_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 -]*$")


def _address_value(name: str, raw: str) -> str:
    """A field of an address as it is kept: trimmed, the country code upper-cased, the phone normalized."""
    value = raw.strip()
    if name == "country_code":
        return value.upper()
    if name == "phone":
        return normalize_phone(value)
    return value


def _address_field_problem(name: str, value: str, max_length: int) -> str | None:
    """What is wrong with a given (non-empty) field of an address, if anything."""
    control = control_problem(value)
    if control:
        return control
    if name == "country_code":
        return None if value in COUNTRY_CODES else "must be an ISO 3166-1 alpha-2 country code such as DE or US"
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    if name == "postal_code":
        return None if _POSTAL_CODE.match(value) else "may contain only letters, digits, spaces and dashes"
    if name == "phone":
        return phone_problem(value)
    return None


def validate_address(address: Address, path: str, violations: Violations) -> Address:
    """The address trimmed (country code upper-cased, phone normalized); problems go to ``violations``."""
    values: dict[str, str] = {}
    for name, required, max_length in _ADDRESS_FIELDS:
        value = values[name] = _address_value(name, getattr(address, name))
        where = f"{path}.{name}"
        if not value:
            if required:
                violations.add(where, "is required")
            continue
        problem = _address_field_problem(name, value, max_length)
        if problem:
            violations.add(where, problem)
    return Address(**values)


# --- ids ---------------------------------------------------------------------------


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value.strip())
    except (ValueError, AttributeError):
        return None


def uuid_problem(value: str, what: str = "an id") -> str | None:
    """Why ``value`` is not an id such as ``what`` ("a product id"), or None."""
    if not value.strip():
        return "is required"
    if parse_uuid(value) is None:
        return f"must be {what} (UUID)"
    return None


def require_uuid(value: str, path: str, what: str = "an id") -> uuid.UUID:
    """The UUID in ``value``; INVALID_ARGUMENT on ``path`` when it is missing or malformed."""
    problem = uuid_problem(value, what)
    if problem is not None:
        raise invalid(FieldViolation(path, problem))
    return uuid.UUID(value.strip())
