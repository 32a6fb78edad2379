"""Redis, with an ACL file: devstack's own user and one user per service."""

from __future__ import annotations

from common.redis_acl import REDIS_ACCESS, write_acl_file
from devstack.credentials import passwords
from devstack.servers.base import Server, binary

# devstack's own Redis user (readiness checks, the tests' inspection of the stores); the
# services' users and what each may touch: common/redis_acl.py.
REDIS_ADMIN = "devstack"


class Redis(Server):
    name = "redis"

    def passwords(self) -> dict[str, str]:
        return passwords(self.data, [REDIS_ADMIN, *REDIS_ACCESS])

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        write_acl_file(self.data / "users.acl", self.passwords(), admins=(REDIS_ADMIN,))

    def argv(self) -> list[str]:
        return [
            binary("redis-server"),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.ports["port"]),
            "--dir",
            str(self.data),
            "--aclfile",
            str(self.data / "users.acl"),
            # Durability comes from the append-only file (no RDB snapshots besides its base):
            # every write is in the file before its reply is sent, and fsynced once a second,
            # so a crash of Redis loses nothing and one of the machine at most a second.
            "--save",
            "",
            "--appendonly",
            "no" if self.unsafe_fast_storage else "yes",
            "--appendfsync",
            "everysec",
            "--protected-mode",
            "no",
        ]

    def ready(self) -> bool:
        import redis

        return bool(redis.Redis.from_url(self.url(), socket_timeout=1).ping())

    def url(self, db: int = 0, user: str = REDIS_ADMIN) -> str:
        """A Redis URL as ``user`` (devstack's own user unless told)."""
        secret = self.passwords()[user]
        return f"redis://{user}:{secret}@127.0.0.1:{self.ports['port']}/{db}"

    def service_env(self, service: str) -> dict[str, str]:
        if service not in REDIS_ACCESS:
            return {}
        return {"SHOP_REDIS_URL": self.url(user=service)}
