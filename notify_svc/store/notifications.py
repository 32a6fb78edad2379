"""The feeds: storing notifications (each one Lua step), reading a user's feed
merged with the announcements, and the read marks.

Every write of a notification is one Lua script: check the event id, mark it
applied, take a position, store the document, index it in the feed and the
unread set, trim the feed, publish it live and queue it for webhooks.  Redis
runs a script atomically, so a notification is stored and its event marked
applied together or not at all; an event seen again changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from notify_svc.domain import FeedItem, Notification
from notify_svc.store.keys import (
    ALL_WEBHOOKS,
    ANNOUNCEMENT_DOCS,
    ANNOUNCEMENTS,
    FANOUT,
    LIVE_ANNOUNCEMENTS,
    SEQ,
    ann_read_key,
    ann_upto_key,
    docs_key,
    event_key,
    feed_key,
    fold_key,
    live_channel,
    unread_key,
    user_webhooks_key,
)
from notify_svc.store.limits import Limits

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


@dataclass(frozen=True)
class StoreOutcome:
    stored: bool
    position: int = 0
    conflict: bool = False


ReadAnnouncement = Callable[[int, str], bool]


class Notifications:
    """The users' feeds and the shared announcements."""

    def __init__(self, redis: Any, limits: Limits) -> None:
        self.redis = redis
        self.limits = limits
        self._store_personal = redis.register_script(STORE_PERSONAL)
        self._store_announcement = redis.register_script(STORE_ANNOUNCEMENT)
        self._unread_count = redis.register_script(UNREAD_COUNT)
        self._mark_read = redis.register_script(MARK_READ)
        self._mark_all_read = redis.register_script(MARK_ALL_READ)

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
        self,
        user: str,
        entries: Sequence[tuple[int, str, bool]],
        read_announcement: ReadAnnouncement,
        *,
        unread_known: bool,
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

    async def notification_document(self, user: str, notification_id: str) -> Notification | None:
        raw = await self.redis.hget(docs_key(user) if user else ANNOUNCEMENT_DOCS, notification_id)
        return Notification.from_json(raw) if raw is not None else None


def _announcement_reader(upto: bytes | None, read_set: set[bytes]) -> ReadAnnouncement:
    """read(position, id) for announcements: up to the mark-all position, or marked one by one."""
    mark = int(upto or 0)
    marked = {member.decode() for member in read_set}

    def read(position: int, ident: str) -> bool:
        return position <= mark or ident in marked

    return read
