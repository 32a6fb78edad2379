"""The Redis keys of notify_svc: the one place that names them.

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
notify:stream-ticket:{sha256}       string  the user of a one-use stream ticket (TTL: the ticket's life)
"""

from __future__ import annotations

import hashlib

SEQ = "notify:seq"
ANNOUNCEMENTS = "notify:announcements"
ANNOUNCEMENT_DOCS = "notify:announcements:docs"
LIVE_ANNOUNCEMENTS = "notify:live:announcements"
ALL_WEBHOOKS = "notify:webhooks"
FANOUT = "notify:webhook-fanout"
FANOUT_GROUP = "fanout"
DELIVERY_SEQ = "notify:delivery-seq"
DUE = "notify:webhook-due"


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
