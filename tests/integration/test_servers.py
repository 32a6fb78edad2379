"""Each real server of the local cluster works through the project's own client code."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from pydantic import SecretStr
from pymongo.errors import DuplicateKeyError
from sqlalchemy import text

from common.clients import KafkaProducer, kafka_consumer, mongo_client, pg_engine, redis_client, s3_client
from common.settings import S3Settings
from devstack.docstore import FerretDB
from devstack.servers import S3, Jaeger, Kafka, Postgres, Redis
from tests.kafka_helpers import kafka_settings


async def test_postgres_through_sqlalchemy_async(postgres: Postgres) -> None:
    engine = pg_engine(postgres.url("shop_order"))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("create table if not exists probe (id serial primary key, note text not null)"))
            await conn.execute(text("insert into probe (note) values (:note)"), {"note": "hello"})
        async with engine.connect() as conn:
            notes = (await conn.execute(text("select note from probe"))).scalars().all()
            databases = (await conn.execute(text("select datname from pg_database"))).scalars().all()
    finally:
        await engine.dispose()
    assert notes == ["hello"]
    assert {"shop_user", "shop_order", "shop_comment"} <= set(databases)


async def test_mongo_wire_insert_find_index(mongo: FerretDB) -> None:
    client = mongo_client(mongo.url)
    try:
        products = client["probe"]["products"]
        await products.insert_many([{"sku": "a-1", "price": 1999}, {"sku": "b-2", "price": 500}])
        await products.create_index("sku", unique=True)
        found = await products.find({"price": {"$lt": 1000}}).to_list()
        indexes = [index["name"] async for index in await products.list_indexes()]
        with pytest.raises(DuplicateKeyError):
            await products.insert_one({"sku": "a-1", "price": 1})
    finally:
        await client.close()
    assert [doc["sku"] for doc in found] == ["b-2"]
    assert "sku_1" in indexes


async def test_kafka_round_trip_with_headers(kafka: Kafka) -> None:
    settings = kafka_settings(kafka)
    topic = f"probe.{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(settings)
    try:
        delivered = await producer.send(
            topic, b"payload", key=b"order-1", headers=[("event-id", b"e-1"), ("event-type", b"Probe")]
        )
    finally:
        await producer.close()
    assert delivered.topic() == topic

    consumer = kafka_consumer(settings, group_id=f"probe-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([topic])
    try:
        message = None
        deadline = time.monotonic() + 30
        while message is None and time.monotonic() < deadline:
            candidate = await asyncio.to_thread(consumer.poll, 1.0)
            if candidate is not None and candidate.error() is None:
                message = candidate
        assert message is not None, "no message came back from Kafka"
        consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()
    assert message.key() == b"order-1"
    assert message.value() == b"payload"
    assert dict(message.headers() or []) == {"event-id": b"e-1", "event-type": b"Probe"}


async def test_redis(redis_server: Redis) -> None:
    client = redis_client(redis_server.url())
    try:
        await client.set("probe", "1", ex=60)
        assert await client.incr("probe") == 2
        assert await client.ttl("probe") > 0
    finally:
        await client.aclose()


def test_s3_put_get_presigned(s3: S3) -> None:
    settings = S3Settings(
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.admin_env()["SHOP_S3_ACCESS_KEY"],
        s3_secret_key=SecretStr(s3.admin_env()["SHOP_S3_SECRET_KEY"]),
        s3_bucket="probe",
    )
    client = s3_client(settings)
    client.create_bucket(Bucket="probe")
    client.put_object(Bucket="probe", Key="hello.txt", Body=b"hello", ContentType="text/plain")
    assert client.get_object(Bucket="probe", Key="hello.txt")["Body"].read() == b"hello"
    url = client.generate_presigned_url("get_object", Params={"Bucket": "probe", "Key": "hello.txt"}, ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == b"hello"


def test_span_sent_by_otlp_comes_back_from_jaeger(jaeger: Jaeger) -> None:
    service = f"probe-{uuid.uuid4().hex[:6]}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{jaeger.ports['otlp_grpc']}", insecure=True)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("probe").start_as_current_span("probe-span") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()

    deadline = time.monotonic() + 20
    operations: list[str] = []
    while time.monotonic() < deadline and "probe-span" not in operations:
        try:
            with urllib.request.urlopen(f"{jaeger.query_url}/api/traces/{trace_id}", timeout=5) as response:
                data = json.load(response).get("data") or []
        except urllib.error.HTTPError as error:  # 404 until the trace is stored
            assert error.code == 404
            data = []
        operations = [span["operationName"] for trace in data for span in trace["spans"]]
        time.sleep(0.2)
    assert operations == ["probe-span"]
