"""The UserService servicer: proto in → convert → one use case (accounts.py,
sessions.py) → convert → proto out."""

from __future__ import annotations

from shop.user.v1 import user_pb2, user_pb2_grpc

from common.auth import require_admin, require_user
from common.grpc_server import Context
from common.identity import ANY, callers
from user_svc import convert
from user_svc.accounts import Accounts
from user_svc.sessions import Sessions


class UserService(user_pb2_grpc.UserServiceServicer):
    def __init__(self, *, accounts: Accounts, sessions: Sessions) -> None:
        self.accounts = accounts
        self.sessions = sessions

    # -- sign-up, sign-in, sessions
    @callers("edge")
    async def Register(self, request: user_pb2.RegisterRequest, context: Context) -> user_pb2.RegisterResponse:
        signed_in = await self.sessions.register(
            email=request.email,
            password=request.password,
            display_name=request.display_name,
            origin=convert.origin(request.client_address, context),
        )
        return user_pb2.RegisterResponse(
            user=convert.user_to_proto(signed_in.user), tokens=convert.tokens_to_proto(signed_in.tokens)
        )

    # Any shop process may try a password; only the edge's client_address is believed (domain.sessions.ClientOrigin).
    @callers(ANY)
    async def Login(self, request: user_pb2.LoginRequest, context: Context) -> user_pb2.LoginResponse:
        signed_in = await self.sessions.login(
            email=request.email, password=request.password, origin=convert.origin(request.client_address, context)
        )
        return user_pb2.LoginResponse(
            user=convert.user_to_proto(signed_in.user), tokens=convert.tokens_to_proto(signed_in.tokens)
        )

    @callers("edge")
    async def Refresh(self, request: user_pb2.RefreshRequest, context: Context) -> user_pb2.RefreshResponse:
        return user_pb2.RefreshResponse(
            tokens=convert.tokens_to_proto(await self.sessions.refresh(request.refresh_token))
        )

    @callers("edge")
    async def Logout(self, request: user_pb2.LogoutRequest, context: Context) -> user_pb2.LogoutResponse:
        await self.sessions.logout(request.refresh_token, all_sessions=request.all_sessions)
        return user_pb2.LogoutResponse()

    # -- the caller's own account
    # comment_svc: the author's display name.
    @callers("edge", "comment_svc")
    async def GetMe(self, request: user_pb2.GetMeRequest, context: Context) -> user_pb2.GetMeResponse:
        return user_pb2.GetMeResponse(user=convert.user_to_proto(await self.accounts.me(require_user())))

    @callers("edge")
    async def UpdateProfile(
        self, request: user_pb2.UpdateProfileRequest, context: Context
    ) -> user_pb2.UpdateProfileResponse:
        updated = await self.accounts.update_profile(
            require_user(), list(request.update_mask.paths), convert.profile_from_proto(request.profile)
        )
        return user_pb2.UpdateProfileResponse(user=convert.user_to_proto(updated))

    @callers("edge")
    async def ChangePassword(
        self, request: user_pb2.ChangePasswordRequest, context: Context
    ) -> user_pb2.ChangePasswordResponse:
        tokens = await self.sessions.change_password(
            require_user(), current_password=request.current_password, new_password=request.new_password
        )
        return user_pb2.ChangePasswordResponse(tokens=convert.tokens_to_proto(tokens))

    # -- administration and lookups
    @callers("edge")
    async def ListUsers(self, request: user_pb2.ListUsersRequest, context: Context) -> user_pb2.ListUsersResponse:
        require_admin()
        return convert.users_page_to_proto(await self.accounts.list_users(convert.users_query(request)))

    @callers("edge")
    async def SetUserRole(self, request: user_pb2.SetUserRoleRequest, context: Context) -> user_pb2.SetUserRoleResponse:
        admin = require_admin()
        user_id, role = convert.role_change(request)
        return user_pb2.SetUserRoleResponse(
            user=convert.user_to_proto(await self.accounts.set_role(admin, user_id, role))
        )

    @callers("edge")
    async def GetUser(self, request: user_pb2.GetUserRequest, context: Context) -> user_pb2.GetUserResponse:
        user = await self.accounts.get_user(require_user(), request.user_id)
        return user_pb2.GetUserResponse(user=convert.user_to_proto(user))

    @callers("edge")
    async def BatchGetUsers(
        self, request: user_pb2.BatchGetUsersRequest, context: Context
    ) -> user_pb2.BatchGetUsersResponse:
        batch = await self.accounts.batch_get_users(require_user(), request.user_ids)
        return user_pb2.BatchGetUsersResponse(
            users=[convert.user_to_proto(user) for user in batch.users], missing_ids=batch.missing_ids
        )

    # Public keys: any shop process may read them.
    @callers(ANY)
    async def GetJwks(self, request: user_pb2.GetJwksRequest, context: Context) -> user_pb2.GetJwksResponse:
        keys = self.sessions.key_set()
        return user_pb2.GetJwksResponse(jwks_json=keys.jwks_json, max_age_seconds=keys.max_age)
