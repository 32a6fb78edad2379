"""Zipkin's server with its built-in UI (Lens): the local trace UI.

Jaeger v2 built with ``go install`` has no UI assets, and no registry serves them;
Zipkin's server jar (Maven Central, devstack/provision/zipkin.sh) brings its own.
It reads the same spans: Jaeger exports each span it receives to the Kafka topic
``zipkin`` in Zipkin's JSON format too (devstack/jaeger.yaml), and this server's
Kafka collector takes them from there into its in-memory store.  The UI is at
``http://127.0.0.1:9411/zipkin/`` under ``make up``.
"""

from __future__ import annotations

import json
import urllib.request

from devstack.paths import CACHE
from devstack.servers.kafka import ZIPKIN_TOPIC, OnKafka

ZIPKIN_VERSION = "3.6.1"
TOPIC = ZIPKIN_TOPIC
USER = "zipkin"


class Zipkin(OnKafka):
    name = "zipkin"
    ready_timeout = 90.0

    def argv(self) -> list[str]:
        jar = CACHE / "zipkin" / f"zipkin-server-{ZIPKIN_VERSION}-exec.jar"
        if not jar.exists():
            raise FileNotFoundError(f"Zipkin {ZIPKIN_VERSION} is not provisioned: run `make deps`")
        # A small heap and the serial collector, as for Kafka: the UI of one developer's traces.
        port = self.ports["port"]
        return [
            "java", "-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            # loopback only, like every server of the local cluster
            "-Darmeria.ports[0].ip=127.0.0.1", f"-Darmeria.ports[0].port={port}",
            "-Darmeria.ports[0].protocols[0]=http",
            "-jar", str(jar),
        ]  # fmt: skip

    def process_env(self) -> dict[str, str]:
        return {
            "QUERY_PORT": str(self.ports["port"]),
            "STORAGE_TYPE": "mem",
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "KAFKA_TOPIC": TOPIC,
            "KAFKA_GROUP_ID": "zipkin",
            # Its Kafka user: the collector's consumer settings (zipkin.collector.kafka.overrides).
            "SPRING_APPLICATION_JSON": json.dumps({"zipkin.collector.kafka.overrides": self._kafka_login()}),
        }

    def _kafka_login(self) -> dict[str, str]:
        settings = self.kafka.client_settings(USER)
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        return {
            "security.protocol": settings.kafka_security_protocol,
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required"
            f' username="{USER}" password="{password}";',
        }

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
            health = json.load(response)
        return bool(health.get("status") == "UP")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['port']}"
