"""Kafka with users, against the real broker: only order_svc's user writes shop.orders.v1.

The broker (devstack/servers/kafka.py Kafka) takes SASL/SCRAM-SHA-512 logins and denies what no
ACL allows (common/kafka_acl.py).  Each attempt goes through the shop's own producer
(common/clients.py KafkaProducer); whether an event reached the topic is read back as the
admin.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import confluent_kafka
import pytest

from common import events
from common.clients import KafkaProducer, kafka_consumer
from common.settings import KafkaSettings
from devstack.servers import Kafka
from tests.kafka_helpers import consume, kafka_settings

DENIED = confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
AUTHENTICATION = confluent_kafka.KafkaError._AUTHENTICATION


@dataclass
class Attempt:
    key: bytes
    delivery: confluent_kafka.KafkaError | None = None  # None: the broker took it
    client_errors: set[int] = field(default_factory=set)  # what the client reported besides


async def produce(settings: KafkaSettings, topic: str = events.ORDERS_TOPIC) -> Attempt:
    attempt = Attempt(key=f"acl-{uuid.uuid4().hex}".encode())

    def on_error(error: confluent_kafka.KafkaError) -> None:
        attempt.client_errors.add(error.code())

    producer = KafkaProducer(settings, **{"message.timeout.ms": 5000, "error_cb": on_error})
    try:
        await producer.send(topic, b"forged?", key=attempt.key)
    except confluent_kafka.KafkaException as exc:
        attempt.delivery = exc.args[0]
    finally:
        await producer.close(flush_seconds=1)
    return attempt


async def on_topic(kafka: Kafka, keys: set[bytes], topic: str = events.ORDERS_TOPIC) -> set[bytes]:
    """Which of ``keys`` are on the topic (read from the beginning as the admin)."""
    return {m.key() for m in await consume(kafka, topic, 10**6, timeout=4)} & keys


def _code(attempt: Attempt) -> int | None:
    return attempt.delivery.code() if attempt.delivery is not None else None


async def test_only_order_svc_writes_the_orders_topic(kafka: Kafka) -> None:
    allowed = await produce(kafka_settings(kafka, "order_svc"))
    assert allowed.delivery is None

    comment_svc = await produce(kafka_settings(kafka, "comment_svc"))
    notify_svc = await produce(kafka_settings(kafka, "notify_svc"))
    assert _code(comment_svc) == DENIED
    assert _code(notify_svc) == DENIED

    # No credentials at all: a plaintext client is not even let in.
    anonymous = await produce(KafkaSettings(kafka_bootstrap=kafka.bootstrap, kafka_security_protocol="PLAINTEXT"))
    assert anonymous.delivery is not None
    # order_svc's name with a wrong password: the login fails.
    wrong_password = await produce(kafka_settings(kafka, "order_svc", password="not-the-password"))
    assert wrong_password.delivery is not None
    assert AUTHENTICATION in wrong_password.client_errors

    keys = {a.key for a in (allowed, comment_svc, notify_svc, anonymous, wrong_password)}
    assert await on_topic(kafka, keys) == {allowed.key}


@pytest.mark.parametrize(
    ("user", "topic", "allowed"),
    [
        ("comment_svc", events.COMMENTS_TOPIC, True),
        ("order_svc", events.COMMENTS_TOPIC, False),
        ("notify_svc", events.PLATFORM_TOPIC, True),
        ("notify_svc", events.ORDERS_TOPIC + ".parked", True),
        ("order_svc", events.PLATFORM_TOPIC, False),
        # No service creates topics: writing to a new one is refused, not a new topic.
        ("order_svc", f"acl.new.{uuid.uuid4().hex[:8]}", False),
    ],
)
async def test_each_service_writes_only_its_topics(kafka: Kafka, user: str, topic: str, allowed: bool) -> None:
    attempt = await produce(kafka_settings(kafka, user), topic)
    assert _code(attempt) == (None if allowed else DENIED)


def _first_error(settings: KafkaSettings, group: str, topic: str) -> int | None:
    """Subscribe and poll until a message or an error: the error's code, or None."""
    consumer = kafka_consumer(settings, group_id=group)
    consumer.subscribe([topic])
    try:
        for _ in range(40):
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                return int(error.code())
            return None
        return None
    finally:
        consumer.close()


async def test_consumers_need_their_group_and_topics(kafka: Kafka) -> None:
    """notify_svc reads in its own group only (that it does read is what the notification tests
    show, through the real notify_svc); a user without the topics' ACLs reads in no group.
    (Not joining the group notify_svc itself: a running notify_svc would rebalance.)"""
    comments = events.COMMENTS_TOPIC
    in_other_group = await asyncio.to_thread(_first_error, kafka_settings(kafka, "notify_svc"), "other", comments)
    assert in_other_group == confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED
    other_user = await asyncio.to_thread(_first_error, kafka_settings(kafka, "order_svc"), "notify_svc", comments)
    assert other_user in (DENIED, confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED)
