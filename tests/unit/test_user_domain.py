"""The pure account and session rules of user_svc (user_svc/domain/), and its role mapping (user_svc/convert.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from shop.user.v1 import user_pb2

from common import paging, validation
from common.errors import InvalidArgumentError
from common.validation import Address
from user_svc import convert
from user_svc.domain import accounts as domain, sessions
from user_svc.domain.accounts import Profile, SavedAddress, UserCursor


def _fields(exc: pytest.ExceptionInfo[InvalidArgumentError]) -> dict[str, str]:
    assert exc.value.reason == "VALIDATION_FAILED"
    return {v.field: v.description for v in exc.value.violations}


# --- email ------------------------------------------------------------------------


def test_email_is_trimmed_and_lower_cased() -> None:
    assert domain.validate_email("  Alice.Smith+shop@Example.COM ") == "alice.smith+shop@example.com"


@pytest.mark.parametrize(
    "email",
    [
        "",
        "plain",
        "@example.com",
        "alice@",
        "alice@localhost",
        "alice@example",
        "alice@@example.com",
        "al ice@example.com",
        "alice@exa_mple.com",
        "alice@-example.com",
        ".alice@example.com",
        "alice..smith@example.com",
        "alice@example.c",
        "a" * 65 + "@example.com",
        "alice@" + "a" * 250 + ".com",
    ],
)
def test_bad_email_syntax_is_refused(email: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_email(email)
    assert "email" in _fields(raised)


# --- password policy --------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("short1!", "too short"),
        ("x1" * 65, "too long"),
        ("onlyletterspassword", "only letters"),
        ("ÄöüßÉèàçñõ", "only letters"),
        ("12345678901234", "only digits"),
        ("alice@example.com", "the same as your email address"),
        ("ALICE@example.com", "the same as your email address"),
    ],
)
def test_password_policy_names_the_failed_rule(password: str, rule: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_password(password, "alice@example.com")
    message = _fields(raised)["password"]
    assert message.startswith(rule)
    assert "10 to 128 characters" in message  # and states the whole policy


@pytest.mark.parametrize(
    "password", ["correct horse 1", "0123456789a", "letters and spaces", "x" * 9 + "1", "1" * 127 + "a"]
)
def test_password_policy_accepts(password: str) -> None:
    domain.validate_password(password, "alice@example.com")


def test_registration_reports_every_bad_field_at_once() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_registration("not-an-email", "short", "   ")
    assert set(_fields(raised)) == {"email", "password", "display_name"}


def test_registration_normalizes() -> None:
    registration = domain.validate_registration(" Bob@Example.com", "correct horse 1", "  Bob  ")
    assert registration == domain.Registration(email="bob@example.com", display_name="Bob")


# --- display name, phone ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ok"), [("Bob", True), ("x" * 100, True), ("x" * 101, False), ("a\nb", False), ("", False)]
)
def test_display_name(name: str, ok: bool) -> None:
    assert (domain.display_name_problem(name) is None) is ok


@pytest.mark.parametrize(
    ("raw", "normalized", "ok"),
    [
        ("+4930123456", "+4930123456", True),
        ("+49 (30) 123-456", "+4930123456", True),
        ("+1 415.555.0100", "+14155550100", True),
        ("030123456", "030123456", False),
        ("+0301234", "+0301234", False),
        ("+1234567890123456", "+1234567890123456", False),
        ("+49abc", "+49abc", False),
    ],
)
def test_phone_is_e164(raw: str, normalized: str, ok: bool) -> None:
    assert validation.normalize_phone(raw) == normalized
    assert (validation.phone_problem(normalized) is None) is ok


# --- addresses ------------------------------------------------------------------------

HOME = Address(
    recipient_name="Alice Smith",
    line1="Hauptstr. 1",
    city="Berlin",
    postal_code="10115",
    country_code="de",
    phone="+49 30 123456",
)


def test_new_addresses_get_ids_and_are_normalized() -> None:
    saved = domain.validate_saved_addresses([SavedAddress(label=" Home ", is_default=True, address=HOME)], [])
    assert len(saved) == 1
    assert uuid.UUID(saved[0].id)
    assert saved[0].label == "Home"
    assert saved[0].address.country_code == "DE"
    assert saved[0].address.phone == "+4930123456"


def test_existing_address_keeps_its_id_and_unknown_ids_are_refused() -> None:
    known = str(uuid.uuid4())
    kept = domain.validate_saved_addresses([SavedAddress(id=known, address=HOME)], [known])
    assert kept[0].id == known
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_saved_addresses([SavedAddress(id=str(uuid.uuid4()), address=HOME)], [known])
    assert "profile.shipping_addresses[0].id" in _fields(raised)


def test_address_required_fields_one_violation_each() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_saved_addresses([SavedAddress(address=Address(line2="c/o Bob"))], [])
    prefix = "profile.shipping_addresses[0].address."
    assert set(_fields(raised)) == {
        prefix + name for name in ("recipient_name", "line1", "city", "postal_code", "country_code")
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"country_code": "XX"}, "country_code"),
        ({"country_code": "DEU"}, "country_code"),
        ({"postal_code": "10115!"}, "postal_code"),
        ({"phone": "12345"}, "phone"),
        ({"city": "x" * 101}, "city"),
        ({"line1": "Main St\n1"}, "line1"),
    ],
)
def test_address_field_rules(change: dict[str, str], field: str) -> None:
    address = Address(**{**HOME.__dict__, **change})
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_saved_addresses([SavedAddress(address=address)], [])
    assert list(_fields(raised)) == [f"profile.shipping_addresses[0].address.{field}"]


def test_at_most_ten_addresses_and_one_default() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_saved_addresses([SavedAddress(address=HOME)] * 11, [])
    assert "at most 10" in _fields(raised)["profile.shipping_addresses"]
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_saved_addresses([SavedAddress(is_default=True, address=HOME)] * 2, [])
    assert "one address may be the default" in _fields(raised)["profile.shipping_addresses"]
    assert len(domain.validate_saved_addresses([SavedAddress(address=HOME)] * 10, [])) == 10


def test_saved_address_json_round_trip() -> None:
    saved = domain.validate_saved_addresses([SavedAddress(label="Home", is_default=True, address=HOME)], [])[0]
    assert SavedAddress.from_json(saved.to_json()) == saved


# --- profile updates ----------------------------------------------------------------------

CURRENT = Profile(display_name="Alice", phone="", shipping_addresses=())


def test_profile_update_touches_only_masked_fields() -> None:
    new = Profile(display_name="  Alice S. ", phone="+49 30 1234567", shipping_addresses=())
    updated = domain.apply_profile_update(CURRENT, ["phone"], new)
    assert updated == Profile(display_name="Alice", phone="+49301234567", shipping_addresses=())
    updated = domain.apply_profile_update(CURRENT, ["display_name", "phone"], new)
    assert updated.display_name == "Alice S."
    cleared = domain.apply_profile_update(updated, ["phone"], Profile("", "", ()))
    assert cleared.phone == ""


@pytest.mark.parametrize("paths", [[], ["email"], ["display_name", "role"]])
def test_profile_update_mask_must_name_known_fields(paths: list[str]) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        domain.apply_profile_update(CURRENT, paths, CURRENT)
    assert "update_mask" in _fields(raised)


def test_profile_update_reports_bad_values() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        domain.apply_profile_update(CURRENT, ["display_name", "phone"], Profile(" ", "555", ()))
    assert set(_fields(raised)) == {"profile.display_name", "profile.phone"}


# --- roles ------------------------------------------------------------------------------


def test_role_mapping() -> None:
    assert convert.role_from_proto(user_pb2.ROLE_ADMIN) == "admin"
    assert convert.role_from_proto(user_pb2.ROLE_CUSTOMER) == "customer"
    assert convert.role_to_proto("admin") == user_pb2.ROLE_ADMIN
    assert convert.role_filter_from_proto(user_pb2.ROLE_UNSPECIFIED) is None
    with pytest.raises(InvalidArgumentError) as raised:
        convert.role_from_proto(user_pb2.ROLE_UNSPECIFIED)
    assert "role" in _fields(raised)
    with pytest.raises(InvalidArgumentError):
        convert.role_from_proto(42)


# --- refresh tokens ------------------------------------------------------------------------


def test_refresh_tokens_are_random_and_hashed() -> None:
    tokens = {sessions.new_refresh_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert len(token) >= 43  # 256 bits
    digest = sessions.hash_refresh_token(token)
    assert digest == sessions.hash_refresh_token(token)
    assert len(digest) == 64 and token not in digest


# --- paging ---------------------------------------------------------------------------------


def test_page_size_default_clamp_and_negative() -> None:
    assert paging.page_size(0) == 20
    assert paging.page_size(7) == 7
    assert paging.page_size(1000) == 100
    with pytest.raises(InvalidArgumentError) as raised:
        paging.page_size(-1)
    assert "page.page_size" in _fields(raised)


def test_page_token_round_trip_keeps_microseconds() -> None:
    cursor = UserCursor(created_at=datetime(2025, 3, 4, 5, 6, 7, 891234, tzinfo=UTC), id=uuid.uuid4())
    key = domain.list_scope("ali", "admin")
    token = domain.encode_cursor(cursor, key)
    assert domain.decode_cursor(token, key) == cursor
    assert domain.decode_cursor("", key) is None
    assert str(cursor.id) not in token and "2025" not in token  # opaque


def test_page_token_is_bound_to_its_filters_and_refuses_garbage() -> None:
    cursor = UserCursor(created_at=datetime.now(UTC), id=uuid.uuid4())
    token = domain.encode_cursor(cursor, domain.list_scope("ali", ""))
    with pytest.raises(InvalidArgumentError) as raised:
        domain.decode_cursor(token, domain.list_scope("bob", ""))
    assert "other filters" in _fields(raised)["page.page_token"]
    for garbage in ("nonsense", "e30", "!!!", token[:-3]):
        with pytest.raises(InvalidArgumentError):
            domain.decode_cursor(garbage, domain.list_scope("ali", ""))


def test_batch_ids() -> None:
    assert domain.batch_ids(["a", "b", "a", " b "]) == ["a", "b"]
    with pytest.raises(InvalidArgumentError):
        domain.batch_ids([])
    with pytest.raises(InvalidArgumentError) as raised:
        domain.batch_ids([str(i) for i in range(101)])
    assert "at most 100" in _fields(raised)["user_ids"]
    assert len(domain.batch_ids([str(i) for i in range(100)] * 2)) == 100


# --- client addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "host"),
    [("ipv4:127.0.0.1:5000", "127.0.0.1"), ("ipv6:[::1]:5000", "::1"), ("unix:/tmp/sock", "unix:/tmp/sock")],
)
def test_peer_host(peer: str, host: str) -> None:
    assert sessions.peer_host(peer) == host


def test_address_bucket_groups_ipv6_by_64() -> None:
    assert sessions.address_bucket("203.0.113.7") == "203.0.113.7"
    assert sessions.address_bucket("2001:db8:1:2:aaaa::1") == sessions.address_bucket("2001:db8:1:2:bbbb::2")
    assert sessions.address_bucket("2001:db8:1:2::1") != sessions.address_bucket("2001:db8:1:3::1")
    assert sessions.address_bucket("::ffff:203.0.113.7") == "203.0.113.7"
    assert sessions.address_bucket("") == "unknown"
