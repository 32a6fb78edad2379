"""Accounts: sign-up and sessions (``/api/v1/auth``), profiles and admin (``/api/v1/users``)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Literal

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from pydantic import BaseModel, Field
from shop.order.v1 import cart_pb2
from shop.user.v1 import user_pb2
from starlette.requests import Request

from common.convert import optional_datetime_of
from edge.api import Api, Contract
from edge.clients import call_options, client_address, clients
from edge.problems import HttpProblemError
from edge.routes.models import Address, EmailText, PageQuery, Strict, Uuid

api = Api(upstreams=["user_svc"])
log = logging.getLogger("shop.edge")

Role = Literal["customer", "admin"]
ROLE_TO_PROTO: dict[Role, user_pb2.Role.ValueType] = {"customer": user_pb2.ROLE_CUSTOMER, "admin": user_pb2.ROLE_ADMIN}
ROLE_OF_PROTO: dict[int, Role] = {user_pb2.ROLE_CUSTOMER: "customer", user_pb2.ROLE_ADMIN: "admin"}

Email = Annotated[EmailText, Field(min_length=3, max_length=320)]
Password = Annotated[str, Field(min_length=1, max_length=1024)]
DisplayName = Annotated[str, Field(min_length=1, max_length=100)]


# --- shapes -----------------------------------------------------------------


class SavedAddress(Strict):
    id: str = ""
    label: Annotated[str, Field(max_length=50)] = ""
    is_default: bool = False
    address: Address


class User(BaseModel):
    id: Uuid
    email: EmailText
    display_name: str
    phone: str
    role: Role
    shipping_addresses: list[SavedAddress]
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, user: user_pb2.User) -> User:
        return cls(
            id=user.id,
            email=user.email,
            display_name=user.display_name,
            phone=user.phone,
            role=ROLE_OF_PROTO.get(user.role, "customer"),
            shipping_addresses=[
                SavedAddress(id=a.id, label=a.label, is_default=a.is_default, address=Address.of(a.address))
                for a in user.shipping_addresses
            ],
            created_at=optional_datetime_of(user.created_at),
            updated_at=optional_datetime_of(user.updated_at),
        )


class Tokens(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    access_token_expires_at: datetime | None
    refresh_token_expires_at: datetime | None

    @classmethod
    def of(cls, tokens: user_pb2.AuthTokens) -> Tokens:
        return cls(
            access_token=tokens.access_token,
            token_type=tokens.token_type or "Bearer",
            expires_in=tokens.expires_in,
            refresh_token=tokens.refresh_token,
            access_token_expires_at=optional_datetime_of(tokens.access_token_expires_at),
            refresh_token_expires_at=optional_datetime_of(tokens.refresh_token_expires_at),
        )


class Session(BaseModel):
    user: User
    tokens: Tokens


class RegisterBody(Strict):
    email: Email
    password: Password
    display_name: DisplayName


class LoginBody(Strict):
    email: Email
    password: Password


class RefreshBody(Strict):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class LogoutBody(Strict):
    refresh_token: Annotated[str, Field(max_length=512)] = ""
    all_sessions: bool = False


class ProfilePatch(Strict):
    """Only the fields present are changed; ``shipping_addresses`` replaces the list."""

    display_name: DisplayName | None = None
    phone: Annotated[str, Field(max_length=20)] | None = None
    shipping_addresses: Annotated[list[SavedAddress], Field(max_length=10)] | None = None


class PasswordChange(Strict):
    current_password: Password
    new_password: Password


class RoleChange(Strict):
    role: Role


class UsersQuery(PageQuery):
    query: Annotated[str, Field(max_length=320)] = ""
    role: Role | None = None


class UserPage(BaseModel):
    items: list[User]
    next_page_token: str


# --- /api/v1/auth -------------------------------------------------------------


@api.operation("POST", "/api/v1/auth/register", Contract(
    summary="Create an account and sign in", tag="auth",
    body=RegisterBody, response=Session, status=201, errors=(409, 429), limits=("register",),
))  # fmt: skip
async def register(request: Request, body: RegisterBody) -> Session:
    """Registrations per client address are limited (429 with `Retry-After`,
    `RateLimit-Policy` and `RateLimit`). While the limiter's store is down, or the
    service is busy hashing passwords, the answer is 503 with `Retry-After`."""
    reply = await clients(request).user.Register(
        user_pb2.RegisterRequest(
            email=body.email,
            password=body.password,
            display_name=body.display_name,
            client_address=client_address(request),
        ),
        **call_options(request),
    )
    return Session(user=User.of(reply.user), tokens=Tokens.of(reply.tokens))


@api.operation("POST", "/api/v1/auth/login", Contract(
    summary="Exchange email and password for tokens", tag="auth",
    body=LoginBody, response=Session, errors=(401, 429),
    headers=("X-Cart-Token",), limits=("login-address", "login-account-address", "login-account"),
))  # fmt: skip
async def login(request: Request, body: LoginBody) -> Session:
    """A wrong password and an unknown email get the same 401. Too many attempts
    from a client address, too many wrong passwords for an account from one address,
    or (a slower budget) for an account from anywhere get 429 with `Retry-After`,
    `RateLimit-Policy` and `RateLimit`. Only a wrong password counts as a failure.
    While the limiter's store is down, or the service is busy, the answer is 503
    with `Retry-After`: never tokens without a limit."""
    reply = await clients(request).user.Login(
        user_pb2.LoginRequest(email=body.email, password=body.password, client_address=client_address(request)),
        **call_options(request),
    )
    await merge_guest_cart(request, reply.tokens.access_token)
    return Session(user=User.of(reply.user), tokens=Tokens.of(reply.tokens))


async def merge_guest_cart(request: Request, access_token: str) -> None:
    """A guest cart sent along (``X-Cart-Token``) joins the user's cart at sign-in.
    Signing in never fails for it: a bad or expired guest token is only logged."""
    guest_token = request.headers.get("x-cart-token")
    if not guest_token:
        return
    options = call_options(request)
    options["metadata"] = [*options["metadata"], ("authorization", f"Bearer {access_token}")]
    try:
        await clients(request).cart.MergeGuestCart(
            cart_pb2.MergeGuestCartRequest(guest_cart_token=guest_token), **options
        )
    except grpc.aio.AioRpcError as exc:
        log.warning("guest cart not merged at sign-in", extra={"code": exc.code().name, "details": exc.details()})


@api.operation("POST", "/api/v1/auth/refresh", Contract(
    summary="Rotate a refresh token", tag="auth",
    body=RefreshBody, response=Tokens, errors=(401,),
))  # fmt: skip
async def refresh(request: Request, body: RefreshBody) -> Tokens:
    """Every refresh token works once. Presenting a used one again revokes its
    whole family: every token descended from the same login."""
    reply = await clients(request).user.Refresh(
        user_pb2.RefreshRequest(refresh_token=body.refresh_token), **call_options(request)
    )
    return Tokens.of(reply.tokens)


@api.operation("POST", "/api/v1/auth/logout", Contract(
    summary="End a session (or all of them)", tag="auth",
    body=LogoutBody, status=204, errors=(401,),
))  # fmt: skip
async def logout(request: Request, body: LogoutBody) -> None:
    """Ends the session of ``refresh_token``; with ``all_sessions`` (and a bearer
    token) every session of the caller."""
    if not body.refresh_token and not body.all_sessions:
        raise HttpProblemError(400, "send the refresh_token of the session to end, or all_sessions: true")
    await clients(request).user.Logout(
        user_pb2.LogoutRequest(refresh_token=body.refresh_token, all_sessions=body.all_sessions),
        **call_options(request),
    )


# --- /api/v1/users --------------------------------------------------------------


@api.operation(
    "GET", "/api/v1/users/me", Contract(summary="The caller's account", tag="users", response=User, auth=True)
)
async def get_me(request: Request) -> User:
    reply = await clients(request).user.GetMe(user_pb2.GetMeRequest(), **call_options(request))
    return User.of(reply.user)


@api.operation("PATCH", "/api/v1/users/me", Contract(
    summary="Change the caller's profile", tag="users",
    body=ProfilePatch, response=User, auth=True,
))  # fmt: skip
async def update_me(request: Request, body: ProfilePatch) -> User:
    present = body.model_dump(exclude_unset=True)
    if not present:
        raise HttpProblemError(400, "send at least one of display_name, phone, shipping_addresses")
    profile = user_pb2.Profile(
        display_name=body.display_name or "",
        phone=body.phone or "",
        shipping_addresses=[
            user_pb2.SavedAddress(id=a.id, label=a.label, is_default=a.is_default, address=a.address.to_proto())
            for a in body.shipping_addresses or []
        ],
    )
    reply = await clients(request).user.UpdateProfile(
        user_pb2.UpdateProfileRequest(profile=profile, update_mask=FieldMask(paths=sorted(present))),
        **call_options(request),
    )
    return User.of(reply.user)


@api.operation("POST", "/api/v1/users/me/password", Contract(
    summary="Change the password; other sessions end", tag="users",
    body=PasswordChange, response=Tokens, auth=True,
))  # fmt: skip
async def change_password(request: Request, body: PasswordChange) -> Tokens:
    """Answers fresh tokens for this client; every other session is revoked."""
    reply = await clients(request).user.ChangePassword(
        user_pb2.ChangePasswordRequest(current_password=body.current_password, new_password=body.new_password),
        **call_options(request),
    )
    return Tokens.of(reply.tokens)


@api.operation("GET", "/api/v1/users", Contract(
    summary="List accounts (admin)", tag="users",
    query=UsersQuery, response=UserPage, auth=True, errors=(403,),
))  # fmt: skip
async def list_users(request: Request, query: UsersQuery) -> UserPage:
    reply = await clients(request).user.ListUsers(
        user_pb2.ListUsersRequest(
            page=query.page(),
            query=query.query,
            role=ROLE_TO_PROTO[query.role] if query.role else user_pb2.ROLE_UNSPECIFIED,
        ),
        **call_options(request),
    )
    return UserPage(items=[User.of(user) for user in reply.users], next_page_token=reply.page.next_page_token)


@api.operation("PUT", "/api/v1/users/{user_id}/role", Contract(
    summary="Change an account's role (admin)", tag="users",
    body=RoleChange, response=User, auth=True, errors=(403, 404, 409),
))  # fmt: skip
async def set_role(request: Request, body: RoleChange) -> User:
    """Demoting the last admin is refused (409)."""
    reply = await clients(request).user.SetUserRole(
        user_pb2.SetUserRoleRequest(user_id=request.path_params["user_id"], role=ROLE_TO_PROTO[body.role]),
        **call_options(request),
    )
    return User.of(reply.user)
