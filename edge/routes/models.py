"""JSON shapes shared by several route modules, and their proto conversions."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from shop.common.v1 import address_pb2, money_pb2, paging_pb2


class Format:
    """Says in the JSON schema what a string holds (``format``) without checking it:
    the services check ids and emails themselves, so what the edge accepts stays the same."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema: dict[str, Any] = handler(core_schema)
        schema["format"] = self.name
        return schema


# An id the services hand out (a UUID; a path or body holding anything else is answered 400 or 404).
Uuid = Annotated[str, Format("uuid")]
EmailText = Annotated[str, Format("email")]


class Strict(BaseModel):
    """Request bodies refuse unknown fields."""

    model_config = ConfigDict(extra="forbid")


class Address(Strict):
    recipient_name: Annotated[str, Field(max_length=200)] = ""
    line1: Annotated[str, Field(max_length=200)] = ""
    line2: Annotated[str, Field(max_length=200)] = ""
    city: Annotated[str, Field(max_length=100)] = ""
    region: Annotated[str, Field(max_length=100)] = ""
    postal_code: Annotated[str, Field(max_length=20)] = ""
    country_code: Annotated[str, Field(max_length=2, description="ISO 3166-1 alpha-2")] = ""
    phone: Annotated[str, Field(max_length=20)] = ""

    def to_proto(self) -> address_pb2.Address:
        return address_pb2.Address(**self.model_dump())

    @classmethod
    def of(cls, message: address_pb2.Address) -> Address:
        return cls(
            recipient_name=message.recipient_name, line1=message.line1, line2=message.line2, city=message.city,
            region=message.region, postal_code=message.postal_code, country_code=message.country_code,
            phone=message.phone,
        )  # fmt: skip


class Money(Strict):
    """An amount in the currency's minor units (cents for EUR): ``{"amount_minor": 1999, "currency": "EUR"}``."""

    amount_minor: Annotated[int, Field(ge=0, le=10**15, description="whole minor units, e.g. 1999 for 19.99 EUR")]
    currency: Annotated[str, Field(min_length=3, max_length=3, description="ISO 4217 code, e.g. EUR")]

    def to_proto(self) -> money_pb2.Money:
        return money_pb2.Money(amount_minor=self.amount_minor, currency_code=self.currency)

    @classmethod
    def of(cls, message: money_pb2.Money) -> Money:
        return cls.model_construct(amount_minor=message.amount_minor, currency=message.currency_code)


class PageQuery(BaseModel):
    """``?page_size=&page_token=`` of every listing."""

    model_config = ConfigDict(extra="ignore")

    page_size: Annotated[int, Field(ge=1, le=100)] = 20
    page_token: Annotated[str, Field(max_length=512)] = ""

    def page(self) -> paging_pb2.PageRequest:
        return paging_pb2.PageRequest(page_size=self.page_size, page_token=self.page_token)
