"""Persistence of accounts and refresh tokens in PostgreSQL (SQLAlchemy Core, async).

The only module of user_svc that knows SQL.  The schema itself is managed by
Alembic (``migrations/user/``); the tables below describe it for queries and
for ``alembic revision --autogenerate``.

Each method of :class:`Store` is one transaction; a use case that needs several
steps atomically takes a :class:`Work` from ``Store.unit_of_work()``.  Rows come
back as the domain's aggregates (``User``, ``RefreshToken``); the rules about
them (the last admin, a refresh token's validity) are the domain's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
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

from common.errors import AlreadyExistsError
from common.unit_of_work import unit_of_work
from user_svc.domain.accounts import ADMIN, CUSTOMER, Profile, SavedAddress, User, UserCursor
from user_svc.domain.sessions import NewRefreshToken, RefreshToken

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


def _user(row: Row[Any]) -> User:
    m = row._mapping
    return User(
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


def _refresh_token(row: Row[Any]) -> RefreshToken:
    m = row._mapping
    return RefreshToken(
        id=m["id"],
        family_id=m["family_id"],
        user_id=m["user_id"],
        expires_at=m["expires_at"],
        used_at=m["used_at"],
        revoked_at=m["revoked_at"],
    )


def _constraint(exc: sa_exc.IntegrityError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)


def _by_email(email: str) -> Any:
    return func.lower(users.c.email) == email.lower()


class Work:
    """The steps of one transaction (``Store.unit_of_work()``): committed together
    when the block ends, rolled back when it raises."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    # -- users
    async def insert_user(self, *, email: str, password_hash: str, display_name: str, role: str = CUSTOMER) -> User:
        """A new account; ALREADY_EXISTS when the email is taken."""
        try:
            row = (
                await self._conn.execute(
                    users.insert()
                    .values(
                        id=uuid.uuid4(), email=email, password_hash=password_hash, display_name=display_name, role=role
                    )
                    .returning(*users.c)
                )
            ).one()
        except sa_exc.IntegrityError as exc:
            if _constraint(exc) == "users_email_key":
                raise AlreadyExistsError("an account with this email already exists") from exc
            raise
        return _user(row)

    async def user_by_id(self, user_id: uuid.UUID) -> User | None:
        row = (await self._conn.execute(select(users).where(users.c.id == user_id))).first()
        return _user(row) if row else None

    async def user_for_update(self, user_id: uuid.UUID) -> User | None:
        """The account, locked until the end of the transaction."""
        row = (await self._conn.execute(select(users).where(users.c.id == user_id).with_for_update())).first()
        return _user(row) if row else None

    async def user_by_email_for_update(self, email: str) -> User | None:
        row = (await self._conn.execute(select(users).where(_by_email(email)).with_for_update())).first()
        return _user(row) if row else None

    async def _update(self, user_id: uuid.UUID, **values: Any) -> User:
        statement = update(users).where(users.c.id == user_id).values(**values, updated_at=func.now())
        return _user((await self._conn.execute(statement.returning(*users.c))).one())

    async def update_profile(self, user_id: uuid.UUID, profile: Profile) -> User:
        return await self._update(
            user_id,
            display_name=profile.display_name,
            phone=profile.phone,
            shipping_addresses=[item.to_json() for item in profile.shipping_addresses],
        )

    async def update_role(self, user_id: uuid.UUID, role: str, *, password_hash: str | None = None) -> User:
        """A new role (and password hash, when given)."""
        values: dict[str, Any] = {"role": role}
        if password_hash is not None:
            values["password_hash"] = password_hash
        return await self._update(user_id, **values)

    async def set_password(self, user_id: uuid.UUID, password_hash: str) -> bool:
        """A new password hash; False when the account no longer exists."""
        result = await self._conn.execute(
            update(users).where(users.c.id == user_id).values(password_hash=password_hash, updated_at=func.now())
        )
        return bool(result.rowcount)

    async def lock_role_changes(self) -> None:
        """Serialize role changes until the end of the transaction."""
        await self._conn.execute(select(func.pg_advisory_xact_lock(ROLE_CHANGE_LOCK)))

    async def count_admins(self) -> int:
        return int(
            (
                await self._conn.execute(select(func.count()).select_from(users).where(users.c.role == ADMIN))
            ).scalar_one()
        )

    # -- refresh tokens
    async def add_refresh_token(self, user_id: uuid.UUID, token: NewRefreshToken) -> None:
        await self._conn.execute(
            refresh_tokens.insert().values(
                id=uuid.uuid4(),
                family_id=token.family_id,
                user_id=user_id,
                token_hash=token.token_hash,
                expires_at=token.expires_at,
            )
        )

    async def refresh_token_for_update(self, token_hash: str) -> RefreshToken | None:
        """The token with this hash, locked: of two concurrent rotations of one
        token only the first finds it unused."""
        row = (
            await self._conn.execute(
                select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash).with_for_update()
            )
        ).first()
        return _refresh_token(row) if row else None

    async def mark_used(self, token_id: uuid.UUID) -> None:
        await self._conn.execute(
            update(refresh_tokens).where(refresh_tokens.c.id == token_id).values(used_at=func.now())
        )

    async def _revoke(self, where: Any) -> int:
        result = await self._conn.execute(
            update(refresh_tokens).where(where, refresh_tokens.c.revoked_at.is_(None)).values(revoked_at=func.now())
        )
        return int(result.rowcount)

    async def revoke_family(self, family_id: uuid.UUID) -> int:
        """End one session (every token of one sign-in); how many tokens were live."""
        return await self._revoke(refresh_tokens.c.family_id == family_id)

    async def revoke_sessions(self, user_id: uuid.UUID) -> int:
        """End every session of an account."""
        return await self._revoke(refresh_tokens.c.user_id == user_id)

    async def family_of(self, token_hash: str) -> uuid.UUID | None:
        statement = select(refresh_tokens.c.family_id).where(refresh_tokens.c.token_hash == token_hash)
        family: uuid.UUID | None = (await self._conn.execute(statement)).scalar_one_or_none()
        return family


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def unit_of_work(self) -> AbstractAsyncContextManager[Work]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        return unit_of_work(self.engine, Work)

    # -- single steps, each a transaction of its own
    async def user_by_id(self, user_id: uuid.UUID) -> User | None:
        async with self.unit_of_work() as work:
            return await work.user_by_id(user_id)

    async def user_by_email(self, email: str) -> User | None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(users).where(_by_email(email)))).first()
        return _user(row) if row else None

    async def users_by_ids(self, user_ids: Sequence[uuid.UUID]) -> list[User]:
        if not user_ids:
            return []
        async with self.engine.begin() as conn:
            rows = (await conn.execute(select(users).where(users.c.id.in_(list(user_ids))))).all()
        return [_user(row) for row in rows]

    async def list_users(self, *, limit: int, after: UserCursor | None, query: str, role: str | None) -> list[User]:
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
        return [_user(row) for row in rows]

    async def replace_password_hash(self, user_id: uuid.UUID, old_hash: str, new_hash: str) -> bool:
        """Upgrade a hash to new parameters, unless the password changed meanwhile."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(users)
                .where(users.c.id == user_id, users.c.password_hash == old_hash)
                .values(password_hash=new_hash)
            )
        return bool(result.rowcount)

    async def add_refresh_token(self, user_id: uuid.UUID, token: NewRefreshToken) -> None:
        async with self.unit_of_work() as work:
            await work.add_refresh_token(user_id, token)

    async def revoke_session(self, token_hash: str) -> int:
        """End the session (token family) of a refresh token; 0 when unknown."""
        async with self.unit_of_work() as work:
            family = await work.family_of(token_hash)
            return 0 if family is None else await work.revoke_family(family)

    async def revoke_all_sessions(self, user_id: uuid.UUID) -> int:
        async with self.unit_of_work() as work:
            return await work.revoke_sessions(user_id)

    async def purge_refresh_tokens(self, expired_before: datetime) -> int:
        """Forget tokens that expired before the given time (they can no longer be
        used, so reuse detection does not need them either)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(refresh_tokens.delete().where(refresh_tokens.c.expires_at < expired_before))
        return int(result.rowcount)
