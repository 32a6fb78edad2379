"""Each service reaches its stores as its own user, in the local cluster too.

Against the real servers: the environment devstack hands each running process (read back from
``/proc/<pid>/environ``) names no superuser, root key or password-less URL; and each store
refuses what a service's user may not do: a PostgreSQL role connecting to another service's
database, a connection without a password, Redis without a user, one service's Redis user on
another's keys, product_svc's S3 key on another bucket, a wrong document-store password.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import boto3
import psycopg
import pymongo
import pytest
import redis
from botocore.exceptions import ClientError
from pymongo.errors import OperationFailure
from sqlalchemy.engine import make_url

from devstack.cluster import Cluster
from devstack.docstore import FerretDB
from devstack.servers import S3, Postgres, Redis
from devstack.servers.s3 import S3_ACCESS_KEY, S3_SECRET_KEY

Mongo = pymongo.MongoClient[dict[str, Any]]
STORE_USERS = ("user_svc", "product_svc", "order_svc", "comment_svc", "notify_svc")


@pytest.fixture(scope="module")
def stack(services: Callable[..., Cluster]) -> Cluster:
    return services(*STORE_USERS, "edge")


def running_env(cluster: Cluster, name: str) -> dict[str, str]:
    """The environment of the running process itself."""
    pid = cluster.services[name].pid
    assert pid is not None
    with open(f"/proc/{pid}/environ", "rb") as environ:
        pairs = [item.split(b"=", 1) for item in environ.read().split(b"\0") if b"=" in item]
    return {key.decode(): value.decode() for key, value in pairs}


def superusers(postgres: Postgres) -> set[str]:
    with psycopg.connect(postgres.dsn("postgres")) as conn:
        return {row[0] for row in conn.execute("select rolname from pg_roles where rolsuper")}


def tcp_dsn(postgres: Postgres, user: str, password: str | None, database: str) -> str:
    auth = f"{user}:{password}" if password is not None else user
    return f"postgresql://{auth}@127.0.0.1:{postgres.ports['port']}/{database}"


def test_every_connection_string_is_the_services_own_user_with_a_password(stack: Cluster, postgres: Postgres) -> None:
    admins = superusers(postgres)
    seen: dict[str, set[str]] = {}
    for name in stack.services:
        env = running_env(stack, name)
        assert env.get("SHOP_S3_SECRET_KEY") != S3_SECRET_KEY, f"{name} holds MinIO's root key"
        assert env.get("SHOP_S3_ACCESS_KEY") != S3_ACCESS_KEY, f"{name} holds MinIO's root user"
        if "SHOP_DATABASE_URL" in env:
            url = make_url(env["SHOP_DATABASE_URL"])
            assert url.username == url.database, f"{name}: {url.username} is not its database's own role"
            assert url.username not in admins and url.password, f"{name}: {url.username}, password set: {url.password}"
            seen.setdefault("postgres", set()).add(str(url.username))
        for variable, store in (("SHOP_REDIS_URL", "redis"), ("SHOP_MONGO_URL", "mongo")):
            if variable in env:
                parts = urlsplit(env[variable])
                assert parts.username == name and parts.password, f"{name} {variable}: user {parts.username}"
                seen.setdefault(store, set()).add(parts.username)
        if "SHOP_S3_ACCESS_KEY" in env:
            seen.setdefault("s3", set()).add(env["SHOP_S3_ACCESS_KEY"])
    assert seen == {
        "postgres": {"shop_user", "shop_order", "shop_comment"},
        "redis": {"user_svc", "order_svc", "comment_svc", "notify_svc"},
        "mongo": {"product_svc"},
        "s3": {"product_svc"},
    }


def test_migrations_ran_as_the_services_role(stack: Cluster, postgres: Postgres) -> None:
    for database in ("shop_user", "shop_order", "shop_comment"):
        with psycopg.connect(postgres.dsn(database)) as conn:
            owner = conn.execute("select tableowner from pg_tables where tablename = 'alembic_version'").fetchone()
            database_owner = conn.execute(
                "select pg_get_userbyid(datdba) from pg_database where datname = current_database()"
            ).fetchone()
        assert owner == database_owner == (database,)


def test_a_cluster_older_than_the_roles_hands_its_tables_to_them(postgres: Postgres) -> None:
    """Tables a superuser made (migrations before the service roles) become the role's at start."""
    table = f"legacy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.dsn("shop_comment"), autocommit=True) as conn:
        conn.execute(f"create table {table} (id serial primary key)")
    postgres.after_ready()  # what every start runs
    with psycopg.connect(postgres.dsn("shop_comment"), autocommit=True) as conn:
        owner = conn.execute("select tableowner from pg_tables where tablename = %s", (table,)).fetchone()
        conn.execute(f"drop table {table}")
    assert owner == ("shop_comment",)


def test_a_services_role_cannot_connect_to_another_services_database(stack: Cluster, postgres: Postgres) -> None:
    order = make_url(stack.service_env_for("order_svc")["SHOP_DATABASE_URL"])
    with psycopg.connect(tcp_dsn(postgres, "shop_order", order.password, "shop_order")) as conn:
        assert conn.execute("select current_user").fetchone() == ("shop_order",)
    for database in ("shop_user", "shop_comment", "postgres"):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(tcp_dsn(postgres, "shop_order", order.password, database))


def test_postgres_refuses_a_connection_without_password(stack: Cluster, postgres: Postgres) -> None:
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(tcp_dsn(postgres, "shop_order", None, "shop_order"))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(tcp_dsn(postgres, "shop_order", "wrong", "shop_order"))
    # The superuser is not reachable over TCP at all, with or without a password.
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects connection"):
        psycopg.connect(tcp_dsn(postgres, "postgres", None, "postgres"))


def test_redis_refuses_the_default_user_and_keeps_each_service_to_its_keys(stack: Cluster, redis_server: Redis) -> None:
    anonymous = redis.Redis(port=redis_server.ports["port"], socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.get("cart:u:someone:q")
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=redis_server.ports["port"], username="default", password="", socket_timeout=5).ping()

    def client(service: str) -> redis.Redis:
        return redis.Redis.from_url(stack.service_env_for(service)["SHOP_REDIS_URL"], socket_timeout=5)

    order, notify, user = client("order_svc"), client("notify_svc"), client("user_svc")
    key = f"cart:u:{uuid.uuid4()}:q"
    order.hset(key, "product", 1)
    assert order.hget(key, "product") == b"1"
    with pytest.raises(redis.exceptions.NoPermissionError):
        notify.hget(key, "product")
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.hget(key, "product")
    with pytest.raises(redis.exceptions.NoPermissionError):
        order.get("notify:seq")
    with pytest.raises(redis.exceptions.NoPermissionError):
        order.publish("notify:live:announcements", "forged")
    # No service lists or changes the whole store.
    with pytest.raises(redis.exceptions.NoPermissionError):
        order.keys("*")
    with pytest.raises(redis.exceptions.NoPermissionError):
        notify.config_get("maxmemory")
    order.delete(key)


def s3_client(s3: S3, access_key: str, secret_key: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
    )


def test_product_svcs_s3_key_reaches_its_bucket_only(stack: Cluster, s3: S3) -> None:
    env = stack.service_env_for("product_svc")
    product = s3_client(s3, env["SHOP_S3_ACCESS_KEY"], env["SHOP_S3_SECRET_KEY"])
    root = s3_client(s3, S3_ACCESS_KEY, S3_SECRET_KEY)
    key = f"probe/{uuid.uuid4()}.txt"
    product.put_object(Bucket=env["SHOP_S3_BUCKET"], Key=key, Body=b"mine")
    assert product.get_object(Bucket=env["SHOP_S3_BUCKET"], Key=key)["Body"].read() == b"mine"
    other = f"other-{uuid.uuid4().hex[:12]}"
    root.create_bucket(Bucket=other)
    root.put_object(Bucket=other, Key="theirs.txt", Body=b"theirs")
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("put_object", {"Bucket": other, "Key": "x.txt", "Body": b"x"}),
        ("get_object", {"Bucket": other, "Key": "theirs.txt"}),
        ("create_bucket", {"Bucket": f"new-{uuid.uuid4().hex[:12]}"}),
    ]
    for method, arguments in attempts:
        with pytest.raises(ClientError) as refused:
            getattr(product, method)(**arguments)
        assert refused.value.response["Error"]["Code"] == "AccessDenied", method
    assert [bucket["Name"] for bucket in product.list_buckets()["Buckets"]] == [env["SHOP_S3_BUCKET"]]
    product.delete_object(Bucket=env["SHOP_S3_BUCKET"], Key=key)


def test_document_store_signs_in_product_svc_and_refuses_wrong_or_no_password(stack: Cluster, mongo: FerretDB) -> None:
    url = stack.service_env_for("product_svc")["SHOP_MONGO_URL"]
    probe: dict[str, Any] = {"_id": str(uuid.uuid4())}
    with Mongo(url, serverSelectionTimeoutMS=5000) as client:
        client["credentials_probe"]["docs"].insert_one(probe)
        assert client["credentials_probe"]["docs"].find_one(probe) == probe
        assert client.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"][0]["user"] == "product_svc"
    wrong = mongo.user_url("product_svc", password="not-the-password")
    with Mongo(wrong, serverSelectionTimeoutMS=5000) as client:
        with pytest.raises(OperationFailure) as failed:
            client["credentials_probe"]["docs"].find_one(probe)
        assert failed.value.code == 18  # AuthenticationFailed
    anonymous = f"mongodb://127.0.0.1:{mongo.ports['port']}/"
    with Mongo(anonymous, serverSelectionTimeoutMS=5000) as client:
        with pytest.raises(OperationFailure) as failed:
            client["credentials_probe"]["docs"].find_one(probe)
        assert failed.value.code == 13  # Unauthorized: "requires authentication"
