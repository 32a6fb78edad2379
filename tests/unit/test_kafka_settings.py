"""The Kafka client settings: who a process is on Kafka, and what production insists on."""

from __future__ import annotations

import pytest

from common.clients import kafka_config
from common.settings import KafkaSettings, dev_kafka_password
from notify_svc.settings import NotifySettings


def test_a_process_logs_in_as_itself_by_default_in_development() -> None:
    config = kafka_config(NotifySettings())
    assert config["security.protocol"] == "SASL_PLAINTEXT"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "notify_svc"
    assert config["sasl.password"] == dev_kafka_password("notify_svc")


def test_the_librdkafka_options_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_KAFKA_BOOTSTRAP", "b-1.kafka.example:9096")
    monkeypatch.setenv("SHOP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SHOP_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("SHOP_KAFKA_SASL_USERNAME", "shop-notify")
    monkeypatch.setenv("SHOP_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("SHOP_KAFKA_SSL_CA_LOCATION", "/etc/kafka/ca.pem")
    settings = NotifySettings()
    assert "s3cret" not in repr(settings)
    assert kafka_config(settings) == {
        "bootstrap.servers": "b-1.kafka.example:9096",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "shop-notify",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/kafka/ca.pem",
    }


def test_production_needs_the_password_with_sasl_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_ENV", "production")
    with pytest.raises(ValueError, match="SHOP_KAFKA_SASL_PASSWORD"):
        KafkaSettings()
    monkeypatch.setenv("SHOP_KAFKA_SECURITY_PROTOCOL", "SSL")
    assert "sasl.password" not in kafka_config(KafkaSettings())


def test_production_refuses_a_client_without_a_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_ENV", "production")
    monkeypatch.setenv("SHOP_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    with pytest.raises(ValueError, match="anyone on the network"):
        KafkaSettings()


def test_the_invalid_protocol_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ValueError, match="kafka_security_protocol"):
        KafkaSettings()
