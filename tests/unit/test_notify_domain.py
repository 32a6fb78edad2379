"""The rules of notifications (notify_svc/domain/, and the event readers of
notify_svc/events.py): who is told what, folding likes, page tokens, webhook
targets, backoff and signatures."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import uuid

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from shop.common.v1 import money_pb2
from shop.events.v1 import comment_events_pb2, order_events_pb2, platform_events_pb2

from common.errors import InvalidArgumentError
from common.paging import encode_page_token, page_size
from common.validation import VALIDATION_FAILED
from notify_svc import domain
from notify_svc.domain import drafts, feed, webhooks
from notify_svc.events import draft_of
from notify_svc.webhook_delivery import check_target

NOW = 1_700_000_000_000_000
EUR = money_pb2.Money(amount_minor=4599, currency_code="EUR")


def stamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def draft(event: Message, event_id: str = "e-1") -> drafts.Draft:
    made = draft_of(event_id, event, NOW)
    assert made is not None
    return made


# --- events to notifications -------------------------------------------------------------------


def test_every_order_state_change_notifies_the_buyer() -> None:
    cases = [
        (order_events_pb2.OrderCreated(order_id="abcdef123", user_id="u1", total=EUR), domain.ORDER_CREATED,
         "Order placed", "Your order abcdef12 of 45.99 EUR is waiting for payment."),
        (order_events_pb2.OrderPaid(order_id="abcdef123", user_id="u1", amount=EUR, payment_id="p"), domain.ORDER_PAID,
         "Payment received", "We received your payment of 45.99 EUR for order abcdef12."),
        (order_events_pb2.OrderShipped(order_id="abcdef123", user_id="u1", carrier="DHL", tracking_number="T9"),
         domain.ORDER_SHIPPED, "Order shipped", "Order abcdef12 is on its way with DHL (tracking number T9)."),
        (order_events_pb2.OrderDelivered(order_id="abcdef123", user_id="u1"), domain.ORDER_DELIVERED,
         "Order delivered", "Order abcdef12 was delivered."),
        (order_events_pb2.OrderCancelled(order_id="abcdef123", user_id="u1",
                                         reason=order_events_pb2.ORDER_CANCEL_REASON_CUSTOMER),
         domain.ORDER_CANCELLED, "Order cancelled", "Order abcdef12 was cancelled at your request."),
    ]  # fmt: skip
    for event, kind, title, body in cases:
        made = draft(event)
        note = made.notification
        assert (note.user_id, note.kind, note.title, note.body) == ("u1", kind, title, body)
        assert note.data["order_id"] == "abcdef123"
        assert note.source_event_id == "e-1" and note.folded_count == 1
        assert made.fold_on is None and not made.is_announcement


def test_a_refunded_cancellation_says_how_much() -> None:
    event = order_events_pb2.OrderCancelled(
        order_id="o1", user_id="u1", reason=order_events_pb2.ORDER_CANCEL_REASON_ADMIN, refunded=True,
        refund_amount=money_pb2.Money(amount_minor=500, currency_code="JPY"),
    )  # fmt: skip
    note = draft(event).notification
    assert note.body == "Order o1 was cancelled by the shop. 500 JPY will be refunded."
    assert note.data == {"order_id": "o1", "reason": "ADMIN"}


def test_ids_are_stable_per_event_and_recipient_and_times_come_from_the_event() -> None:
    event = order_events_pb2.OrderPaid(order_id="o", user_id="u", occurred_at=stamp(100), committed_at=stamp(101))
    first, again = draft(event, "e-7").notification, draft(event, "e-7").notification
    other = draft(event, "e-8").notification
    assert first.id == again.id != other.id
    assert uuid.UUID(first.id)
    assert (first.created_at_us, first.source_committed_at_us) == (100_000_000, 101_000_000)
    assert draft(order_events_pb2.OrderPaid(order_id="o", user_id="u")).notification.created_at_us == NOW


def test_events_without_a_recipient_are_invalid_and_some_events_notify_nobody() -> None:
    with pytest.raises(drafts.InvalidEventError, match="user_id"):
        draft_of("e", order_events_pb2.OrderPaid(order_id="o"), NOW)
    with pytest.raises(drafts.InvalidEventError, match="parent_author_id"):
        draft_of("e", comment_events_pb2.CommentReplied(comment_id="c"), NOW)
    assert draft_of("e", comment_events_pb2.CommentCreated(comment_id="c", author_id="a"), NOW) is None
    own_reply = comment_events_pb2.CommentReplied(comment_id="c", parent_author_id="a", author_id="a")
    assert draft_of("e", own_reply, NOW) is None
    own_like = comment_events_pb2.CommentLiked(comment_id="c", comment_author_id="a", liker_id="a")
    assert draft_of("e", own_like, NOW) is None


def test_a_reply_notifies_the_parents_author() -> None:
    event = comment_events_pb2.CommentReplied(
        comment_id="c2", product_id="p", parent_id="c1", parent_author_id="ann", author_id="bob",
        author_display_name="Bob", body_excerpt="  Agreed!  ",
    )  # fmt: skip
    note = draft(event).notification
    assert (note.user_id, note.kind, note.title, note.body) == (
        "ann", domain.COMMENT_REPLY, "Bob replied to your comment", "“Agreed!”"
    )  # fmt: skip
    assert note.data == {"comment_id": "c2", "product_id": "p", "parent_id": "c1"}
    nameless = comment_events_pb2.CommentReplied(comment_id="c", parent_author_id="ann", author_id="x")
    assert draft(nameless).notification.title == "Someone replied to your comment"


def test_an_announcement_is_for_everyone_under_its_own_id() -> None:
    announcement_id = str(uuid.uuid4())
    event = platform_events_pb2.AnnouncementPublished(
        announcement_id=announcement_id, title="Sale", body="-20%", data={"url": "/sale"}
    )
    made = draft(event)
    assert made.is_announcement and made.recipient == ""
    assert made.notification.id == announcement_id
    assert made.notification.data == {"url": "/sale", "announcement_id": announcement_id}
    odd = draft(platform_events_pb2.AnnouncementPublished(announcement_id="not-a-uuid", title="t", body="b"))
    assert uuid.UUID(odd.notification.id)


# --- folding likes ----------------------------------------------------------------------------------


def like(liker: str, name: str, count: int, event_id: str, at: int = 0) -> drafts.Draft:
    event = comment_events_pb2.CommentLiked(
        comment_id="c1", product_id="p", comment_author_id="author", liker_id=liker, liker_display_name=name,
        like_count=count, occurred_at=stamp(at) if at else None,
    )  # fmt: skip
    return draft(event, event_id)


def test_likes_fold_into_one_notification() -> None:
    first = like("u1", "Ann", 1, "e1", at=10)
    assert first.fold_on == "c1" and first.liker == ("u1", "Ann")
    note = first.notification
    assert (note.title, note.folded_count) == ("Ann liked your comment", 1)
    second = like("u2", "Bob", 2, "e2", at=20)
    note = drafts.fold_like(note, second.notification, ("u2", "Bob"))
    assert note.title == "Bob and Ann liked your comment"
    third = like("u3", "Cyd", 3, "e3", at=30)
    note = drafts.fold_like(note, third.notification, ("u3", "Cyd"))
    assert (note.title, note.body) == ("3 people liked your comment", "Cyd, Bob and 1 other liked your comment.")
    assert note.id == first.notification.id and note.source_event_id == "e1"
    assert note.folded_count == 3 and note.data["like_count"] == "3"
    assert note.created_at_us == 30_000_000
    # The same person again (unlike, like): one more event, not one more person.
    again = drafts.fold_like(note, like("u1", "Ann", 3, "e4").notification, ("u1", "Ann"))
    assert again.folded_count == 4
    assert again.title == "3 people liked your comment"
    assert again.body == "Ann, Cyd and 1 other liked your comment."
    fourth = drafts.fold_like(again, like("u4", "Dee", 4, "e5").notification, ("u4", "Dee"))
    assert fourth.body == "Dee, Ann and 2 others liked your comment."


def test_a_notification_survives_its_json_round_trip() -> None:
    note = like("u1", "Änne", 1, "e1").notification
    assert domain.Notification.from_json(note.to_json()) == note
    plain = draft(order_events_pb2.OrderPaid(order_id="o", user_id="u")).notification
    assert "likers" not in plain.to_json()
    assert domain.Notification.from_json(plain.to_json()) == plain


# --- paging and positions --------------------------------------------------------------------------


def test_page_tokens_round_trip_and_are_bound_to_their_listing() -> None:
    scope, unread = feed.feed_scope(unread_only=False), feed.feed_scope(unread_only=True)
    token = feed.page_token(42, scope)
    assert feed.page_position(token, scope) == 42
    assert feed.page_position("", scope) is None
    for bad, listing in ((token, unread), ("garbage!", scope), (encode_page_token({"p": 0}, scope), scope)):
        with pytest.raises(InvalidArgumentError) as raised:
            feed.page_position(bad, listing)
        assert raised.value.violations[0].field == "page.page_token"


def test_page_sizes() -> None:
    assert [page_size(n) for n in (0, 1, 20, 100, 1000)] == [20, 1, 20, 100, 100]
    with pytest.raises(InvalidArgumentError):
        page_size(-1)


def test_stream_positions() -> None:
    assert feed.stream_position("") is None
    assert feed.stream_position(" 17 ") == 17
    for bad in ("abc", "-1", "1.5", "9" * 19):
        with pytest.raises(InvalidArgumentError):
            feed.stream_position(bad)


def test_announcement_validation() -> None:
    assert feed.validate_announcement(" Hi ", " there ", {"url": "/x"}) == ("Hi", "there", {"url": "/x"})
    with pytest.raises(InvalidArgumentError) as raised:
        feed.validate_announcement("", "x" * 5001, {str(n): "v" for n in range(21)})
    assert [v.field for v in raised.value.violations] == ["title", "body", "data"]


# --- webhooks ---------------------------------------------------------------------------------------


DEVELOPMENT = webhooks.WebhookPolicy(https_only=False)
PRODUCTION = webhooks.WebhookPolicy()
LOOPBACK = webhooks.WebhookPolicy(
    https_only=False, ports=webhooks.parse_ports("80,443,1024-65535"),
    allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),),
)  # fmt: skip


def test_webhook_urls_in_development_may_be_http_but_the_address_and_port_checks_stay() -> None:
    assert webhooks.validate_webhook_url("http://hooks.example.com/x", DEVELOPMENT).port == 80
    assert webhooks.validate_webhook_url("https://hooks.example.com/x", DEVELOPMENT).port == 443
    for bad in ("ftp://example.com/", "example.com/hook", "https://", "https://u:p@example.com/",
                "https://example.com/#frag", "https://exa mple.com/", "https://example.com:99999/"):  # fmt: skip
        with pytest.raises(InvalidArgumentError) as raised:
            webhooks.validate_webhook_url(bad, DEVELOPMENT)
        assert raised.value.violations[0].field == "url", bad
    with pytest.raises(InvalidArgumentError) as local:
        webhooks.validate_webhook_url("http://127.0.0.1:9000/hook", DEVELOPMENT)
    assert local.value.violations[0].description == "port 9000 is not allowed for webhooks (allowed: 80, 443)"
    with pytest.raises(InvalidArgumentError) as local:
        webhooks.validate_webhook_url("http://127.0.0.1/hook", DEVELOPMENT)
    assert local.value.reason == webhooks.WEBHOOK_ADDRESS_FORBIDDEN


def test_an_explicit_allowance_lets_loopback_through_and_nothing_else() -> None:
    target = webhooks.validate_webhook_url("http://127.0.0.1:9000/hook", LOOPBACK)
    assert (target.host, target.port) == ("127.0.0.1", 9000)
    for host in ("10.1.2.3", "169.254.169.254", "[::1]", "192.168.0.10"):
        with pytest.raises(InvalidArgumentError) as raised:
            webhooks.validate_webhook_url(f"http://{host}:9000/hook", LOOPBACK)
        assert raised.value.reason == webhooks.WEBHOOK_ADDRESS_FORBIDDEN, host
    with pytest.raises(InvalidArgumentError, match="webhook URL is invalid"):
        webhooks.validate_webhook_url("http://127.0.0.1:22/hook", LOOPBACK)
    assert webhooks.parse_ports("80, 443,8000-8999") == ((80, 80), (443, 443), (8000, 8999))
    for bad in ("", "http", "0", "443-80", "70000"):
        with pytest.raises(ValueError):
            webhooks.parse_ports(bad)


def test_webhook_urls_outside_development_must_be_public_https() -> None:
    assert webhooks.validate_webhook_url("https://93.184.215.14/hook", PRODUCTION).host == "93.184.215.14"
    with pytest.raises(InvalidArgumentError) as raised:
        webhooks.validate_webhook_url("http://hooks.example.com/", PRODUCTION)
    assert raised.value.reason == VALIDATION_FAILED
    for host in ("127.0.0.1", "10.1.2.3", "192.168.0.10", "172.16.5.4", "169.254.169.254", "[::1]", "[fe80::1]",
                 "[fd00::1]", "[::ffff:127.0.0.1]", "0.0.0.0"):  # fmt: skip
        with pytest.raises(InvalidArgumentError) as raised:
            webhooks.validate_webhook_url(f"https://{host}/hook", PRODUCTION)
        assert raised.value.reason == webhooks.WEBHOOK_ADDRESS_FORBIDDEN, host


def test_which_addresses_are_forbidden() -> None:
    forbidden = ["127.0.0.1", "10.0.0.1", "100.64.0.1", "169.254.0.1", "224.0.0.1", "::1", "fe80::1", "fc00::1",
                 "::ffff:10.0.0.1", "::"]  # fmt: skip
    public = ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "::ffff:1.1.1.1"]
    assert all(webhooks.forbidden_address(ipaddress.ip_address(a)) for a in forbidden)
    assert not any(webhooks.forbidden_address(ipaddress.ip_address(a)) for a in public)


async def test_names_resolving_to_local_addresses_are_refused_in_every_mode() -> None:
    # Resolved by the system resolver (no network needed): the address, not the spelling, counts.
    for policy in (PRODUCTION, DEVELOPMENT):
        for url in ("https://127.1/hook", "https://2130706433/hook", "https://0x7f000001/hook",
                    "https://localhost/hook", "https://LOCALHOST/hook"):  # fmt: skip
            with pytest.raises(InvalidArgumentError) as raised:
                await check_target(url, policy)
            assert raised.value.reason == webhooks.WEBHOOK_ADDRESS_FORBIDDEN, url
        with pytest.raises(InvalidArgumentError, match="does not resolve"):
            await check_target("https://no-such-host.invalid/hook", policy)
    checked = await check_target("http://localhost:9000/hook", LOOPBACK)
    assert str(checked.address) == "127.0.0.1"
    pinned, host, extensions = checked.request()  # the checked address, the original name
    assert str(pinned) == "http://127.0.0.1:9000/hook"
    assert (host, extensions) == ("localhost:9000", {"sni_hostname": "localhost"})


def test_signatures_are_hmac_sha256_over_timestamp_and_body() -> None:
    body = b'{"id":"n1"}'
    signature = webhooks.sign("whsec_test", 1700000000, body)
    expected = hmac.new(b"whsec_test", b'1700000000.{"id":"n1"}', hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    assert webhooks.verify_signature("whsec_test", "1700000000", body, signature, now=1700000100)
    assert not webhooks.verify_signature("whsec_test", "1700000000", body + b" ", signature, now=1700000100)
    assert not webhooks.verify_signature("other", "1700000000", body, signature, now=1700000100)
    assert not webhooks.verify_signature("whsec_test", "1700000000", body, signature, now=1700001000)  # stale


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [webhooks.retry_delay(n, 5, 60) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert webhooks.wants([], domain.ORDER_PAID) and webhooks.wants([domain.ORDER_PAID], domain.ORDER_PAID)
    assert not webhooks.wants([domain.ORDER_SHIPPED], domain.ORDER_PAID)
    assert webhooks.delivery_id("n", 1, "w") == webhooks.delivery_id("n", 1, "w") != webhooks.delivery_id("n", 2, "w")
