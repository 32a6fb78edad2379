"""Persistence of accounts and refresh tokens in PostgreSQL (SQLAlchemy Core, async).

The only module of user_svc that knows SQL.  The schema itself is managed by
Alembic (``migrations/user/``); the tables below describe it for queries and
for ``alembic revision --autogenerate``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    Row,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    exc as sa_exc,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.errors import AlreadyExistsError, FailedPreconditionError, NotFoundError, UnauthenticatedError
from user_svc.domain import ADMIN, CUSTOMER, Cursor, Profile, SavedAddress

log = logging.getLogger("shop.user.store")

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    # Stored normalized (trimmed, lower-case); unique case-insensitively.
    Column("email", Text, nullable=False),
    # argon2id PHC string.
    Column("password_hash", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("phone", Text, nullable=False, server_default=""),
    Column("role", Text, nullable=False, server_default=CUSTOMER),
    # [{"id", "label", "is_default", "address": {shop.common.v1.Address fields}}]
    Column("shipping_addresses", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("role IN ('customer', 'admin')", name="users_role_check"),
    CheckConstraint("email = lower(email)", name="users_email_normalized_check"),
)
Index("users_email_key", func.lower(users.c.email), unique=True)
# Keyset paging, newest first: (created_at, id) scanned backwards.
Index("users_created_at_id_idx", users.c.created_at, users.c.id)
Index("users_admins_idx", users.c.id, postgresql_where=users.c.role == ADMIN)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", Uuid, primary_key=True),
    # One family per sign-in: every rotation stays in it; reuse revokes it whole.
    Column("family_id", Uuid, nullable=False),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # sha256 (hex) of the opaque token; the token itself is never stored.
    Column("token_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # Set when the token was rotated (exchanged for a new one).
    Column("used_at", DateTime(timezone=True), nullable=True),
    # Set when its session ended: logout, password change, reuse detected.
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("token_hash", name="refresh_tokens_token_hash_key"),
)
Index("refresh_tokens_user_id_idx", refresh_tokens.c.user_id)
Index("refresh_tokens_family_id_idx", refresh_tokens.c.family_id)
Index("refresh_tokens_expires_at_idx", refresh_tokens.c.expires_at)

# pg_advisory_xact_lock key that serializes role changes (last-admin rule).
ROLE_CHANGE_LOCK = 0x5553_4552_524F_4C45  # "USERROLE"


@dataclass(frozen=True)
class UserRecord:
    id: uuid.UUID
    email: str
    password_hash: str
    display_name: str
    phone: str
    role: str
    shipping_addresses: tuple[SavedAddress, ...]
    created_at: datetime
    updated_at: datetime

    @property
    def profile(self) -> Profile:
        return Profile(self.display_name, self.phone, self.shipping_addresses)


@dataclass(frozen=True)
class NewRefreshToken:
    """A refresh token to store: its hash and expiry (the family is a new sign-in
    unless given)."""

    token_hash: str
    expires_at: datetime
    family_id: uuid.UUID = field(default_factory=uuid.uuid4)


def _record(row: Row[Any]) -> UserRecord:
    m = row._mapping
    return UserRecord(
        id=m["id"],
        email=m["email"],
        password_hash=m["password_hash"],
        display_name=m["display_name"],
        phone=m["phone"],
        role=m["role"],
        shipping_addresses=tuple(SavedAddress.from_json(item) for item in m["shipping_addresses"] or ()),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _constraint(exc: sa_exc.IntegrityError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)


INVALID_REFRESH = "the refresh token is invalid, expired or revoked; sign in again"
REUSED_REFRESH = (
    "this refresh token was already used; every session of that sign-in has been ended for safety; sign in again"
)


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- users
    async def create_user(
        self,
        *,
        email: str,
        password_hash: str,
        display_name: str,
        role: str = CUSTOMER,
        refresh: NewRefreshToken | None = None,
    ) -> UserRecord:
        """A new account (and its first refresh token, in the same transaction)."""
        try:
            async with self.engine.begin() as conn:
                row = (
                    await conn.execute(
                        users.insert()
                        .values(
                            id=uuid.uuid4(),
                            email=email,
                            password_hash=password_hash,
                            display_name=display_name,
                            role=role,
                        )
                        .returning(*users.c)
                    )
                ).one()
                user = _record(row)
                if refresh is not None:
                    await self._insert_refresh(conn, user.id, refresh)
                return user
        except sa_exc.IntegrityError as exc:
            if _constraint(exc) == "users_email_key":
                raise AlreadyExistsError("an account with this email already exists") from exc
            raise

    async def user_by_id(self, user_id: uuid.UUID) -> UserRecord | None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        return _record(row) if row else None

    async def user_by_email(self, email: str) -> UserRecord | None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(users).where(func.lower(users.c.email) == email.lower()))).first()
        return _record(row) if row else None

    async def users_by_ids(self, user_ids: Sequence[uuid.UUID]) -> list[UserRecord]:
        if not user_ids:
            return []
        async with self.engine.begin() as conn:
            rows = (await conn.execute(select(users).where(users.c.id.in_(list(user_ids))))).all()
        return [_record(row) for row in rows]

    async def update_profile(self, user_id: uuid.UUID, change: Callable[[Profile], Profile]) -> UserRecord | None:
        """Apply ``change`` to the current profile under a row lock (so concurrent
        edits of the address list never lose one another's ids)."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id).with_for_update())).first()
            if row is None:
                return None
            new = change(_record(row).profile)
            updated = (
                await conn.execute(
                    update(users)
                    .where(users.c.id == user_id)
                    .values(
                        display_name=new.display_name,
                        phone=new.phone,
                        shipping_addresses=[item.to_json() for item in new.shipping_addresses],
                        updated_at=func.now(),
                    )
                    .returning(*users.c)
                )
            ).one()
        return _record(updated)

    async def replace_password_hash(self, user_id: uuid.UUID, old_hash: str, new_hash: str) -> bool:
        """Upgrade a hash to new parameters, unless the password changed meanwhile."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(users)
                .where(users.c.id == user_id, users.c.password_hash == old_hash)
                .values(password_hash=new_hash)
            )
        return bool(result.rowcount)

    async def change_password(self, user_id: uuid.UUID, new_hash: str, refresh: NewRefreshToken) -> None:
        """New password, every session revoked, one new session: all or nothing."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(users).where(users.c.id == user_id).values(password_hash=new_hash, updated_at=func.now())
            )
            if not result.rowcount:
                raise NotFoundError("the account no longer exists")
            await self._revoke(conn, refresh_tokens.c.user_id == user_id)
            await self._insert_refresh(conn, user_id, refresh)

    async def list_users(self, *, limit: int, after: Cursor | None, query: str, role: str | None) -> list[UserRecord]:
        """Newest first; ``query`` is a lower-case prefix of email or display name."""
        stmt = select(users)
        if query:
            stmt = stmt.where(
                or_(
                    func.lower(users.c.email).startswith(query, autoescape=True),
                    func.lower(users.c.display_name).startswith(query, autoescape=True),
                )
            )
        if role:
            stmt = stmt.where(users.c.role == role)
        if after is not None:
            stmt = stmt.where(tuple_(users.c.created_at, users.c.id) < tuple_(after.created_at, after.id))
        stmt = stmt.order_by(users.c.created_at.desc(), users.c.id.desc()).limit(limit)
        async with self.engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_record(row) for row in rows]

    async def set_role(self, user_id: uuid.UUID, role: str) -> UserRecord:
        """Change a role; refuses to demote the last admin (role changes are
        serialized, so two admins demoting each other cannot leave none)."""
        async with self.engine.begin() as conn:
            await conn.execute(select(func.pg_advisory_xact_lock(ROLE_CHANGE_LOCK)))
            row = (await conn.execute(select(users).where(users.c.id == user_id).with_for_update())).first()
            if row is None:
                raise NotFoundError("no user with this id")
            current = _record(row)
            if current.role == role:
                return current
            if current.role == ADMIN:
                admins = (
                    await conn.execute(select(func.count()).select_from(users).where(users.c.role == ADMIN))
                ).scalar_one()
                if admins <= 1:
                    raise FailedPreconditionError(
                        "this is the last admin: make another user admin first", reason="LAST_ADMIN"
                    )
            updated = (
                await conn.execute(
                    update(users)
                    .where(users.c.id == user_id)
                    .values(role=role, updated_at=func.now())
                    .returning(*users.c)
                )
            ).one()
        return _record(updated)

    async def ensure_admin(
        self, *, email: str, display_name: str, password_hash: str | None, promote: bool
    ) -> tuple[UserRecord, str]:
        """Create an admin, or (with ``promote``) make the existing account one, and
        set its password when a hash is given.  Returns the account and what
        happened: "created", "promoted", "updated", "unchanged" or "exists"."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(select(users).where(func.lower(users.c.email) == email).with_for_update())
            ).first()
            if row is None:
                if password_hash is None:
                    raise NotFoundError("no account with this email; a password is needed to create it")
                created = (
                    await conn.execute(
                        users.insert()
                        .values(
                            id=uuid.uuid4(),
                            email=email,
                            password_hash=password_hash,
                            display_name=display_name,
                            role=ADMIN,
                        )
                        .returning(*users.c)
                    )
                ).one()
                return _record(created), "created"
            current = _record(row)
            if not promote:
                return current, "exists"
            values: dict[str, Any] = {}
            if current.role != ADMIN:
                values["role"] = ADMIN
            if password_hash is not None:
                values["password_hash"] = password_hash
                await self._revoke(conn, refresh_tokens.c.user_id == current.id)
            if not values:
                return current, "unchanged"
            updated = (
                await conn.execute(
                    update(users)
                    .where(users.c.id == current.id)
                    .values(**values, updated_at=func.now())
                    .returning(*users.c)
                )
            ).one()
        return _record(updated), "promoted" if "role" in values else "updated"

    # -- refresh tokens
    async def _insert_refresh(self, conn: AsyncConnection, user_id: uuid.UUID, token: NewRefreshToken) -> None:
        await conn.execute(
            refresh_tokens.insert().values(
                id=uuid.uuid4(),
                family_id=token.family_id,
                user_id=user_id,
                token_hash=token.token_hash,
                expires_at=token.expires_at,
            )
        )

    async def _revoke(self, conn: AsyncConnection, where: Any) -> int:
        result = await conn.execute(
            update(refresh_tokens).where(where, refresh_tokens.c.revoked_at.is_(None)).values(revoked_at=func.now())
        )
        return int(result.rowcount)

    async def add_refresh_token(self, user_id: uuid.UUID, token: NewRefreshToken) -> None:
        async with self.engine.begin() as conn:
            await self._insert_refresh(conn, user_id, token)

    async def rotate_refresh_token(
        self, token_hash: str, new_hash: str, new_expires_at: datetime, now: datetime
    ) -> UserRecord:
        """Exchange a refresh token for a new one of the same family.

        The row is locked (``FOR UPDATE``), so of two concurrent rotations of one
        token only the first succeeds; the second finds it used.  Presenting a
        used token again is reuse: the whole family is revoked (committed) and
        the call fails with REFRESH_TOKEN_REUSED.
        """
        reused = False
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash).with_for_update()
                )
            ).first()
            if row is None:
                raise UnauthenticatedError(INVALID_REFRESH, reason="INVALID_TOKEN")
            token = row._mapping
            if token["used_at"] is not None:
                revoked = await self._revoke(conn, refresh_tokens.c.family_id == token["family_id"])
                log.warning(
                    "refresh token reuse: family revoked",
                    extra={"user_id": str(token["user_id"]), "family_id": str(token["family_id"]), "revoked": revoked},
                )
                reused = True
            elif token["revoked_at"] is not None or token["expires_at"] <= now:
                raise UnauthenticatedError(INVALID_REFRESH, reason="INVALID_TOKEN")
            else:
                user_row = (await conn.execute(select(users).where(users.c.id == token["user_id"]))).first()
                if user_row is None:
                    raise UnauthenticatedError(INVALID_REFRESH, reason="INVALID_TOKEN")
                await conn.execute(
                    update(refresh_tokens).where(refresh_tokens.c.id == token["id"]).values(used_at=func.now())
                )
                await self._insert_refresh(
                    conn,
                    token["user_id"],
                    NewRefreshToken(token_hash=new_hash, expires_at=new_expires_at, family_id=token["family_id"]),
                )
                return _record(user_row)
        # Outside the transaction: the family's revocation is committed first.
        assert reused
        raise UnauthenticatedError(REUSED_REFRESH, reason="REFRESH_TOKEN_REUSED")

    async def revoke_session(self, token_hash: str) -> int:
        """End the session (token family) of a refresh token; 0 when unknown."""
        async with self.engine.begin() as conn:
            family = (
                await conn.execute(select(refresh_tokens.c.family_id).where(refresh_tokens.c.token_hash == token_hash))
            ).scalar_one_or_none()
            if family is None:
                return 0
            return await self._revoke(conn, refresh_tokens.c.family_id == family)

    async def revoke_all_sessions(self, user_id: uuid.UUID) -> int:
        async with self.engine.begin() as conn:
            return await self._revoke(conn, refresh_tokens.c.user_id == user_id)

    async def purge_refresh_tokens(self, expired_before: datetime) -> int:
        """Forget tokens that expired before the given time (they can no longer be
        used, so reuse detection does not need them either)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(refresh_tokens.delete().where(refresh_tokens.c.expires_at < expired_before))
        return int(result.rowcount)
