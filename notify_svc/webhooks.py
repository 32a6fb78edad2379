"""The use cases of webhooks: registering, listing and deleting a user's
webhooks, and listing a webhook's deliveries.  (Delivering them over HTTP is
``webhook_delivery.py``.)"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import NotFoundError, ResourceExhaustedError
from common.paging import page_size
from common.ratelimit import Limiter, Window
from notify_svc.domain import feed
from notify_svc.domain.webhooks import (
    Delivery,
    StatusFilter,
    Webhook,
    WebhookPolicy,
    owned,
    validate_registration,
    webhook_id,
)
from notify_svc.store import Store
from notify_svc.store.limits import now_us
from notify_svc.webhook_delivery import check_target


@dataclass(frozen=True)
class Registration:
    """What a user asks to register: ``kinds`` None where a value is no kind."""

    url: str
    description: str
    kinds: Sequence[str | None]


@dataclass(frozen=True)
class DeliveryPage:
    deliveries: list[Delivery]
    next_page_token: str


class Webhooks:
    def __init__(
        self,
        store: Store,
        *,
        policy: WebhookPolicy,
        limiter: Limiter | None = None,
        window: Window | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        # Webhook registrations per user (a window).
        self.limiter = limiter
        self.window = window

    async def register(self, user: str, registration: Registration) -> Webhook:
        """Register a webhook for ``user``; the webhook, with its signing secret."""
        kinds, description = validate_registration(registration.kinds, registration.description)
        with self.store.available():
            if self.limiter is not None and self.window is not None:
                await self.limiter.hit(self.window, user, "you registered too many webhooks lately; try again later")
            target = (await check_target(registration.url, self.policy)).target
            hook = Webhook(
                id=str(uuid.uuid4()),
                user_id=user,
                url=target.url,
                description=description,
                kinds=kinds,
                secret="whsec_" + secrets.token_urlsafe(32),
                created_at_us=now_us(),
            )
            if not await self.store.webhooks.add(hook):
                limit = self.store.limits.webhook_limit
                raise ResourceExhaustedError(
                    f"you have {limit} webhooks already; delete one first",
                    reason="LIMIT_REACHED",
                    metadata={"limit": str(limit)},
                )
        return hook

    async def of_user(self, user: str) -> list[Webhook]:
        with self.store.available():
            return await self.store.webhooks.of_user(user)

    async def delete(self, user: str, ident: str) -> None:
        with self.store.available():
            if not await self.store.webhooks.delete(user, webhook_id(ident)):
                raise NotFoundError("no such webhook")

    async def deliveries(self, user: str, ident: str, *, size: int, token: str, status: StatusFilter) -> DeliveryPage:
        """A webhook's deliveries, newest first, optionally of one status."""
        hook_id = webhook_id(ident)
        with self.store.available():
            owned(await self.store.webhooks.get(hook_id), user)
            limit = page_size(size)
            wanted = status.checked()
            scope = feed.deliveries_scope(hook_id, wanted)
            before = feed.page_position(token, scope)
            found, next_before = await self.store.deliveries.page(hook_id, before=before, limit=limit, status=wanted)
        return DeliveryPage(found, feed.page_token(next_before, scope))
