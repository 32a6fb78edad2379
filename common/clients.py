"""Clients for the data stores, built the same way by every process.

Blocking clients (boto3, confluent-kafka) are wrapped so callers on the event
loop await them without blocking it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from common.settings import KafkaSettings, S3Settings
from common.telemetry import instrument_engine

# Each client library is imported where its client is built: a process loads
# only the ones it uses (boto3 alone is tens of megabytes of resident memory).
if TYPE_CHECKING:
    import confluent_kafka
    import redis.asyncio as aioredis
    from confluent_kafka.admin import AdminClient
    from pymongo import AsyncMongoClient
    from sqlalchemy.ext.asyncio import AsyncEngine


def pg_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async SQLAlchemy engine on psycopg 3 (``postgresql+psycopg://…``), traced when tracing is on."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    instrument_engine(engine)
    return engine


def mongo_client(url: str) -> AsyncMongoClient[Mapping[str, Any]]:
    from pymongo import AsyncMongoClient

    return AsyncMongoClient(url, tz_aware=True, serverSelectionTimeoutMS=5000)


def redis_client(url: str) -> aioredis.Redis:
    """A client that reconnects by itself: a command that meets a dead pooled
    connection (Redis restarted) is sent again on a new one, a few times with a short
    backoff, before the caller sees the error.  A command whose reply was lost may
    so run twice: the services' writes are idempotent (keyed by event, request or
    cart), and the few counters (a rate-limit attempt, a webhook's failure count) can
    only count one attempt twice."""
    import redis.asyncio as aioredis
    import redis.exceptions
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


def s3_client(settings: S3Settings) -> Any:
    """A boto3 S3 client (blocking: call it through ``asyncio.to_thread``)."""
    import boto3
    from botocore.config import Config as BotoConfig

    secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=secret,
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


Headers = Sequence[tuple[str, bytes]]


def kafka_config(settings: KafkaSettings) -> dict[str, Any]:
    """librdkafka's connection settings: where the brokers are and who this process is."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_user
        config["sasl.password"] = password.get_secret_value() if password else ""
    if settings.kafka_ssl_ca_location:
        config["ssl.ca.location"] = settings.kafka_ssl_ca_location
    return config


def kafka_admin(settings: KafkaSettings, **config: Any) -> AdminClient:
    from confluent_kafka.admin import AdminClient

    return AdminClient({**kafka_config(settings), **config})


class KafkaProducer:
    """confluent-kafka producer with idempotence on and awaitable delivery.

    A background thread polls for delivery reports, so ``send`` never blocks the
    event loop and resolves once the broker has acknowledged the message.
    """

    def __init__(self, settings: KafkaSettings, **config: Any) -> None:
        import confluent_kafka

        self._kafka_exception = confluent_kafka.KafkaException
        self._producer = confluent_kafka.Producer(
            {
                **kafka_config(settings),
                "enable.idempotence": True,
                "acks": "all",
                # No waiting for more messages: the outbox relay hands a whole batch
                # over before it awaits the acknowledgements, so waiting only delays it.
                "linger.ms": 0,
                **config,
            }
        )
        self._closed = False
        self._poller = asyncio.get_running_loop().run_in_executor(None, self._poll)

    def _poll(self) -> None:
        while not self._closed:
            self._producer.poll(0.1)

    def produce(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
    ) -> asyncio.Future[Any]:
        """Hand a message to the producer now (calls keep their order); the
        future resolves when the broker acknowledged it."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[Any] = loop.create_future()

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                loop.call_soon_threadsafe(_settle, delivered, self._kafka_exception(err), None)
            else:
                loop.call_soon_threadsafe(_settle, delivered, None, msg)

        self._producer.produce(topic, value=value, key=key, headers=list(headers), on_delivery=on_delivery)
        return delivered

    async def send(self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()) -> Any:
        return await self.produce(topic, value, key=key, headers=headers)

    async def close(self, flush_seconds: float = 10.0) -> None:
        await asyncio.to_thread(self._producer.flush, flush_seconds)
        self._closed = True
        await self._poller


def _settle(future: asyncio.Future[Any], error: BaseException | None, result: Any) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def kafka_consumer(settings: KafkaSettings, group_id: str, **config: Any) -> confluent_kafka.Consumer:
    """A consumer that commits offsets only when told to (after the effect is stored)."""
    import confluent_kafka

    return confluent_kafka.Consumer(
        {
            **kafka_config(settings),
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **config,
        }
    )
