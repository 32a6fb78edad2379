"""Proto ⇄ domain for UserService: users, profiles, saved addresses, roles, tokens,
the user list, and where a sign-in comes from.  Timestamps and addresses go
through common/convert.py."""

from __future__ import annotations

import uuid

from shop.common.v1 import paging_pb2
from shop.user.v1 import user_pb2

from common import convert
from common.errors import FieldViolation
from common.grpc_server import Context
from common.identity import current_caller
from common.validation import invalid, require_uuid
from user_svc.domain.accounts import ADMIN, CUSTOMER, Profile, SavedAddress, User, UserPage, UserQuery
from user_svc.domain.sessions import ClientOrigin, IssuedTokens

# --- roles ---------------------------------------------------------------------------

_ROLE_BY_PROTO: dict[int, str] = {user_pb2.ROLE_CUSTOMER: CUSTOMER, user_pb2.ROLE_ADMIN: ADMIN}
_PROTO_BY_ROLE: dict[str, user_pb2.Role.ValueType] = {CUSTOMER: user_pb2.ROLE_CUSTOMER, ADMIN: user_pb2.ROLE_ADMIN}


def role_from_proto(value: int, path: str = "role") -> str:
    role = _ROLE_BY_PROTO.get(value)
    if role is None:
        raise invalid(FieldViolation(path, "must be ROLE_CUSTOMER or ROLE_ADMIN"))
    return role


def role_filter_from_proto(value: int, path: str = "role") -> str | None:
    """A list filter: ROLE_UNSPECIFIED means every role."""
    if value == user_pb2.ROLE_UNSPECIFIED:
        return None
    return role_from_proto(value, path)


def role_to_proto(role: str) -> user_pb2.Role.ValueType:
    return _PROTO_BY_ROLE.get(role, user_pb2.ROLE_UNSPECIFIED)


# --- users and profiles -------------------------------------------------------------------


def saved_address_to_proto(item: SavedAddress) -> user_pb2.SavedAddress:
    return user_pb2.SavedAddress(
        id=item.id, label=item.label, is_default=item.is_default, address=convert.address_to_proto(item.address)
    )


def saved_address_from_proto(item: user_pb2.SavedAddress) -> SavedAddress:
    return SavedAddress(
        id=item.id, label=item.label, is_default=item.is_default, address=convert.address_from_proto(item.address)
    )


def profile_from_proto(message: user_pb2.Profile) -> Profile:
    return Profile(
        display_name=message.display_name,
        phone=message.phone,
        shipping_addresses=tuple(saved_address_from_proto(item) for item in message.shipping_addresses),
    )


def user_to_proto(user: User) -> user_pb2.User:
    return user_pb2.User(
        id=str(user.id),
        email=user.email,
        display_name=user.display_name,
        phone=user.phone,
        role=role_to_proto(user.role),
        shipping_addresses=[saved_address_to_proto(item) for item in user.shipping_addresses],
        created_at=convert.timestamp(user.created_at),
        updated_at=convert.timestamp(user.updated_at),
    )


# --- administration -----------------------------------------------------------------------


def users_query(request: user_pb2.ListUsersRequest) -> UserQuery:
    return UserQuery(
        page_size=request.page.page_size,
        page_token=request.page.page_token,
        query=request.query,
        role=role_filter_from_proto(request.role),
    )


def users_page_to_proto(page: UserPage) -> user_pb2.ListUsersResponse:
    return user_pb2.ListUsersResponse(
        users=[user_to_proto(user) for user in page.users],
        page=paging_pb2.PageResponse(next_page_token=page.next_page_token),
    )


def role_change(request: user_pb2.SetUserRoleRequest) -> tuple[uuid.UUID, str]:
    """The account and its new role."""
    return require_uuid(request.user_id, "user_id", "a user id"), role_from_proto(request.role)


# --- sessions -------------------------------------------------------------------------------


def tokens_to_proto(tokens: IssuedTokens) -> user_pb2.AuthTokens:
    return user_pb2.AuthTokens(
        access_token=tokens.access_token,
        token_type="Bearer",
        expires_in=tokens.expires_in,
        access_token_expires_at=convert.timestamp(tokens.access_expires_at),
        refresh_token=tokens.refresh_token,
        refresh_token_expires_at=convert.timestamp(tokens.refresh_expires_at),
    )


def origin(client_address: str, context: Context) -> ClientOrigin:
    """Where a sign-in or sign-up comes from: the calling process, the end user's
    address it reports, and the gRPC peer."""
    return ClientOrigin(caller=current_caller.get(), given=client_address, peer=context.peer() or "")
