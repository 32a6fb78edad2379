"""The UserService servicer: proto in → domain rules and store → proto out."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from shop.common.v1 import paging_pb2
from shop.user.v1 import user_pb2, user_pb2_grpc

from common import convert
from common.auth import Principal, require_admin, require_user
from common.errors import FieldViolation, NotFoundError, PermissionDeniedError, UnauthenticatedError
from common.identity import ANY, callers, current_caller
from user_svc import domain
from user_svc.keys import TokenKeys
from user_svc.passwords import Passwords
from user_svc.ratelimit import SignInLimiter
from user_svc.store import INVALID_REFRESH, NewRefreshToken, Store, UserRecord

log = logging.getLogger("shop.user")

Context = grpc.aio.ServicerContext[Any, Any]

WRONG_CREDENTIALS = "wrong email or password"
PASSWORD_INPUT_MAX = 1024  # longer input is refused before any hashing


# --- proto <-> domain ---------------------------------------------------------------


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def address_to_proto(item: domain.SavedAddress) -> user_pb2.SavedAddress:
    return user_pb2.SavedAddress(
        id=item.id, label=item.label, is_default=item.is_default, address=convert.address_to_proto(item.address)
    )


def address_from_proto(item: user_pb2.SavedAddress) -> domain.SavedAddress:
    return domain.SavedAddress(
        id=item.id,
        label=item.label,
        is_default=item.is_default,
        address=convert.address_from_proto(item.address),
    )


def user_to_proto(user: UserRecord) -> user_pb2.User:
    return user_pb2.User(
        id=str(user.id),
        email=user.email,
        display_name=user.display_name,
        phone=user.phone,
        role=domain.role_to_proto(user.role),
        shipping_addresses=[address_to_proto(item) for item in user.shipping_addresses],
        created_at=_timestamp(user.created_at),
        updated_at=_timestamp(user.updated_at),
    )


@dataclass(frozen=True)
class TokenPolicy:
    refresh_ttl: int
    jwks_max_age: int


class UserService(user_pb2_grpc.UserServiceServicer):
    def __init__(
        self,
        *,
        store: Store,
        passwords: Passwords,
        limiter: SignInLimiter,
        keys: TokenKeys,
        policy: TokenPolicy,
    ) -> None:
        self.store = store
        self.passwords = passwords
        self.limiter = limiter
        self.keys = keys
        self.policy = policy

    # -- helpers
    def _new_refresh(self) -> tuple[str, NewRefreshToken]:
        token = domain.new_refresh_token()
        expires = domain.refresh_expiry(datetime.now(UTC), self.policy.refresh_ttl)
        stored = NewRefreshToken(token_hash=domain.hash_refresh_token(token), expires_at=expires)
        return token, stored

    def _tokens(
        self, user_id: uuid.UUID, role: str, refresh_token: str, refresh: NewRefreshToken
    ) -> user_pb2.AuthTokens:
        access, expires = self.keys.signer.sign(str(user_id), role)
        return user_pb2.AuthTokens(
            access_token=access,
            token_type="Bearer",
            expires_in=self.keys.signer.ttl,
            access_token_expires_at=Timestamp(seconds=expires),
            refresh_token=refresh_token,
            refresh_token_expires_at=_timestamp(refresh.expires_at),
        )

    async def _me(self, principal: Principal) -> UserRecord:
        user_id = domain.parse_uuid(principal.user_id)
        user = await self.store.user_by_id(user_id) if user_id else None
        if user is None:
            raise UnauthenticatedError("the access token names no account; sign in again", reason="INVALID_TOKEN")
        return user

    @staticmethod
    def _client_address(given: str, context: Context) -> str:
        """The address a sign-in counts against: the end user's, as the edge reports it;
        from any other caller the address given is ignored and the gRPC peer (the
        calling process's own address) counts, so no caller picks a fresh budget."""
        if current_caller.get() != "edge":
            given = ""
        return domain.address_bucket(given or domain.peer_host(context.peer() or ""))

    # -- sign-up, sign-in, sessions
    @callers("edge")
    async def Register(self, request: user_pb2.RegisterRequest, context: Context) -> user_pb2.RegisterResponse:
        registration = domain.validate_registration(request.email, request.password, request.display_name)
        await self.limiter.register(self._client_address(request.client_address, context))
        password_hash = await self.passwords.hash(request.password)
        token, refresh = self._new_refresh()
        user = await self.store.create_user(
            email=registration.email,
            password_hash=password_hash,
            display_name=registration.display_name,
            refresh=refresh,
        )
        log.info("registered", extra={"user_id": str(user.id)})
        return user_pb2.RegisterResponse(
            user=user_to_proto(user), tokens=self._tokens(user.id, user.role, token, refresh)
        )

    # Any shop process may try a password; only the edge's client_address is believed (_client_address).
    @callers(ANY)
    async def Login(self, request: user_pb2.LoginRequest, context: Context) -> user_pb2.LoginResponse:
        email = domain.normalize_email(request.email)
        violations = domain.Violations()
        if not email:
            violations.add("email", "is required")
        if not request.password:
            violations.add("password", "is required")
        elif len(request.password) > PASSWORD_INPUT_MAX:
            violations.add("password", f"must be at most {PASSWORD_INPUT_MAX} characters")
        violations.check()

        address = self._client_address(request.client_address, context)
        await self.limiter.begin_login(email, address)
        user = await self.store.user_by_email(email) if domain.email_problem(email) is None else None
        # An unknown email costs a verification too: same time, same answer.
        if not await self.passwords.verify(user.password_hash if user else None, request.password) or user is None:
            # Only a wrong password counts as a failure (not a store or hashing failure: those raised above).
            await self.limiter.wrong_password(email, address)
            raise UnauthenticatedError(WRONG_CREDENTIALS, reason="INVALID_CREDENTIALS")

        if self.passwords.needs_rehash(user.password_hash):
            await self.store.replace_password_hash(
                user.id, user.password_hash, await self.passwords.hash(request.password)
            )
        token, refresh = self._new_refresh()
        await self.store.add_refresh_token(user.id, refresh)
        return user_pb2.LoginResponse(user=user_to_proto(user), tokens=self._tokens(user.id, user.role, token, refresh))

    @callers("edge")
    async def Refresh(self, request: user_pb2.RefreshRequest, context: Context) -> user_pb2.RefreshResponse:
        presented = request.refresh_token.strip()
        if not presented:
            raise domain.invalid(FieldViolation("refresh_token", "is required"))
        if len(presented) > domain.REFRESH_TOKEN_MAX:
            raise UnauthenticatedError(INVALID_REFRESH, reason="INVALID_TOKEN")
        token, refresh = self._new_refresh()
        user = await self.store.rotate_refresh_token(
            domain.hash_refresh_token(presented), refresh.token_hash, refresh.expires_at, datetime.now(UTC)
        )
        return user_pb2.RefreshResponse(tokens=self._tokens(user.id, user.role, token, refresh))

    @callers("edge")
    async def Logout(self, request: user_pb2.LogoutRequest, context: Context) -> user_pb2.LogoutResponse:
        if request.all_sessions:
            user = await self._me(require_user())
            await self.store.revoke_all_sessions(user.id)
        elif request.refresh_token.strip():
            presented = request.refresh_token.strip()
            if len(presented) <= domain.REFRESH_TOKEN_MAX:
                await self.store.revoke_session(domain.hash_refresh_token(presented))
        else:
            raise domain.invalid(
                FieldViolation("refresh_token", "give the refresh token of the session to end, or set all_sessions")
            )
        return user_pb2.LogoutResponse()

    # -- the caller's own account
    # comment_svc: the author's display name.
    @callers("edge", "comment_svc")
    async def GetMe(self, request: user_pb2.GetMeRequest, context: Context) -> user_pb2.GetMeResponse:
        return user_pb2.GetMeResponse(user=user_to_proto(await self._me(require_user())))

    @callers("edge")
    async def UpdateProfile(
        self, request: user_pb2.UpdateProfileRequest, context: Context
    ) -> user_pb2.UpdateProfileResponse:
        principal = require_user()
        paths = list(request.update_mask.paths)
        wanted = domain.Profile(
            display_name=request.profile.display_name,
            phone=request.profile.phone,
            shipping_addresses=tuple(address_from_proto(item) for item in request.profile.shipping_addresses),
        )
        domain.check_update_mask(paths)  # before the database is touched
        user_id = domain.parse_uuid(principal.user_id)
        updated = (
            await self.store.update_profile(
                user_id, lambda current: domain.apply_profile_update(current, paths, wanted)
            )
            if user_id
            else None
        )
        if updated is None:
            raise UnauthenticatedError("the access token names no account; sign in again", reason="INVALID_TOKEN")
        return user_pb2.UpdateProfileResponse(user=user_to_proto(updated))

    @callers("edge")
    async def ChangePassword(
        self, request: user_pb2.ChangePasswordRequest, context: Context
    ) -> user_pb2.ChangePasswordResponse:
        user = await self._me(require_user())
        violations = domain.Violations()
        if not request.current_password:
            violations.add("current_password", "is required")
        elif len(request.current_password) > PASSWORD_INPUT_MAX:
            violations.add("current_password", f"must be at most {PASSWORD_INPUT_MAX} characters")
        problem = domain.password_problem(request.new_password, user.email)
        if problem:
            violations.add("new_password", problem)
        violations.check()

        # Per account only: ChangePassword does not carry the client's address,
        # and behind the edge the gRPC peer is the edge itself.
        await self.limiter.begin_login(user.email, None)
        if not await self.passwords.verify(user.password_hash, request.current_password):
            await self.limiter.wrong_password(user.email, None)
            raise UnauthenticatedError("the current password is wrong", reason="INVALID_CREDENTIALS")

        new_hash = await self.passwords.hash(request.new_password)
        token, refresh = self._new_refresh()
        await self.store.change_password(user.id, new_hash, refresh)
        log.info("password changed; other sessions revoked", extra={"user_id": str(user.id)})
        return user_pb2.ChangePasswordResponse(tokens=self._tokens(user.id, user.role, token, refresh))

    # -- administration and lookups
    @callers("edge")
    async def ListUsers(self, request: user_pb2.ListUsersRequest, context: Context) -> user_pb2.ListUsersResponse:
        require_admin()
        size = domain.page_size(request.page.page_size)
        query = domain.list_query(request.query)
        role = domain.role_filter_from_proto(request.role)
        filters = domain.filters_key(query, role or "")
        cursor = domain.decode_page_token(request.page.page_token, filters)
        rows = await self.store.list_users(limit=size + 1, after=cursor, query=query, role=role)
        page, more = rows[:size], len(rows) > size
        next_token = (
            domain.encode_page_token(domain.Cursor(page[-1].created_at, page[-1].id), filters) if more and page else ""
        )
        return user_pb2.ListUsersResponse(
            users=[user_to_proto(user) for user in page],
            page=paging_pb2.PageResponse(next_page_token=next_token),
        )

    @callers("edge")
    async def SetUserRole(self, request: user_pb2.SetUserRoleRequest, context: Context) -> user_pb2.SetUserRoleResponse:
        admin = require_admin()
        user_id = domain.require_uuid(request.user_id, "user_id")
        role = domain.role_from_proto(request.role)
        user = await self.store.set_role(user_id, role)
        log.info("role set", extra={"user_id": str(user.id), "role": role, "by": admin.user_id})
        return user_pb2.SetUserRoleResponse(user=user_to_proto(user))

    # Readers of other accounts: an admin or the account's owner.  Internal
    # callers (e.g. comment_svc resolving author names) need a service identity,
    # which the shared auth does not have yet; until then they call as an admin.
    @staticmethod
    def _may_read(principal: Principal, user_ids: list[str]) -> None:
        def same(raw: str) -> str:
            return str(domain.parse_uuid(raw) or raw)

        if not principal.is_admin and any(same(user_id) != same(principal.user_id) for user_id in user_ids):
            raise PermissionDeniedError("only an admin or the account's owner may read an account", reason="NOT_OWNER")

    @callers("edge")
    async def GetUser(self, request: user_pb2.GetUserRequest, context: Context) -> user_pb2.GetUserResponse:
        principal = require_user()
        self._may_read(principal, [request.user_id.strip()])
        user_id = domain.require_uuid(request.user_id, "user_id")
        user = await self.store.user_by_id(user_id)
        if user is None:
            raise NotFoundError("no user with this id")
        return user_pb2.GetUserResponse(user=user_to_proto(user))

    @callers("edge")
    async def BatchGetUsers(
        self, request: user_pb2.BatchGetUsersRequest, context: Context
    ) -> user_pb2.BatchGetUsersResponse:
        principal = require_user()
        ids = domain.batch_ids(request.user_ids)
        self._may_read(principal, ids)
        parsed = {raw: domain.parse_uuid(raw) for raw in ids}
        found = {user.id: user for user in await self.store.users_by_ids([u for u in parsed.values() if u])}
        users, missing = [], []
        for raw, user_id in parsed.items():
            user = found.get(user_id) if user_id else None
            if user is None:
                missing.append(raw)
            else:
                users.append(user_to_proto(user))
        return user_pb2.BatchGetUsersResponse(users=users, missing_ids=missing)

    # Public keys: any shop process may read them.
    @callers(ANY)
    async def GetJwks(self, request: user_pb2.GetJwksRequest, context: Context) -> user_pb2.GetJwksResponse:
        return user_pb2.GetJwksResponse(jwks_json=self.keys.jwks_json, max_age_seconds=self.policy.jwks_max_age)
