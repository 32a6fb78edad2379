"""Webhooks over HTTP: checking a target, and the two background workers that deliver.

* :class:`Fanout` reads the ``notify:webhook-fanout`` stream (written by the
  same Lua step that stores a notification, so nothing stored is missed) as a
  Redis consumer group, and creates one delivery per interested webhook
  (idempotently: the delivery id is derived from notification, position and
  webhook).  Entries a crashed worker left unacknowledged are reclaimed.
* :class:`Deliverer` claims due deliveries from the ``notify:webhook-due``
  schedule (a lease: a crashed worker's claims come back), POSTs them signed,
  and records the outcome: succeeded, retrying at ``base * 2^(n-1)`` seconds,
  or failed after the last attempt.  Neither worker runs on the consumer's path.

A receiver may see a delivery twice (a worker dying between the POST and the
record); ``X-Shop-Delivery`` is the id to deduplicate on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry import trace
from prometheus_client import Counter

from common.errors import FieldViolation, InvalidArgumentError
from common.validation import VALIDATION_FAILED
from common.waits import wait_for_either, wait_or_stop
from notify_svc import convert
from notify_svc.domain import webhooks as domain
from notify_svc.domain.webhooks import FAILED, FINAL, SUCCEEDED, Delivery, RetryPolicy, Webhook
from notify_svc.store import Store
from notify_svc.store.deliveries import FanoutEntry
from notify_svc.store.limits import now_us

log = logging.getLogger("shop.notify.webhooks")
tracer = trace.get_tracer("shop.notify")

ATTEMPTS = Counter("notify_webhook_attempts_total", "Webhook POSTs, by outcome (succeeded, error)", ["outcome"])
DELIVERED = Counter(
    "notify_notifications_delivered_total", "Notifications delivered, by channel (live stream, webhook)", ["channel"]
)
FAILED_TOTAL = Counter(
    "notify_webhook_failures_total", "Webhook deliveries recorded as failed after their last attempt"
)

USER_AGENT = "shop-webhooks/1"


async def resolve(host: str, port: int) -> list[domain.IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))


@dataclass(frozen=True)
class CheckedTarget:
    """A webhook URL and the one address it was checked at: the POST goes there."""

    target: domain.WebhookTarget
    address: domain.IPAddress

    def request(self) -> tuple[httpx.URL, str, dict[str, Any]]:
        """The URL to connect to (the address in place of the name), the Host
        header, and the TLS server name (SNI, and the name the certificate is
        checked against): the original name, so no second lookup happens."""
        original = httpx.URL(self.target.url)
        pinned = original.copy_with(host=str(self.address))
        return pinned, original.netloc.decode("ascii"), {"sni_hostname": original.host}


async def check_target(url: str, policy: domain.WebhookPolicy) -> CheckedTarget:
    """A webhook URL that may be used now: well-formed, on an allowed port, and
    resolving (once) only to allowed addresses; the address to connect to."""
    target = domain.validate_webhook_url(url, policy)
    try:
        addresses: list[domain.IPAddress] = [ipaddress.ip_address(target.host)]
    except ValueError:
        addresses = await resolve(target.host, target.port)
    if not addresses:
        raise InvalidArgumentError(
            "the webhook URL's host does not resolve",
            [FieldViolation("url", f"{target.host} has no address")],
            reason=VALIDATION_FAILED,
        )
    if not all(policy.address_allowed(address) for address in addresses):
        raise domain.forbidden_host(target.host)
    return CheckedTarget(target, addresses[0])


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Fanout:
    def __init__(self, store: Store, *, wake: asyncio.Event, reclaim_idle: float = 60.0) -> None:
        self.store = store
        self.wake = wake
        self.reclaim_idle = reclaim_idle
        self.name = worker_name()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        last_reclaim = 0.0
        grouped = False
        while not stop.is_set():
            try:
                if not grouped:
                    await self.store.deliveries.ensure_fanout_group()
                    grouped = True
                if time.monotonic() - last_reclaim > self.reclaim_idle / 2:
                    last_reclaim = time.monotonic()
                    await self.handle(
                        await self.store.deliveries.reclaim_fanout(
                            self.name, min_idle_ms=int(self.reclaim_idle * 1000), count=100
                        )
                    )
                await self.handle(await self.store.deliveries.read_fanout(self.name, count=100, block_ms=500))
                backoff = 0.2
            except Exception as exc:
                log.warning("webhook fan-out failed; retrying in %.1fs", backoff, exc_info=exc)
                grouped = False
                await wait_or_stop(stop, backoff)
                backoff = min(backoff * 2, 5.0)

    async def handle(self, entries: list[FanoutEntry]) -> None:
        created = 0
        for entry in entries:
            webhooks = self.store.webhooks
            hooks = await (webhooks.of_user(entry.user_id) if entry.user_id else webhooks.every())
            hooks = [hook for hook in hooks if domain.wants(hook.kinds, entry.kind)]
            if not hooks:
                continue
            note = await self.store.notifications.notification_document(entry.user_id, entry.notification_id)
            if note is None:  # fell off the feed already
                continue
            body = convert.webhook_body(note)
            for hook in hooks:
                delivery = domain.delivery_id(entry.notification_id, entry.position, hook.id)
                created += await self.store.deliveries.create(delivery, hook.id, entry.notification_id, body)
        await self.store.deliveries.ack_fanout([entry.entry_id for entry in entries])
        if created:
            self.wake.set()


class Deliverer:
    def __init__(
        self,
        store: Store,
        *,
        wake: asyncio.Event,
        policy: domain.WebhookPolicy,
        retry: RetryPolicy,
        timeout: float,
        concurrency: int,
    ) -> None:
        self.store = store
        self.wake = wake
        self.policy = policy
        self.retry = retry
        self.timeout = timeout
        self.concurrency = concurrency
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        # No connection is kept: each POST goes to the address just checked for its
        # name (a kept one would carry another name's requests to it).  No redirect
        # is followed, and no proxy from the environment is used (trust_env=False).
        limits = httpx.Limits(max_connections=self.concurrency * 2, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            timeout=self.timeout, follow_redirects=False, limits=limits, trust_env=False
        ) as client:
            backoff = 0.2
            try:
                while not stop.is_set():
                    self.wake.clear()
                    try:
                        wait = await self._claim(client)
                        backoff = 0.2
                    except Exception as exc:
                        log.warning("webhook deliveries failed; retrying in %.1fs", backoff, exc_info=exc)
                        wait = backoff
                        backoff = min(backoff * 2, 5.0)
                    await wait_for_either(stop, self.wake, wait)
            finally:
                if self._running:  # let attempts in flight record their outcome
                    await asyncio.wait(self._running, timeout=self.timeout + 1)
                for task in self._running:
                    task.cancel()

    async def _claim(self, client: httpx.AsyncClient) -> float:
        """Start the due attempts there is room for; return how long to wait."""
        free = self.concurrency - len(self._running)
        if free > 0:
            for delivery_id in await self.store.deliveries.claim_due(lease=self.timeout + 30, limit=free):
                task = asyncio.create_task(self._attempt(client, delivery_id))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            if len(self._running) >= self.concurrency:
                return 0.05
        else:
            return 0.05
        due = await self.store.deliveries.next_due_in()
        return 1.0 if due is None else min(max(due, 0.01), 1.0)

    async def _attempt(self, client: httpx.AsyncClient, delivery_id: str) -> None:
        try:
            deliveries = self.store.deliveries
            delivery = await deliveries.get(delivery_id)
            hook = await self.store.webhooks.get(delivery.webhook_id) if delivery else None
            if delivery is None or hook is None:  # deleted meanwhile: pending retries are dropped
                await deliveries.drop(delivery_id)
                return
            if delivery.status in FINAL:  # a stale claim: keep the record
                await deliveries.unschedule(delivery_id)
                return
            attempt = delivery.attempts + 1
            status, error = await self._post(client, hook, delivery, attempt)
            outcome = self.retry.outcome(attempt, status, error, now_us=now_us())
            ATTEMPTS.labels("succeeded" if outcome.status == SUCCEEDED else "error").inc()
            if outcome.status == SUCCEEDED:
                DELIVERED.labels("webhook").inc()
            elif outcome.status == FAILED:
                FAILED_TOTAL.inc()
                facts = {"delivery_id": delivery.id, "webhook_id": hook.id, "attempts": attempt}
                log.warning("webhook delivery failed for good", extra={**facts, "error": outcome.error})
            await deliveries.record_attempt(delivery, outcome)
        except Exception as exc:
            log.warning("webhook attempt could not be recorded", exc_info=exc, extra={"delivery_id": delivery_id})

    async def _post(
        self, client: httpx.AsyncClient, hook: Webhook, delivery: Delivery, attempt: int
    ) -> tuple[int | None, str | None]:
        """POST ``delivery`` to ``hook``: (HTTP status, None) or (None, what went wrong)."""
        webhook_id, body = hook.id, delivery.body
        try:  # again: the name may resolve elsewhere now than at registration
            checked = await check_target(hook.url, self.policy)
        except InvalidArgumentError as exc:
            return None, exc.violations[0].description if exc.violations else exc.message
        pinned, host, extensions = checked.request()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Shop-Timestamp": str(stamp),
            "X-Shop-Signature": domain.sign(hook.secret, stamp, body),
            "X-Shop-Delivery": delivery.id,
            "X-Shop-Webhook": webhook_id,
            "X-Shop-Attempt": str(attempt),
            "Host": host,
        }
        with tracer.start_as_current_span("webhook POST", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute("http.request.method", "POST")
            span.set_attribute("shop.webhook.id", webhook_id)
            span.set_attribute("shop.webhook.attempt", attempt)
            try:
                async with client.stream(
                    "POST", pinned, content=body, headers=headers, extensions=extensions
                ) as response:
                    span.set_attribute("http.response.status_code", response.status_code)
                    return response.status_code, None  # the body is not read: only the status counts
            except httpx.TimeoutException:
                return None, "timeout"
            except httpx.HTTPError as exc:
                return None, f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
