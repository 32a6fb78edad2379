"""The use cases of sessions: sign-up, sign-in, refresh-token rotation, sign-out,
password changes (which end every other session) and the token key set.

Passwords go through the argon2 adapter (passwords.py), access tokens are signed
with keys.py, and sign-ups and sign-ins spend the budgets of ratelimit.py.  Rules
come from the domain (user_svc/domain/sessions.py).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from common.auth import Principal, require_user
from common.errors import NotFoundError
from user_svc.accounts import Accounts
from user_svc.domain import accounts as account_rules, sessions as rules
from user_svc.domain.accounts import User
from user_svc.domain.sessions import ClientOrigin, IssuedTokens, KeySet, NewRefreshToken, RefreshVerdict, SignedIn
from user_svc.keys import TokenKeys
from user_svc.passwords import Passwords
from user_svc.ratelimit import SignInLimiter
from user_svc.store import Store

log = logging.getLogger("shop.user")


@dataclass(frozen=True)
class TokenPolicy:
    refresh_ttl: int
    jwks_max_age: int


class Sessions:
    def __init__(
        self,
        *,
        store: Store,
        accounts: Accounts,
        passwords: Passwords,
        limiter: SignInLimiter,
        keys: TokenKeys,
        policy: TokenPolicy,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.passwords = passwords
        self.limiter = limiter
        self.keys = keys
        self.policy = policy

    # -- tokens
    def _new_refresh(self) -> tuple[str, NewRefreshToken]:
        token = rules.new_refresh_token()
        expires = rules.refresh_expiry(datetime.now(UTC), self.policy.refresh_ttl)
        return token, NewRefreshToken(token_hash=rules.hash_refresh_token(token), expires_at=expires)

    def _issue(self, user: User, refresh_token: str, refresh: NewRefreshToken) -> IssuedTokens:
        access, expires = self.keys.signer.sign(str(user.id), user.role)
        return IssuedTokens(
            access_token=access,
            expires_in=self.keys.signer.ttl,
            access_expires_at=datetime.fromtimestamp(expires, UTC),
            refresh_token=refresh_token,
            refresh_expires_at=refresh.expires_at,
        )

    def key_set(self) -> KeySet:
        """The public keys of access tokens: any shop process may read them."""
        return KeySet(jwks_json=self.keys.jwks_json, max_age=self.policy.jwks_max_age)

    # -- sign-up and sign-in
    async def register(self, *, email: str, password: str, display_name: str, origin: ClientOrigin) -> SignedIn:
        """A new customer account, signed in."""
        registration = account_rules.validate_registration(email, password, display_name)
        await self.limiter.register(origin.bucket())
        password_hash = await self.passwords.hash(password)
        token, refresh = self._new_refresh()
        async with self.store.unit_of_work() as work:  # the account and its first session
            user = await work.insert_user(
                email=registration.email, password_hash=password_hash, display_name=registration.display_name
            )
            await work.add_refresh_token(user.id, refresh)
        log.info("registered", extra={"user_id": str(user.id)})
        return SignedIn(user=user, tokens=self._issue(user, token, refresh))

    async def login(self, *, email: str, password: str, origin: ClientOrigin) -> SignedIn:
        """A new session for the right password, within the sign-in limits."""
        email = rules.check_sign_in(email, password)
        address = origin.bucket()
        await self.limiter.begin_login(email, address)
        user = await self.store.user_by_email(email) if account_rules.email_problem(email) is None else None
        # An unknown email costs a verification too: same time, same answer.
        if not await self.passwords.verify(user.password_hash if user else None, password) or user is None:
            # Only a wrong password counts as a failure (not a store or hashing failure: those raised above).
            await self.limiter.wrong_password(email, address)
            raise rules.wrong_password()
        if self.passwords.needs_rehash(user.password_hash):
            await self.store.replace_password_hash(user.id, user.password_hash, await self.passwords.hash(password))
        token, refresh = self._new_refresh()
        await self.store.add_refresh_token(user.id, refresh)
        return SignedIn(user=user, tokens=self._issue(user, token, refresh))

    # -- sessions
    async def refresh(self, refresh_token: str) -> IssuedTokens:
        """Exchange a refresh token for a new one of the same session.

        The stored token is locked, so of two concurrent rotations of one token
        only the first succeeds; the second finds it used.  Presenting a used
        token again is reuse: the whole session is revoked (committed) and the
        call fails with REFRESH_TOKEN_REUSED.
        """
        presented = rules.presented_refresh_token(refresh_token)
        token, refresh = self._new_refresh()
        async with self.store.unit_of_work() as work:
            stored = await work.refresh_token_for_update(rules.hash_refresh_token(presented))
            if stored is None:
                raise rules.invalid_refresh()
            verdict = rules.judge_refresh(stored, datetime.now(UTC))
            if verdict is RefreshVerdict.INVALID:
                raise rules.invalid_refresh()
            if verdict is RefreshVerdict.VALID:
                user = await work.user_by_id(stored.user_id)
                if user is None:
                    raise rules.invalid_refresh()
                await work.mark_used(stored.id)
                await work.add_refresh_token(user.id, dataclasses.replace(refresh, family_id=stored.family_id))
                return self._issue(user, token, refresh)
            revoked = await work.revoke_family(stored.family_id)
            log.warning(
                "refresh token reuse: family revoked",
                extra={"user_id": str(stored.user_id), "family_id": str(stored.family_id), "revoked": revoked},
            )
        # Outside the transaction: the session's revocation is committed first.
        raise rules.reused_refresh()

    async def logout(self, refresh_token: str, *, all_sessions: bool) -> None:
        """End the session of a refresh token, or (``all_sessions``) every session
        of the signed-in caller."""
        if all_sessions:
            user = await self.accounts.me(require_user())
            await self.store.revoke_all_sessions(user.id)
            return
        presented = rules.session_to_end(refresh_token)
        if presented is not None:
            await self.store.revoke_session(rules.hash_refresh_token(presented))

    async def change_password(self, principal: Principal, *, current_password: str, new_password: str) -> IssuedTokens:
        """A new password for the right current one; every session ends and one new
        session begins, all or nothing."""
        user = await self.accounts.me(principal)
        rules.check_password_change(user, current_password, new_password)
        # Per account only: ChangePassword does not carry the client's address,
        # and behind the edge the gRPC peer is the edge itself.
        await self.limiter.begin_login(user.email, None)
        if not await self.passwords.verify(user.password_hash, current_password):
            await self.limiter.wrong_password(user.email, None)
            raise rules.wrong_current_password()
        new_hash = await self.passwords.hash(new_password)
        token, refresh = self._new_refresh()
        async with self.store.unit_of_work() as work:
            if not await work.set_password(user.id, new_hash):
                raise NotFoundError("the account no longer exists")
            await work.revoke_sessions(user.id)
            await work.add_refresh_token(user.id, refresh)
        log.info("password changed; other sessions revoked", extra={"user_id": str(user.id)})
        return self._issue(user, token, refresh)

    async def purge_expired(self) -> int:
        """Forget refresh tokens that expired a while ago; how many."""
        return await self.store.purge_refresh_tokens(datetime.now(UTC) - rules.PURGE_AFTER)
