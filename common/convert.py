"""Proto ⇄ Python for the shared messages: Timestamp, Money, Address.

The one home of these conversions; each service's ``convert.py`` (and the edge)
builds on them.  Domain modules never import this: it knows protobuf.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from shop.common.v1 import address_pb2, money_pb2

from common.money import Money
from common.validation import Address


def timestamp(moment: datetime) -> Timestamp:
    """An aware datetime as a Timestamp (UTC)."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def optional_timestamp(moment: datetime | None) -> Timestamp | None:
    """None stays None, so that ``Message(field=optional_timestamp(x))`` leaves the field unset."""
    return None if moment is None else timestamp(moment)


def timestamp_from_micros(micros: int) -> Timestamp | None:
    """Microseconds since the epoch as a Timestamp; 0 (never) as None."""
    if not micros:
        return None
    stamp = Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def datetime_of(stamp: Timestamp) -> datetime:
    """A Timestamp as an aware UTC datetime."""
    return stamp.ToDatetime(tzinfo=UTC)


def optional_datetime_of(stamp: Timestamp) -> datetime | None:
    """A Timestamp as an aware UTC datetime; unset (zero) as None."""
    if not stamp.seconds and not stamp.nanos:
        return None
    return datetime_of(stamp)


def micros_of(stamp: Timestamp) -> int:
    """A Timestamp as microseconds since the epoch; unset as 0 (the inverse of timestamp_from_micros)."""
    return int(stamp.ToMicroseconds()) if stamp.seconds or stamp.nanos else 0


def money_to_proto(value: Money) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=value.amount_minor, currency_code=value.currency)


def money_parts(message: money_pb2.Money) -> tuple[int, str]:
    """A Money message as (minor units, currency), unchecked: the domain validates it."""
    return message.amount_minor, message.currency_code


def address_from_proto(message: address_pb2.Address) -> Address:
    return Address(**{name: getattr(message, name) for name in Address.__dataclass_fields__})


def address_to_proto(address: Address) -> address_pb2.Address:
    return address_pb2.Address(**asdict(address))
