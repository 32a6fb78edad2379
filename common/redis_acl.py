"""The Redis ACL of the shop: one user per service that keeps data in Redis, each allowed the
key patterns (``~``) and pub/sub channels (``&``) of its own key layout and no admin or
dangerous command (CONFIG, FLUSHALL, KEYS, DEBUG, ...); the ``default`` user is off (no one
signs in as it).

devstack writes it for the local cluster (devstack/servers/redis.py ``Redis``), the compose stack's
``redis_users`` job for its Redis; a managed Redis gets the same rules (README "Data stores
with credentials").
"""

from __future__ import annotations

import os
from pathlib import Path

# Service -> what it may touch (order_svc/store/carts.py, notify_svc/store/keys.py, and each
# service's limits under ``shop:<area>:``, common/ratelimit.py).  A service that starts keeping
# data in Redis gets its line here.
REDIS_ACCESS: dict[str, str] = {
    "user_svc": "~shop:user:*",
    "order_svc": "~cart:* ~shop:order:*",
    "comment_svc": "~shop:comment:*",
    "notify_svc": "~notify:* ~shop:notify:* &notify:*",
}
REDIS_COMMANDS = "+@all -@admin -@dangerous"


def acl_lines(passwords: dict[str, str], *, admins: tuple[str, ...] = ()) -> list[str]:
    """ACL file lines for the services in ``passwords`` (and full access for ``admins``)."""
    # The default user is off: no client can sign in as it (unauthenticated clients are refused
    # every command).  Its permissions stay whole because Redis 7.0 replays the append-only file
    # as the default user and checks a transaction's (a script's) commands again at its EXEC:
    # restricted, a restart would drop every MULTI/EXEC it finds there.
    lines = ["user default off resetpass ~* &* +@all"]
    for name, secret in passwords.items():
        rules = "~* &* +@all" if name in admins else f"{REDIS_ACCESS[name]} {REDIS_COMMANDS}"
        lines.append(f"user {name} on >{secret} resetkeys resetchannels {rules}")
    return lines


def write_acl_file(path: Path, passwords: dict[str, str], *, admins: tuple[str, ...] = (), mode: int = 0o600) -> None:
    """The ACL file Redis reads with ``--aclfile`` (passwords inside: owner-only unless told)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(acl_lines(passwords, admins=admins)) + "\n")
