"""A process that cannot start because of its settings says which setting is wrong
and why, and never prints a value that may be a secret (passwords in URLs, keys)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devstack.cluster import Cluster
from devstack.paths import REPO

# Distinctive secrets: none of them may appear in what a failing start prints.
SECRETS = {
    "SHOP_DATABASE_URL": "postgresql+psycopg://shop:pg-Secret-1@db.internal:5432/shop",
    "SHOP_REDIS_URL": "redis://default:redis-Secret-2@redis.internal:6379/0",
    "SHOP_MONGO_URL": "mongodb://shop:mongo-Secret-3@mongo.internal:27017/",
    "SHOP_S3_SECRET_KEY": "s3-Secret-4",
    "SHOP_STRIPE_SECRET_KEY": "sk_live_stripe-Secret-5",
    "SHOP_KAFKA_BOOTSTRAP": "kafka.internal:9092",
}
SECRET_VALUES = ["pg-Secret-1", "redis-Secret-2", "mongo-Secret-3", "s3-Secret-4", "stripe-Secret-5"]


def start(process: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("SHOP_")}
    return subprocess.run(
        [sys.executable, "-m", process],
        env={**clean, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "gen")]), **SECRETS, **env},
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("process", "env", "named"),
    [
        # A check across settings (its error used to carry every setting given, URLs included).
        ("user_svc", {"SHOP_ENV": "production"}, "SHOP_JWT_PRIVATE_KEY_FILE must be set"),
        (
            "order_svc",
            {"SHOP_ENV": "production", "SHOP_PAYMENT_PROCESSOR": "stripe"},
            "SHOP_STRIPE_WEBHOOK_SECRET must be set",
        ),
        ("product_svc", {"SHOP_ENV": "production", "SHOP_S3_SECRET_KEY": ""}, "SHOP_S3_SECRET_KEY must be set"),
        # One wrong setting next to the secrets.
        ("comment_svc", {"SHOP_DB_POOL_SIZE": "zero"}, "SHOP_DB_POOL_SIZE: Input should be a valid integer"),
        ("notify_svc", {"SHOP_ENV": "staging"}, "SHOP_ENV: Input should be"),
        ("edge", {"SHOP_TRUSTED_PROXIES": '["10.0.0.1/8"]'}, "SHOP_TRUSTED_PROXIES[0]: value is not a valid"),
        ("edge", {"SHOP_CORS_ORIGINS": "not json"}, "SHOP_CORS_ORIGINS: is not valid JSON"),
        ("web", {"SHOP_METRICS_PORT": "http://admin:web-Secret-6@x"}, "SHOP_METRICS_PORT: Input should be"),
    ],
)
def test_a_bad_setting_is_named_and_no_secret_is_printed(process: str, env: dict[str, str], named: str) -> None:
    ran = start(process, **env)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 2, output
    assert f"{process}: invalid configuration" in output
    assert named in output
    for secret in [*SECRET_VALUES, "web-Secret-6"]:
        assert secret not in output
    assert "input_value" not in output


def test_an_unreachable_store_is_named_without_its_password(cluster: Cluster) -> None:
    """product_svc (its TLS material in place) names the catalog database it cannot reach, its password masked."""
    mongo_url = "mongodb://shop:mongo-Secret-3@127.0.0.1:9/?serverSelectionTimeoutMS=300"
    ran = start("product_svc", SHOP_MONGO_URL=mongo_url, **cluster.tls_env("product_svc"))
    output = ran.stdout + ran.stderr
    assert ran.returncode == 1, output
    assert "mongodb://shop:***@127.0.0.1:9/" in output
    assert "mongo-Secret-3" not in output
