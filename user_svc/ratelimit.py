"""Sign-up and sign-in limits, on the shared limiter (common/ratelimit.py).

- registration: attempts per client address;
- login, every attempt per client address;
- login, failed attempts per (account, client address) pair: an attacker
  hammering an account from one address spends only that pair's budget;
- login, failed attempts per account, a slower budget (the defaults let one
  address spend at most about half of it), against guessing from many addresses.

Only a wrong password is a failed attempt: budgets of failures are checked before
the password is looked at and spent after it was found wrong, so an attempt that
failed for another reason (the database down, the service busy) costs nothing.
Attempts admitted together may so overrun a failure budget by the number of
passwords verified at once (user_svc's bounded hashing queue caps it).

Every budget here fails closed: while Redis is unreachable sign-in and sign-up
answer UNAVAILABLE with a retry delay, never tokens without a limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.ratelimit import Limiter, Window, hashed


@dataclass(frozen=True)
class SignInLimits:
    register_address: Window
    login_address: Window
    login_pair: Window
    login_account: Window


class SignInLimiter:
    def __init__(self, limiter: Limiter, limits: SignInLimits) -> None:
        self._limiter = limiter
        self.limits = limits

    async def register(self, address: str) -> None:
        """Spend one registration of ``address`` or raise RESOURCE_EXHAUSTED."""
        await self._limiter.hit(
            self.limits.register_address,
            address,
            "too many accounts registered from this address; try again later",
            fail_closed="sign-up",
        )

    async def begin_login(self, email: str, address: str | None) -> None:
        """Admit a login attempt (before the password is checked) or raise RESOURCE_EXHAUSTED.
        ``address`` None checks the account's budget only (a password check by a
        signed-in caller: ChangePassword knows no client address)."""
        account = hashed(email)  # no email addresses in Redis
        if address is None:
            await self._limiter.check(
                self.limits.login_account,
                account,
                "too many failed sign-in attempts for this account; try again later",
                fail_closed="sign-in",
            )
            return
        await self._limiter.check(
            self.limits.login_pair,
            f"{account}:{address}",
            "too many failed sign-in attempts for this account from this address; try again later",
            fail_closed="sign-in",
        )
        await self._limiter.check(
            self.limits.login_account,
            account,
            "too many failed sign-in attempts for this account; try again later",
            fail_closed="sign-in",
        )
        await self._limiter.hit(
            self.limits.login_address,
            address,
            "too many sign-in attempts from this address; try again later",
            fail_closed="sign-in",
        )

    async def wrong_password(self, email: str, address: str | None) -> None:
        """The password was wrong: one failure for the pair and for the account."""
        account = hashed(email)
        if address is not None:
            await self._limiter.spend(self.limits.login_pair, f"{account}:{address}")
        await self._limiter.spend(self.limits.login_account, account)
