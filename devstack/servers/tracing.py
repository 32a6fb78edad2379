"""Tracing: Jaeger v2, in memory (devstack/zipkin.py serves the trace UI)."""

from __future__ import annotations

import json
import urllib.request

from common.settings import dev_kafka_password
from devstack.paths import REPO
from devstack.process import port_open
from devstack.servers.base import binary
from devstack.servers.kafka import OnKafka


class Jaeger(OnKafka):
    name = "jaeger"
    # Each span also goes to Kafka in Zipkin's format, for the trace UI (devstack/zipkin.py).

    def port_names(self) -> tuple[str, ...]:
        return ("otlp_grpc", "otlp_http", "query_http", "query_grpc", "health")

    def argv(self) -> list[str]:
        return [binary("jaeger"), "--config", str(REPO / "devstack" / "jaeger.yaml")]

    def process_env(self) -> dict[str, str]:
        return {
            "JAEGER_LISTEN_HOST": "127.0.0.1",
            "JAEGER_OTLP_GRPC_PORT": str(self.ports["otlp_grpc"]),
            "JAEGER_OTLP_HTTP_PORT": str(self.ports["otlp_http"]),
            "JAEGER_QUERY_HTTP_PORT": str(self.ports["query_http"]),
            "JAEGER_QUERY_GRPC_PORT": str(self.ports["query_grpc"]),
            "JAEGER_HEALTH_PORT": str(self.ports["health"]),
            "JAEGER_LOG_LEVEL": "warn",
            "JAEGER_KAFKA_BROKERS": self.kafka.bootstrap,
            "JAEGER_KAFKA_USERNAME": "jaeger",
            "JAEGER_KAFKA_PASSWORD": dev_kafka_password("jaeger"),
        }

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.query_url}/api/services", timeout=2) as response:
            json.load(response)
        return port_open(self.ports["otlp_grpc"])

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['query_http']}"

    def env(self) -> dict[str, str]:
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.ports['otlp_grpc']}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
