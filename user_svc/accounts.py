"""The use cases of accounts: the caller's own profile and saved addresses, reading
other accounts, the user list, roles, and making admins (create-admin and the
configured bootstrap admin).

Rules come from the domain (user_svc/domain/accounts.py); steps that must hold
together run in one unit of work of the store.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from common import paging
from common.auth import Principal
from common.errors import FieldViolation
from common.validation import invalid, parse_uuid, require_uuid
from user_svc.domain import accounts as rules
from user_svc.domain.accounts import ADMIN, AdminOutcome, Profile, User, UserBatch, UserCursor, UserPage, UserQuery
from user_svc.passwords import Passwords
from user_svc.store import Store, Work

log = logging.getLogger("shop.user")

BOOTSTRAP_EMAIL = "SHOP_BOOTSTRAP_ADMIN_EMAIL"
BOOTSTRAP_PASSWORD = "SHOP_BOOTSTRAP_ADMIN_PASSWORD"


class Accounts:
    def __init__(self, *, store: Store, passwords: Passwords) -> None:
        self.store = store
        self.passwords = passwords

    # -- the caller's own account
    async def me(self, principal: Principal) -> User:
        """The account of a signed-in caller."""
        user_id = parse_uuid(principal.user_id)
        user = await self.store.user_by_id(user_id) if user_id else None
        if user is None:
            raise rules.no_account()
        return user

    async def update_profile(self, principal: Principal, paths: Sequence[str], wanted: Profile) -> User:
        """The fields of the caller's profile named in ``paths`` set from ``wanted``,
        under a row lock (so concurrent edits of the address list never lose one
        another's ids)."""
        rules.check_update_mask(paths)  # before the database is touched
        user_id = parse_uuid(principal.user_id)
        if user_id is None:
            raise rules.no_account()
        async with self.store.unit_of_work() as work:
            current = await work.user_for_update(user_id)
            if current is None:
                raise rules.no_account()
            return await work.update_profile(user_id, rules.apply_profile_update(current.profile, paths, wanted))

    # -- reading accounts
    async def get_user(self, principal: Principal, user_id: str) -> User:
        rules.check_may_read(principal, [user_id.strip()])
        user = await self.store.user_by_id(require_uuid(user_id, "user_id", "a user id"))
        if user is None:
            raise rules.no_such_user()
        return user

    async def batch_get_users(self, principal: Principal, user_ids: Sequence[str]) -> UserBatch:
        """The accounts found, in request order, and the ids of those not found."""
        ids = rules.batch_ids(user_ids)
        rules.check_may_read(principal, ids)
        parsed = {raw: parse_uuid(raw) for raw in ids}
        found = {user.id: user for user in await self.store.users_by_ids([u for u in parsed.values() if u])}
        batch = UserBatch(users=[], missing_ids=[])
        for raw, parsed_id in parsed.items():
            user = found.get(parsed_id) if parsed_id else None
            if user is None:
                batch.missing_ids.append(raw)
            else:
                batch.users.append(user)
        return batch

    # -- administration
    async def list_users(self, query: UserQuery) -> UserPage:
        """Newest first, one page; the page token is bound to the query and role."""
        size = paging.page_size(query.page_size)
        text = rules.list_query(query.query)
        scope = rules.list_scope(text, query.role)
        after = rules.decode_cursor(query.page_token, scope)
        rows = await self.store.list_users(limit=size + 1, after=after, query=text, role=query.role)
        page, more = rows[:size], len(rows) > size
        next_token = rules.encode_cursor(UserCursor(page[-1].created_at, page[-1].id), scope) if more and page else ""
        return UserPage(users=page, next_page_token=next_token)

    async def set_role(self, admin: Principal, user_id: uuid.UUID, role: str) -> User:
        """Change a role; the last admin is never demoted (role changes are
        serialized, so two admins demoting each other cannot leave none)."""
        async with self.store.unit_of_work() as work:
            await work.lock_role_changes()
            current = await work.user_for_update(user_id)
            if current is None:
                raise rules.no_such_user()
            user = current
            if current.role != role:
                if rules.is_demotion(current, role):
                    rules.check_demotion(await work.count_admins())
                user = await work.update_role(user_id, role)
        log.info("role set", extra={"user_id": str(user.id), "role": role, "by": admin.user_id})
        return user

    # -- admins made by operators
    async def needs_admin_password(self, email: str, *, reset_password: bool) -> bool:
        """Whether making ``email`` an admin needs a password: for a new account, or to reset one."""
        return reset_password or await self.store.user_by_email(email) is None

    async def ensure_admin(
        self, *, email: str, display_name: str, password: str | None, promote: bool
    ) -> tuple[User, AdminOutcome]:
        """Create an admin, or (with ``promote``) make the existing account one, and
        set its password when one is given (its sessions end then)."""
        password_hash = None if password is None else await self.passwords.hash(password)
        async with self.store.unit_of_work() as work:
            current = await work.user_by_email_for_update(email)
            outcome = rules.admin_outcome(current, new_password=password_hash is not None, promote=promote)
            if current is None:
                assert password_hash is not None  # admin_outcome: no account and no password is NOT_FOUND
                user = await work.insert_user(
                    email=email, password_hash=password_hash, display_name=display_name, role=ADMIN
                )
            elif outcome in {AdminOutcome.PROMOTED, AdminOutcome.UPDATED}:
                user = await self._make_admin(work, current, password_hash)
            else:
                user = current
        return user, outcome

    @staticmethod
    async def _make_admin(work: Work, current: User, password_hash: str | None) -> User:
        if password_hash is not None:
            await work.revoke_sessions(current.id)
        return await work.update_role(current.id, ADMIN, password_hash=password_hash)

    async def bootstrap_admin(self, email: str, password: str) -> None:
        """The configured first admin, created when missing (never promoting an
        existing customer).  A bad setting is INVALID_ARGUMENT naming it."""
        email = rules.validate_email(email, BOOTSTRAP_EMAIL)
        existing = await self.store.user_by_email(email)
        if existing is not None:
            if existing.role != ADMIN:
                log.warning(
                    "the bootstrap admin email belongs to a customer account; not promoting it "
                    "(use `python -m user_svc create-admin` to do that on purpose)"
                )
            return
        problem = rules.password_problem(password, email)
        if problem:
            raise invalid(FieldViolation(BOOTSTRAP_PASSWORD, f"is {problem}"))
        user, outcome = await self.ensure_admin(
            email=email, display_name="Administrator", password=password, promote=False
        )
        log.info("bootstrap admin", extra={"user_id": str(user.id), "outcome": outcome.value})
