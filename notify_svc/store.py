"""Everything notify_svc keeps, in Redis: the only module that knows the keys.

Key layout (``{u}`` a user id, ``{w}`` a webhook id); scores are positions
unless noted:

notify:seq                          string  global position counter (INCR): orders every feed and stream
notify:event:{event id}             string  "this event was applied" (TTL dedupe_ttl)
notify:user:{u}:feed                zset    notification id -> position, capped at feed_cap
notify:user:{u}:unread              zset    the unread part of the feed, same scores
notify:user:{u}:docs                hash    notification id -> JSON document
notify:user:{u}:fold:{comment id}   string  id of the like notification still folding (TTL: the window)
notify:user:{u}:ann-read            set     announcement ids this user marked read one by one
notify:user:{u}:ann-read-upto       string  position up to which every announcement is read (MarkAllRead)
notify:announcements                zset    announcement id -> position: stored once, merged into every feed
notify:announcements:docs           hash    announcement id -> JSON document
notify:live:user:{u}                pub/sub "<position> <JSON>" for each notification stored for {u}
notify:live:announcements           pub/sub the same for announcements
notify:webhook:{w}                  hash    a webhook: url, owner, kinds, secret, delivery health
notify:user:{u}:webhooks            set     the user's webhook ids
notify:webhooks                     set     every webhook id (announcements go to all)
notify:webhook-fanout               stream  stored notifications for the webhook fan-out (group "fanout")
notify:delivery:{id}                hash    one delivery: status, attempts, body, last error (TTL once final)
notify:webhook:{w}:deliveries       zset    delivery id -> delivery position (history, capped)
notify:delivery-seq                 string  delivery position counter
notify:webhook-due                  zset    delivery id -> when its next attempt is due (unix ms)

Every write of a notification is one Lua script: check the event id, mark it
applied, take a position, store the document, index it in the feed and the
unread set, trim the feed, publish it live and queue it for webhooks.  Redis
runs a script atomically, so a notification is stored and its event marked
applied together or not at all; an event seen again changes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from notify_svc.domain import Notification

# Errors of a Redis that cannot serve now (down, out of memory, a read-only
# replica after a failover): UNAVAILABLE for callers, a retry for the consumer.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
)

SEQ = "notify:seq"
ANNOUNCEMENTS = "notify:announcements"
ANNOUNCEMENT_DOCS = "notify:announcements:docs"
LIVE_ANNOUNCEMENTS = "notify:live:announcements"
ALL_WEBHOOKS = "notify:webhooks"
FANOUT = "notify:webhook-fanout"
FANOUT_GROUP = "fanout"
DELIVERY_SEQ = "notify:delivery-seq"
DUE = "notify:webhook-due"
FANOUT_MAXLEN = 100_000


def event_key(event_id: str) -> str:
    return f"notify:event:{event_id}"


def feed_key(user: str) -> str:
    return f"notify:user:{user}:feed"


def unread_key(user: str) -> str:
    return f"notify:user:{user}:unread"


def docs_key(user: str) -> str:
    return f"notify:user:{user}:docs"


def fold_key(user: str, subject: str) -> str:
    return f"notify:user:{user}:fold:{subject}"


def ann_read_key(user: str) -> str:
    return f"notify:user:{user}:ann-read"


def ann_upto_key(user: str) -> str:
    return f"notify:user:{user}:ann-read-upto"


def stream_ticket_key(ticket: str) -> str:
    # Only the ticket's hash is a key: a copy of the store opens no stream.
    return f"notify:stream-ticket:{hashlib.sha256(ticket.encode()).hexdigest()}"


def live_channel(user: str) -> str:
    return f"notify:live:user:{user}"


def webhook_key(webhook_id: str) -> str:
    return f"notify:webhook:{webhook_id}"


def user_webhooks_key(user: str) -> str:
    return f"notify:user:{user}:webhooks"


def delivery_key(delivery_id: str) -> str:
    return f"notify:delivery:{delivery_id}"


def deliveries_key(webhook_id: str) -> str:
    return f"notify:webhook:{webhook_id}:deliveries"


# --- scripts ------------------------------------------------------------------------------

# KEYS: event, seq, docs, feed, unread, fold, fanout, user webhooks
# ARGV: dedupe ttl ms, id, document, cap, channel, fold mode (none|new|update),
#       expected fold key value ("" = absent), expected document (update), fold ttl ms, user, kind
# Returns {1, position} stored, {0, 0} already applied, {-1, 0} the fold moved on (read again, retry).
STORE_PERSONAL = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 0} end
local mode = ARGV[6]
if mode ~= 'none' then
  local current = redis.call('GET', KEYS[6])
  if not current then current = '' end
  if current ~= ARGV[7] then return {-1, 0} end
  if mode == 'update' then
    local doc = redis.call('HGET', KEYS[3], ARGV[2])
    if doc ~= ARGV[8] then return {-1, 0} end
  else
    redis.call('SET', KEYS[6], ARGV[2], 'PX', ARGV[9])
  end
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[4], seq, ARGV[2])
redis.call('ZADD', KEYS[5], seq, ARGV[2])
local over = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[4], 0, over - 1)
  redis.call('ZREM', KEYS[4], unpack(old))
  redis.call('ZREM', KEYS[5], unpack(old))
  redis.call('HDEL', KEYS[3], unpack(old))
end
redis.call('PUBLISH', ARGV[5], seq .. ' ' .. ARGV[3])
if redis.call('SCARD', KEYS[8]) > 0 then
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', '100000', '*', 'id', ARGV[2], 'user', ARGV[10], 'seq', seq,
             'kind', ARGV[11])
end
return {1, seq}
"""

# KEYS: event, seq, announcement docs, announcements, fanout, all webhooks
# ARGV: dedupe ttl ms, id, document, cap, channel, kind
STORE_ANNOUNCEMENT = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return {0, 0} end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[4], seq, ARGV[2])
local over = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[4], 0, over - 1)
  redis.call('ZREM', KEYS[4], unpack(old))
  redis.call('HDEL', KEYS[3], unpack(old))
end
redis.call('PUBLISH', ARGV[5], seq .. ' ' .. ARGV[3])
if redis.call('SCARD', KEYS[6]) > 0 then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', '100000', '*', 'id', ARGV[2], 'user', '', 'seq', seq, 'kind', ARGV[6])
end
return {1, seq}
"""

# KEYS: unread, announcements, ann-read-upto, ann-read
UNREAD_COUNT = """
local upto = tonumber(redis.call('GET', KEYS[3]) or '0')
local unread = redis.call('ZCOUNT', KEYS[2], '(' .. upto, '+inf')
for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  local position = redis.call('ZSCORE', KEYS[2], id)
  if position and tonumber(position) > upto then unread = unread - 1 end
end
return redis.call('ZCARD', KEYS[1]) + unread
"""

# KEYS: feed, unread, announcements, ann-read; ARGV: id.  Returns 1 when the id is in the feed.
MARK_READ = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  redis.call('SADD', KEYS[4], ARGV[1])
  return 1
end
return 0
"""

# KEYS: unread, ann-read-upto, ann-read, seq
MARK_ALL_READ = """
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SET', KEYS[2], redis.call('GET', KEYS[4]) or '0')
return 1
"""

# KEYS: webhook, user webhooks, all webhooks; ARGV: limit, id, field, value, field, value...
REGISTER_WEBHOOK = """
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""

# KEYS: webhook, user webhooks, all webhooks; ARGV: id, owner
DELETE_WEBHOOK = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""

# KEYS: delivery, webhook deliveries, due, delivery seq, webhook
# ARGV: id, webhook id, notification id, body, now us, due ms, history cap
CREATE_DELIVERY = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[5]) == 0 then return 0 end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'webhook_id', ARGV[2], 'notification_id', ARGV[3], 'body', ARGV[4],
           'status', 'PENDING', 'attempts', 0, 'http_status', 0, 'error', '', 'next_at_us', ARGV[5],
           'created_at_us', ARGV[5], 'updated_at_us', ARGV[5], 'position', seq)
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[7])
if over > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1) end
return 1
"""

# KEYS: due; ARGV: now ms, lease ms, limit.  Claims due deliveries by pushing
# their due time past the lease (a crashed worker's claims come back then).
CLAIM_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id) end
return ids
"""

# KEYS: delivery, webhook, due
# ARGV: id, status, attempts, http status, error, now us, next attempt us (retry), due ms (retry), retention s
RECORD_ATTEMPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'attempts', ARGV[3], 'http_status', ARGV[4], 'error', ARGV[5],
           'updated_at_us', ARGV[6], 'next_at_us', ARGV[7])
if ARGV[2] == 'RETRYING' then
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[1])
else
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[9])
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'last_status', ARGV[2], 'last_delivery_at_us', ARGV[6])
  if ARGV[2] == 'SUCCEEDED' then
    redis.call('HSET', KEYS[2], 'last_success_at_us', ARGV[6])
  else
    redis.call('HSET', KEYS[2], 'last_failure_at_us', ARGV[6], 'last_error', ARGV[5])
  end
  if ARGV[2] == 'FAILED' then redis.call('HINCRBY', KEYS[2], 'failed_count', 1) end
end
return 1
"""


# --- records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedItem:
    position: int
    notification: Notification
    read: bool


@dataclass(frozen=True)
class StoreOutcome:
    stored: bool
    position: int = 0
    conflict: bool = False


@dataclass(frozen=True)
class Webhook:
    id: str
    user_id: str
    url: str
    description: str
    kinds: list[str]
    secret: str
    created_at_us: int
    last_status: str = ""
    last_delivery_at_us: int = 0
    last_success_at_us: int = 0
    last_failure_at_us: int = 0
    last_error: str = ""
    failed_count: int = 0

    @classmethod
    def of(cls, raw: dict[bytes, bytes]) -> Webhook:
        f = {key.decode(): value.decode() for key, value in raw.items()}
        return cls(
            id=f["id"],
            user_id=f["user_id"],
            url=f["url"],
            description=f.get("description", ""),
            kinds=[kind for kind in f.get("kinds", "").split(",") if kind],
            secret=f["secret"],
            created_at_us=int(f.get("created_at_us", "0")),
            last_status=f.get("last_status", ""),
            last_delivery_at_us=int(f.get("last_delivery_at_us", "0")),
            last_success_at_us=int(f.get("last_success_at_us", "0")),
            last_failure_at_us=int(f.get("last_failure_at_us", "0")),
            last_error=f.get("last_error", ""),
            failed_count=int(f.get("failed_count", "0")),
        )


@dataclass(frozen=True)
class Delivery:
    id: str
    webhook_id: str
    notification_id: str
    body: bytes
    status: str
    attempts: int
    http_status: int
    error: str
    next_at_us: int
    created_at_us: int
    updated_at_us: int
    position: int

    @classmethod
    def of(cls, raw: dict[bytes, bytes]) -> Delivery:
        f = {key.decode(): value for key, value in raw.items()}

        def text(name: str) -> str:
            return f.get(name, b"").decode()

        return cls(
            id=text("id"),
            webhook_id=text("webhook_id"),
            notification_id=text("notification_id"),
            body=f.get("body", b""),
            status=text("status"),
            attempts=int(text("attempts") or 0),
            http_status=int(text("http_status") or 0),
            error=text("error"),
            next_at_us=int(text("next_at_us") or 0),
            created_at_us=int(text("created_at_us") or 0),
            updated_at_us=int(text("updated_at_us") or 0),
            position=int(text("position") or 0),
        )


@dataclass(frozen=True)
class FanoutEntry:
    entry_id: bytes
    notification_id: str
    user_id: str  # "" for an announcement
    position: int
    kind: str


@dataclass
class Limits:
    feed_cap: int = 500
    announcement_cap: int = 100
    dedupe_ttl: float = 7 * 24 * 3600
    like_fold_window: float = 300.0
    webhook_limit: int = 10
    webhook_history: int = 200
    delivery_retention: float = 7 * 24 * 3600


def now_us() -> int:
    return time.time_ns() // 1000


class Store:
    def __init__(self, redis: aioredis.Redis, limits: Limits | None = None) -> None:
        # Untyped on purpose: redis-py's annotations cannot tell bytes replies
        # (decode_responses=False, as here) from str ones.
        self.redis: Any = redis
        self.limits = limits or Limits()
        self._store_personal = redis.register_script(STORE_PERSONAL)
        self._store_announcement = redis.register_script(STORE_ANNOUNCEMENT)
        self._unread_count = redis.register_script(UNREAD_COUNT)
        self._mark_read = redis.register_script(MARK_READ)
        self._mark_all_read = redis.register_script(MARK_ALL_READ)
        self._register_webhook = redis.register_script(REGISTER_WEBHOOK)
        self._delete_webhook = redis.register_script(DELETE_WEBHOOK)
        self._create_delivery = redis.register_script(CREATE_DELIVERY)
        self._claim_due = redis.register_script(CLAIM_DUE)
        self._record_attempt = redis.register_script(RECORD_ATTEMPT)

    # -- writing notifications (the consumer) ------------------------------------------------

    async def store_personal(
        self,
        event_id: str,
        notification: Notification,
        *,
        fold_on: str | None = None,
        expected_fold: str = "",
        expected_document: str | None = None,
    ) -> StoreOutcome:
        """Store a notification for ``notification.user_id`` unless ``event_id`` was applied.

        Folding (likes): ``fold_on`` names what likes fold on; with
        ``expected_document`` the call replaces that folded notification (moving
        it to the top, unread again), without it it starts a new fold.  Either
        way the fold key must still hold ``expected_fold``, or nothing is
        written and the outcome is a conflict (read again and retry).
        """
        user = notification.user_id
        mode = "none" if fold_on is None else ("update" if expected_document is not None else "new")
        keys = [
            event_key(event_id),
            SEQ,
            docs_key(user),
            feed_key(user),
            unread_key(user),
            fold_key(user, fold_on or "-"),
            FANOUT,
            user_webhooks_key(user),
        ]
        args: list[str | int] = [
            int(self.limits.dedupe_ttl * 1000),
            notification.id,
            notification.to_json(),
            self.limits.feed_cap,
            live_channel(user),
            mode,
            expected_fold,
            expected_document or "",
            max(1, int(self.limits.like_fold_window * 1000)),
            user,
            notification.kind,
        ]
        status, position = await self._store_personal(keys=keys, args=args)
        return StoreOutcome(stored=status == 1, position=int(position), conflict=status == -1)

    async def folding(self, user: str, subject: str) -> tuple[str, str | None]:
        """(id of the like notification still folding on ``subject`` or "", its stored document)."""
        current = await self.redis.get(fold_key(user, subject))
        if not current:
            return "", None
        document = await self.redis.hget(docs_key(user), current)
        return current.decode(), document.decode() if document is not None else None

    async def store_announcement(self, event_id: str, announcement: Notification) -> StoreOutcome:
        keys = [event_key(event_id), SEQ, ANNOUNCEMENT_DOCS, ANNOUNCEMENTS, FANOUT, ALL_WEBHOOKS]
        args: list[str | int] = [
            int(self.limits.dedupe_ttl * 1000),
            announcement.id,
            announcement.to_json(),
            self.limits.announcement_cap,
            LIVE_ANNOUNCEMENTS,
            announcement.kind,
        ]
        status, position = await self._store_announcement(keys=keys, args=args)
        return StoreOutcome(stored=status == 1, position=int(position))

    # -- reading a feed -----------------------------------------------------------------------------

    async def page(
        self, user: str, *, before: int | None, limit: int, unread_only: bool
    ) -> tuple[list[FeedItem], int | None]:
        """Newest first, the user's notifications and the announcements merged,
        positions below ``before``; plus the position to continue before (None: last page)."""
        top = f"({before}" if before else "+inf"
        async with self.redis.pipeline(transaction=True) as pipe:
            source = unread_key(user) if unread_only else feed_key(user)
            pipe.zrevrangebyscore(source, top, "-inf", start=0, num=limit + 1, withscores=True)
            if unread_only:  # announcements are few (capped): filter them here
                pipe.zrevrangebyscore(ANNOUNCEMENTS, top, "-inf", withscores=True)
            else:
                pipe.zrevrangebyscore(ANNOUNCEMENTS, top, "-inf", start=0, num=limit + 1, withscores=True)
            pipe.get(ann_upto_key(user))
            pipe.smembers(ann_read_key(user))
            personal, announcements, upto, read_set = await pipe.execute()
        read_announcement = _announcement_reader(upto, read_set)
        ann = [(int(score), member.decode()) for member, score in announcements]
        if unread_only:
            ann = [(position, ident) for position, ident in ann if not read_announcement(position, ident)]
        merged = sorted(
            [(int(score), member.decode(), False) for member, score in personal]
            + [(position, ident, True) for position, ident in ann[: limit + 1]],
            reverse=True,
        )
        more = len(merged) > limit
        merged = merged[:limit]
        items = await self._materialize(user, merged, read_announcement, unread_known=unread_only)
        return items, (merged[-1][0] if more and merged else None)

    async def since(self, user: str, after: int) -> list[FeedItem]:
        """Everything in the user's merged feed after position ``after``, oldest first."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrangebyscore(feed_key(user), f"({after}", "+inf", withscores=True)
            pipe.zrangebyscore(ANNOUNCEMENTS, f"({after}", "+inf", withscores=True)
            pipe.get(ann_upto_key(user))
            pipe.smembers(ann_read_key(user))
            personal, announcements, upto, read_set = await pipe.execute()
        merged = sorted(
            [(int(score), member.decode(), False) for member, score in personal]
            + [(int(score), member.decode(), True) for member, score in announcements]
        )
        return await self._materialize(user, merged, _announcement_reader(upto, read_set), unread_known=False)

    async def _materialize(
        self, user: str, entries: Sequence[tuple[int, str, bool]], read_announcement: Any, *, unread_known: bool
    ) -> list[FeedItem]:
        personal = [ident for _, ident, is_ann in entries if not is_ann]
        announcements = [ident for _, ident, is_ann in entries if is_ann]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(docs_key(user), personal) if personal else pipe.echo("")
            pipe.zmscore(unread_key(user), personal) if personal and not unread_known else pipe.echo("")
            pipe.hmget(ANNOUNCEMENT_DOCS, announcements) if announcements else pipe.echo("")
            personal_docs, unread_scores, announcement_docs = await pipe.execute()
        docs = dict(zip(personal, personal_docs, strict=True)) if personal else {}
        unread = (
            set(personal)
            if unread_known
            else {ident for ident, score in zip(personal, unread_scores or [], strict=False) if score is not None}
        )
        docs.update(dict(zip(announcements, announcement_docs, strict=True)) if announcements else {})
        items = []
        for position, ident, is_ann in entries:
            document = docs.get(ident)
            if document is None:  # trimmed between the two reads
                continue
            read = read_announcement(position, ident) if is_ann else ident not in unread
            items.append(FeedItem(position, Notification.from_json(document), read))
        return items

    async def unread_count(self, user: str) -> int:
        keys = [unread_key(user), ANNOUNCEMENTS, ann_upto_key(user), ann_read_key(user)]
        return int(await self._unread_count(keys=keys, args=[]))

    async def mark_read(self, user: str, notification_id: str) -> bool:
        keys = [feed_key(user), unread_key(user), ANNOUNCEMENTS, ann_read_key(user)]
        return bool(await self._mark_read(keys=keys, args=[notification_id]))

    async def mark_all_read(self, user: str) -> None:
        await self._mark_all_read(keys=[unread_key(user), ann_upto_key(user), ann_read_key(user), SEQ], args=[])

    async def issue_stream_ticket(self, user: str, ticket: str, ttl_seconds: int) -> None:
        await self.redis.set(stream_ticket_key(ticket), user.encode(), ex=ttl_seconds, nx=True)

    async def redeem_stream_ticket(self, ticket: str) -> str | None:
        """The ticket's user, once: GETDEL makes a second redemption find nothing."""
        user = await self.redis.getdel(stream_ticket_key(ticket))
        return user.decode() if user else None

    async def position(self) -> int:
        """The newest position handed out so far."""
        return int(await self.redis.get(SEQ) or 0)

    @contextlib.asynccontextmanager
    async def live(self, user: str) -> AsyncIterator[LiveFeed]:
        """The user's live feed, subscribed (confirmed by Redis) on entry."""
        feed = LiveFeed(self.redis, [live_channel(user), LIVE_ANNOUNCEMENTS])
        try:
            await feed.open()
            yield feed
        finally:
            await feed.close()

    # -- webhooks ----------------------------------------------------------------------------------

    async def add_webhook(self, webhook: Webhook) -> bool:
        """Register a webhook unless the user has ``webhook_limit`` already."""
        fields = {
            "id": webhook.id,
            "user_id": webhook.user_id,
            "url": webhook.url,
            "description": webhook.description,
            "kinds": ",".join(webhook.kinds),
            "secret": webhook.secret,
            "created_at_us": webhook.created_at_us,
            "failed_count": 0,
        }
        args: list[Any] = [self.limits.webhook_limit, webhook.id]
        for name, value in fields.items():
            args += [name, value]
        keys = [webhook_key(webhook.id), user_webhooks_key(webhook.user_id), ALL_WEBHOOKS]
        return bool(await self._register_webhook(keys=keys, args=args))

    async def webhook(self, webhook_id: str) -> Webhook | None:
        raw = await self.redis.hgetall(webhook_key(webhook_id))
        return Webhook.of(raw) if raw else None

    async def webhooks_of(self, user: str) -> list[Webhook]:
        ids = sorted(member.decode() for member in await self.redis.smembers(user_webhooks_key(user)))
        return await self._webhooks(ids)

    async def all_webhooks(self) -> list[Webhook]:
        ids = sorted(member.decode() for member in await self.redis.smembers(ALL_WEBHOOKS))
        return await self._webhooks(ids)

    async def _webhooks(self, ids: Sequence[str]) -> list[Webhook]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for ident in ids:
                pipe.hgetall(webhook_key(ident))
            found = await pipe.execute()
        hooks = [Webhook.of(raw) for raw in found if raw]
        return sorted(hooks, key=lambda hook: (hook.created_at_us, hook.id))

    async def delete_webhook(self, user: str, webhook_id: str) -> bool:
        keys = [webhook_key(webhook_id), user_webhooks_key(user), ALL_WEBHOOKS]
        if not await self._delete_webhook(keys=keys, args=[webhook_id, user]):
            return False
        # Its history and pending retries go too (a worker that meets a delivery
        # of a deleted webhook drops it, so a crash here leaves nothing behind).
        ids = await self.redis.zrange(deliveries_key(webhook_id), 0, -1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for ident in ids:
                pipe.delete(delivery_key(ident.decode()))
            if ids:
                pipe.zrem(DUE, *ids)
            pipe.delete(deliveries_key(webhook_id))
            await pipe.execute()
        return True

    async def deliveries(
        self, webhook_id: str, *, before: int | None, limit: int, status: str | None
    ) -> tuple[list[Delivery], int | None]:
        """A webhook's deliveries, newest first, below position ``before``."""
        found: list[Delivery] = []
        top = f"({before}" if before else "+inf"
        while len(found) <= limit:
            batch = await self.redis.zrevrangebyscore(
                deliveries_key(webhook_id), top, "-inf", start=0, num=max(limit + 1, 50), withscores=True
            )
            if not batch:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for member, _ in batch:
                    pipe.hgetall(delivery_key(member.decode()))
                raws = await pipe.execute()
            for raw in raws:
                if raw:
                    delivery = Delivery.of(raw)
                    if status is None or delivery.status == status:
                        found.append(delivery)
            top = f"({int(batch[-1][1])}"
        more = len(found) > limit
        found = found[:limit]
        return found, (found[-1].position if more and found else None)

    async def notification_document(self, user: str, notification_id: str) -> Notification | None:
        raw = await self.redis.hget(docs_key(user) if user else ANNOUNCEMENT_DOCS, notification_id)
        return Notification.from_json(raw) if raw is not None else None

    # -- the webhook queues -----------------------------------------------------------------------

    async def ensure_fanout_group(self) -> None:
        with contextlib.suppress(redis.exceptions.ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(FANOUT, FANOUT_GROUP, id="0", mkstream=True)

    async def read_fanout(self, consumer: str, *, count: int, block_ms: int) -> list[FanoutEntry]:
        reply = await self.redis.xreadgroup(FANOUT_GROUP, consumer, {FANOUT: ">"}, count=count, block=block_ms)
        return [_fanout_entry(entry_id, fields) for _, entries in reply or [] for entry_id, fields in entries]

    async def reclaim_fanout(self, consumer: str, *, min_idle_ms: int, count: int) -> list[FanoutEntry]:
        """Entries another (crashed) worker read but never acknowledged."""
        reply = await self.redis.xautoclaim(FANOUT, FANOUT_GROUP, consumer, min_idle_ms, "0-0", count=count)
        return [_fanout_entry(entry_id, fields) for entry_id, fields in reply[1] if fields]

    async def ack_fanout(self, entry_ids: Sequence[bytes]) -> None:
        if entry_ids:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xack(FANOUT, FANOUT_GROUP, *entry_ids)
                pipe.xdel(FANOUT, *entry_ids)
                await pipe.execute()

    async def create_delivery(self, delivery_id: str, webhook_id: str, notification_id: str, body: bytes) -> bool:
        now = now_us()
        keys = [delivery_key(delivery_id), deliveries_key(webhook_id), DUE, DELIVERY_SEQ, webhook_key(webhook_id)]
        args: list[str | bytes | int] = [
            delivery_id,
            webhook_id,
            notification_id,
            body,
            now,
            now // 1000,
            self.limits.webhook_history,
        ]
        return bool(await self._create_delivery(keys=keys, args=args))

    async def claim_due(self, *, lease: float, limit: int) -> list[str]:
        ids = await self._claim_due(keys=[DUE], args=[int(time.time() * 1000), int(lease * 1000), limit])
        return [ident.decode() for ident in ids]

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest scheduled attempt (None when nothing is queued)."""
        first = await self.redis.zrange(DUE, 0, 0, withscores=True)
        if not first:
            return None
        return max(0.0, float(first[0][1]) / 1000 - time.time())

    async def delivery(self, delivery_id: str) -> Delivery | None:
        raw = await self.redis.hgetall(delivery_key(delivery_id))
        return Delivery.of(raw) if raw else None

    async def unschedule(self, delivery_id: str) -> None:
        await self.redis.zrem(DUE, delivery_id)

    async def drop_delivery(self, delivery_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(DUE, delivery_id)
            pipe.delete(delivery_key(delivery_id))
            await pipe.execute()

    async def record_attempt(
        self,
        delivery: Delivery,
        *,
        status: str,
        attempts: int,
        http_status: int,
        error: str,
        next_attempt_us: int = 0,
    ) -> None:
        keys = [delivery_key(delivery.id), webhook_key(delivery.webhook_id), DUE]
        args: list[str | int] = [
            delivery.id,
            status,
            attempts,
            http_status,
            error,
            now_us(),
            next_attempt_us,
            next_attempt_us // 1000,
            int(self.limits.delivery_retention),
        ]
        await self._record_attempt(keys=keys, args=args)


def _fanout_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> FanoutEntry:
    return FanoutEntry(
        entry_id=entry_id,
        notification_id=fields.get(b"id", b"").decode(),
        user_id=fields.get(b"user", b"").decode(),
        position=int(fields.get(b"seq", b"0")),
        kind=fields.get(b"kind", b"").decode(),
    )


def _announcement_reader(upto: bytes | None, read_set: set[bytes]) -> Any:
    """read(position, id) for announcements: up to the mark-all position, or marked one by one."""
    mark = int(upto or 0)
    marked = {member.decode() for member in read_set}

    def read(position: int, ident: str) -> bool:
        return position <= mark or ident in marked

    return read


# --- live ------------------------------------------------------------------------------------


@dataclass
class LiveItem:
    position: int
    notification: Notification


@dataclass
class LiveFeed:
    """A Redis pub/sub subscription to one user's channel and the announcements'."""

    redis: aioredis.Redis
    channels: list[str]
    _pubsub: Any = None
    _early: list[LiveItem] = field(default_factory=list)

    async def open(self) -> None:
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(*self.channels)
        # SUBSCRIBE is confirmed per channel; anything published before the
        # last confirmation is kept, so reading the backlog after open() can
        # only overlap the live messages (deduplicated by position), never miss one.
        confirmed = 0
        deadline = time.monotonic() + 10
        while confirmed < len(self.channels):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise redis.exceptions.TimeoutError("Redis did not confirm the subscription")
            message = await self._pubsub.get_message(ignore_subscribe_messages=False, timeout=remaining)
            if message is None:
                continue
            if message["type"] == "subscribe":
                confirmed += 1
            elif message["type"] == "message":
                self._early.append(_live_item(message["data"]))

    async def next(self, timeout: float) -> LiveItem | None:
        """The next live item, or None after ``timeout`` seconds without one."""
        if self._early:
            return self._early.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
            if message is not None and message["type"] == "message":
                return _live_item(message["data"])

    async def close(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()


def _live_item(data: bytes) -> LiveItem:
    position, _, document = data.partition(b" ")
    return LiveItem(int(position), Notification.from_json(document))
