"""Who may do what on Kafka: one user per process that talks to it, and ACLs per topic
and consumer group.  The broker denies everything else (StandardAuthorizer with
``allow.everyone.if.no.acl.found=false``); only the admin user, a super user, creates
topics, users and ACLs.

    python -m common.kafka_acl      apply them (Compose's kafka_setup job)

devstack's broker applies them as soon as it is ready (devstack/servers/kafka.py Kafka).  A
managed Kafka gets the same users and grants from whoever runs it: :data:`SHOP_ACCESS` is
what to grant.  Applying is idempotent: each user's password is set (again), missing topics
are created, ACLs that exist already stay as they are.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import confluent_kafka
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)
from confluent_kafka.cimpl import NewTopic
from pydantic import Field, SecretStr

from common import events
from common.clients import kafka_admin
from common.consumer import PARKED_SUFFIX
from common.settings import KAFKA_ADMIN_USER, KafkaSettings, dev_kafka_password

log = logging.getLogger("shop.kafka_acl")


@dataclass(frozen=True)
class Access:
    """What one Kafka user may do (WRITE and READ imply DESCRIBE)."""

    writes: tuple[str, ...] = ()  # topics it produces to
    reads: tuple[str, ...] = ()  # topics it consumes
    groups: tuple[str, ...] = ()  # consumer groups it joins


NOTIFY_TOPICS = (events.ORDERS_TOPIC, events.COMMENTS_TOPIC, events.PLATFORM_TOPIC)

SHOP_ACCESS: dict[str, Access] = {
    # The outbox relays: each service writes its own aggregate's topic, and only that.
    "order_svc": Access(writes=(events.ORDERS_TOPIC,)),
    "comment_svc": Access(writes=(events.COMMENTS_TOPIC,)),
    # The consumer (group notify_svc), the announcements it publishes, the poison messages it parks.
    "notify_svc": Access(
        reads=NOTIFY_TOPICS,
        groups=("notify_svc",),
        writes=(events.PLATFORM_TOPIC, *(topic + PARKED_SUFFIX for topic in NOTIFY_TOPICS)),
    ),
}

# Created up front by the admin: no service may create topics.
SHOP_TOPICS = (*NOTIFY_TOPICS, *(topic + PARKED_SUFFIX for topic in NOTIFY_TOPICS))

# Kafka's minimum for SCRAM-SHA-512 and -256 is 4096.
SCRAM_ITERATIONS = 8192
_MECHANISMS = {"SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512, "SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256}


def acl_bindings(access: Mapping[str, Access]) -> list[AclBinding]:
    bindings = []
    for user, grant in access.items():
        allow: list[tuple[ResourceType, str, AclOperation]] = [
            *((ResourceType.TOPIC, topic, AclOperation.WRITE) for topic in grant.writes),
            *((ResourceType.TOPIC, topic, AclOperation.READ) for topic in grant.reads),
            *((ResourceType.GROUP, group, AclOperation.READ) for group in grant.groups),
        ]
        for kind, name, operation in allow:
            bindings.append(
                AclBinding(
                    kind, name, ResourcePatternType.LITERAL, f"User:{user}", "*", operation, AclPermissionType.ALLOW
                )
            )
    return bindings


def apply(
    admin_settings: KafkaSettings,
    passwords: Mapping[str, str],
    *,
    access: Mapping[str, Access] = SHOP_ACCESS,
    topics: Iterable[str] = SHOP_TOPICS,
    mechanism: str = "SCRAM-SHA-512",
    timeout: float = 30.0,
) -> None:
    """Set the users' SCRAM passwords, create the missing topics, grant the ACLs."""
    admin = kafka_admin(admin_settings)
    info = ScramCredentialInfo(_MECHANISMS[mechanism], SCRAM_ITERATIONS)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(user, info, password.encode()) for user, password in passwords.items()
    ]
    if upserts:
        _wait(admin.alter_user_scram_credentials(upserts, request_timeout=timeout), timeout)
    existing = admin.list_topics(timeout=timeout).topics
    missing = [NewTopic(name) for name in dict.fromkeys(topics) if name not in existing]
    if missing:
        _wait(admin.create_topics(missing, request_timeout=timeout), timeout, ok=_TOPIC_EXISTS)
    wanted = acl_bindings(access)
    _wait(admin.create_acls(wanted, request_timeout=timeout), timeout)
    # The broker's authorizer learns them from the metadata log a moment after the controller
    # took them: wait, so that a client started next is already allowed.
    deadline = time.monotonic() + timeout
    while not set(wanted) <= set(admin.describe_acls(_ANY_ACL, request_timeout=timeout).result(timeout)):
        if time.monotonic() > deadline:
            raise RuntimeError("kafka set-up: the broker does not show the ACLs it was given")
        time.sleep(0.1)
    log.info("kafka users, topics and ACLs applied", extra={"users": ",".join(sorted(passwords))})


_TOPIC_EXISTS = confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS
# Every binding (None: any name, principal, host; the stubs say str).
_ANY: Any = None
_ANY_ACL = AclBindingFilter(
    ResourceType.ANY, _ANY, ResourcePatternType.ANY, _ANY, _ANY, AclOperation.ANY, AclPermissionType.ANY
)


def _wait(futures: Mapping[Any, Any], timeout: float, ok: int | None = None) -> None:
    for key, future in futures.items():
        try:
            future.result(timeout=timeout)
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if ok is not None and isinstance(error, confluent_kafka.KafkaError) and error.code() == ok:
                continue
            raise RuntimeError(f"kafka set-up failed for {key}: {exc}") from exc


# --- the Compose job ------------------------------------------------------------------------------


class KafkaSetupSettings(KafkaSettings):
    """The job's connection is the admin's (SHOP_KAFKA_SASL_USERNAME defaults to shop_admin)."""

    service_name: ClassVar[str] = KAFKA_ADMIN_USER

    # The SCRAM password of each user of SHOP_ACCESS, as a JSON object {"order_svc": "…", …};
    # in development, a missing one is the local broker's (common/settings.py dev_kafka_password).
    kafka_user_passwords: dict[str, SecretStr] = Field(default_factory=dict)
    # The mechanism the services log in with.
    kafka_user_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"


def user_passwords(settings: KafkaSetupSettings) -> dict[str, str]:
    passwords = {}
    for user in SHOP_ACCESS:
        given = settings.kafka_user_passwords.get(user)
        if given is not None:
            passwords[user] = given.get_secret_value()
        elif settings.development:
            passwords[user] = dev_kafka_password(user)
        else:
            raise SystemExit(f"SHOP_KAFKA_USER_PASSWORDS has no password for {user}")
    return passwords


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    settings = KafkaSetupSettings()
    apply(settings, user_passwords(settings), mechanism=settings.kafka_user_mechanism)
    print(f"kafka_setup: users {', '.join(SHOP_ACCESS)}, topics and ACLs applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
