"""Kafka (KRaft, single node) with SASL users and ACLs, and the servers that run on top of it."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from pydantic import SecretStr

from common.settings import KAFKA_ADMIN_USER, KafkaSettings, dev_kafka_password
from devstack.paths import CACHE, REPO
from devstack.process import port_open, tail
from devstack.servers.base import Server, run_logged

KAFKA_VERSION = "4.3.1"
# The broker's own user: the inter-broker (SCRAM) and controller (PLAIN) listeners.
KAFKA_BROKER_USER = "broker"
# The topic Jaeger writes spans to in Zipkin's format and Zipkin's server reads (devstack/zipkin.py).
ZIPKIN_TOPIC = "zipkin"
_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


class Kafka(Server):
    """Clients log in with SASL/SCRAM-SHA-512 over plaintext on loopback, one user per
    process (the password of each: common/settings.py dev_kafka_password); ACLs per topic
    and group (common/kafka_acl.py), deny by default.  The controller listener takes SASL/PLAIN
    (KRaft cannot use SCRAM there: the credentials live in the metadata it serves), with the
    broker as its only user.  The broker's and the admin's SCRAM credentials are written at
    ``kafka-storage format`` time; the services' users, the topics and the ACLs once it is up."""

    name = "kafka"
    ready_timeout = 90.0

    def port_names(self) -> tuple[str, ...]:
        return ("port", "controller")

    @property
    def libs(self) -> Path:
        libs = CACHE / "kafka" / KAFKA_VERSION / "libs"
        if not libs.is_dir():
            raise FileNotFoundError(f"Kafka {KAFKA_VERSION} is not provisioned: run `make deps`")
        return libs

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            # A small heap floor and the serial collector: ready in ~2 s at ~300 MB.
            "java",
            "-Xms64m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={REPO / 'devstack' / 'kafka' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data / 'logs'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def prepare(self) -> None:
        port, controller = self.ports["port"], self.ports["controller"]
        broker = dev_kafka_password(KAFKA_BROKER_USER)
        config = self.data / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
                    f"listeners=CLIENT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=CLIENT://127.0.0.1:{port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=CLIENT",
                    "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT",
                    "listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512",
                    "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                    f"listener.name.client.scram-sha-512.sasl.jaas.config={_SCRAM_MODULE} required"
                    f' username="{KAFKA_BROKER_USER}" password="{broker}";',
                    "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                    "sasl.mechanism.controller.protocol=PLAIN",
                    f"listener.name.controller.plain.sasl.jaas.config={_PLAIN_MODULE} required"
                    f' username="{KAFKA_BROKER_USER}" password="{broker}" user_{KAFKA_BROKER_USER}="{broker}";',
                    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                    "allow.everyone.if.no.acl.found=false",
                    f"super.users=User:{KAFKA_BROKER_USER};User:{KAFKA_ADMIN_USER}",
                    f"log.dirs={self.data / 'kraft'}",
                    "num.partitions=3",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=3",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    # Only a user allowed to create a topic (the admin) gets one by writing to it.
                    "auto.create.topics.enable=true",
                    "group.initial.rebalance.delay.ms=0",
                    "log.flush.interval.messages=9223372036854775807",
                    "",
                ]
            )
        )
        kraft = self.data / "kraft"
        marker = self.data / "scram-users"
        if (kraft / "meta.properties").exists():
            if marker.exists():
                return
            # Formatted before the broker had users: nobody could log in.  Local data only.
            with open(self.log, "a") as out:
                out.write(f"devstack: {kraft} predates Kafka's SASL users; formatting it again\n")
            shutil.rmtree(kraft)
        cluster_id = _kafka_cluster_id()
        scram = [
            f"--add-scram=SCRAM-SHA-512=[name={user},password={dev_kafka_password(user)}]"
            for user in (KAFKA_BROKER_USER, KAFKA_ADMIN_USER)
        ]
        fmt = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            f"--cluster-id={cluster_id}",
            "--config",
            str(config),
            *scram,
        )  # the "=" form: an id may start with "-"
        with open(self.log, "ab") as out:
            code = run_logged(fmt, out)
        if code != 0:
            raise RuntimeError(f"kafka storage format failed ({code}):\n{tail(self.log)}")
        marker.write_text(f"{KAFKA_BROKER_USER} {KAFKA_ADMIN_USER}\n")

    def argv(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.data / "server.properties"))

    def ready(self) -> bool:
        from common.clients import kafka_admin

        if not port_open(self.ports["port"]):
            return False
        admin = kafka_admin(self.client_settings(), log_level=0)
        metadata = admin.list_topics(timeout=2)
        if not metadata.brokers:
            return False
        # Load the group coordinator now (it creates __consumer_offsets), or the
        # first consumer group waits seconds on "coordinator load in progress".
        # (Not list_consumer_group_offsets: it can crash librdkafka this early.)
        admin.describe_consumer_groups(["devstack-warmup"])["devstack-warmup"].result(timeout=5)
        return True

    def after_ready(self) -> None:
        """The users of the shop and of the local cluster (Jaeger writes spans for Zipkin's
        server to read), their topics and ACLs."""
        from common.kafka_acl import SHOP_ACCESS, SHOP_TOPICS, Access, apply

        access = {
            **SHOP_ACCESS,
            "jaeger": Access(writes=(ZIPKIN_TOPIC,)),
            "zipkin": Access(reads=(ZIPKIN_TOPIC,), groups=("zipkin",)),
        }
        passwords = {user: dev_kafka_password(user) for user in access}
        apply(self.client_settings(), passwords, access=access, topics=(*SHOP_TOPICS, ZIPKIN_TOPIC))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['port']}"

    def env(self) -> dict[str, str]:
        return {
            "SHOP_KAFKA_BOOTSTRAP": self.bootstrap,
            "SHOP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SHOP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        }

    def user_env(self, user: str) -> dict[str, str]:
        """The credentials of one process (its own user), for its environment."""
        return {"SHOP_KAFKA_SASL_USERNAME": user, "SHOP_KAFKA_SASL_PASSWORD": dev_kafka_password(user)}

    def client_settings(self, user: str = KAFKA_ADMIN_USER, password: str | None = None) -> KafkaSettings:
        """Settings of a client logged in as ``user`` (the admin, a super user, by default):
        the one way tests and devstack reach this broker.  ``password`` overrides the user's."""
        return KafkaSettings(
            kafka_bootstrap=self.bootstrap,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username=user,
            kafka_sasl_password=SecretStr(password if password is not None else dev_kafka_password(user)),
        )


def _kafka_cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class OnKafka(Server):
    """A server that runs on top of the cluster's Kafka (it learns where in ``use``)."""

    needs = ("kafka",)
    kafka: Kafka

    def use(self, servers: dict[str, Server]) -> None:
        kafka = servers["kafka"]
        assert isinstance(kafka, Kafka)
        self.kafka = kafka
