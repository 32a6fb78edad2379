"""Examples in the OpenAPI document: a request body for every operation that takes
one (by operation id) and the main responses (by schema name). The contract tests
check each against its schema and send the request examples to a live edge
(tests/e2e/test_contract.py)."""

from __future__ import annotations

from typing import Any

_ID = "3f0c2a9e-5b7d-4c1e-9a8f-2d6b4e1c7a90"
_PRODUCT = "8d2e6b1a-4c3f-4e5d-9b7a-1f0e2d3c4b5a"
_CATEGORY = "c1a2b3c4-d5e6-4f70-8192-a3b4c5d6e7f8"
_USER = "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3928170"
_ADDRESS = {
    "recipient_name": "Ann Example",
    "line1": "Hauptstraße 1",
    "line2": "",
    "city": "Berlin",
    "region": "",
    "postal_code": "10115",
    "country_code": "DE",
    "phone": "+4930123456",
}
_TIME = "2026-12-01T10:00:00Z"
_MONEY = {"amount_minor": 2500, "currency": "EUR"}

REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    # multipart/form-data: the part ``file`` carries the image's bytes
    "upload_product_image": {"file": "<the bytes of a PNG, JPEG, WebP or GIF image>"},
    "register": {"email": "ann@example.com", "password": "correct-horse-42", "display_name": "Ann"},
    "login": {"email": "ann@example.com", "password": "correct-horse-42"},
    "refresh": {"refresh_token": "rt_0123456789abcdef"},
    "logout": {"refresh_token": "rt_0123456789abcdef", "all_sessions": False},
    "update_me": {"display_name": "Ann E.", "phone": "+4930123456"},
    "change_password": {"current_password": "correct-horse-42", "new_password": "battery-staple-43"},
    "set_role": {"role": "admin"},
    "create_category": {"name": "Tea", "slug": "tea", "parent_id": None},
    "create_product": {
        "name": "Sencha, 100 g",
        "description": "Green tea from Shizuoka",
        "category_id": _CATEGORY,
        "price": _MONEY,
        "stock": 40,
        "attributes": {"origin": "JP"},
        "weight_grams": 120,
    },
    "update_product": {"price": {"amount_minor": 2300, "currency": "EUR"}, "stock": 35},
    "create_order": {
        "items": [{"product_id": _PRODUCT, "quantity": 2}],
        "shipping_address": _ADDRESS,
        "shipping_method": "standard",
    },
    "pay_order": {"payment_method_token": "tok_visa"},
    "cancel_order": {"note": "ordered twice by mistake"},
    "ship_order": {"carrier": "DHL", "tracking_number": "JJD000390007827"},
    "add_item": {"product_id": _PRODUCT, "quantity": 1},
    "set_quantity": {"quantity": 3},
    "checkout": {"shipping_method": "express", "shipping_address": _ADDRESS},
    "create_comment": {"body": "Fresh and grassy, as promised.", "rating": 5, "parent_id": None},
    "update_comment": {"body": "Fresh and grassy; the second bag was as good.", "rating": 4},
    "register_webhook": {
        "url": "https://hooks.example.com/shop",
        "description": "order updates for the warehouse",
        "kinds": [],
    },
    "publish_announcement": {"title": "Maintenance", "body": "Checkout pauses on Sunday 02:00-02:15 UTC.", "data": {}},
}

_USER_EXAMPLE = {
    "id": _USER,
    "email": "ann@example.com",
    "display_name": "Ann",
    "phone": "",
    "role": "customer",
    "shipping_addresses": [],
    "created_at": _TIME,
    "updated_at": _TIME,
}

RESPONSE_EXAMPLES: dict[str, dict[str, Any]] = {
    "User": _USER_EXAMPLE,
    "Session": {
        "user": _USER_EXAMPLE,
        "tokens": {
            "access_token": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiI1ZTRkIn0.c2lnbmF0dXJl",
            "token_type": "Bearer",
            "expires_in": 900,
            "refresh_token": "rt_0123456789abcdef",
            "access_token_expires_at": "2026-12-01T10:15:00Z",
            "refresh_token_expires_at": "2026-12-31T10:00:00Z",
        },
    },
    "Product": {
        "id": _PRODUCT,
        "name": "Sencha, 100 g",
        "description": "Green tea from Shizuoka",
        "category_id": _CATEGORY,
        "price": _MONEY,
        "stock": 40,
        "attributes": {"origin": "JP"},
        "images": [],
        "status": "active",
        "weight_grams": 120,
        "created_at": _TIME,
        "updated_at": _TIME,
    },
    "Comment": {
        "id": _ID,
        "product_id": _PRODUCT,
        "parent_id": None,
        "author_id": _USER,
        "author_display_name": "Ann",
        "body": "Fresh and grassy, as promised.",
        "rating": 5,
        "like_count": 2,
        "liked_by_me": False,
        "verified_purchase": True,
        "edited": False,
        "edited_at": None,
        "deleted": False,
        "reply_count": 0,
        "created_at": _TIME,
        "updated_at": _TIME,
        "replies": [],
    },
    "Order": {
        "id": _ID,
        "user_id": _USER,
        "status": "paid",
        "lines": [
            {
                "product_id": _PRODUCT,
                "product_name": "Sencha, 100 g",
                "quantity": 2,
                "unit_price": _MONEY,
                "line_total": {"amount_minor": 5000, "currency": "EUR"},
            }
        ],
        "shipping_address": _ADDRESS,
        "shipping_method": "standard",
        "subtotal": {"amount_minor": 5000, "currency": "EUR"},
        "shipping": {"amount_minor": 490, "currency": "EUR"},
        "total": {"amount_minor": 5490, "currency": "EUR"},
        "payments": [
            {
                "id": "0b9d8c7e-6f5a-4b3c-8d2e-1f0a9b8c7d6e",
                "amount": {"amount_minor": 5490, "currency": "EUR"},
                "status": "approved",
                "decline_reason": None,
                "created_at": _TIME,
                "refunded_at": None,
            }
        ],
        "shipment": None,
        "cancellation": None,
        "created_at": _TIME,
        "updated_at": _TIME,
        "expires_at": "2026-12-01T10:30:00Z",
        "paid_at": _TIME,
        "delivered_at": None,
    },
    "Cart": {
        "cart_token": "ct_4f3e2d1c0b9a",
        "lines": [
            {
                "product_id": _PRODUCT,
                "product_name": "Sencha, 100 g",
                "quantity": 1,
                "unit_price": _MONEY,
                "line_total": _MONEY,
                "available_stock": 40,
                "archived": False,
                "insufficient_stock": False,
                "unavailable": False,
                "image_url": "",
                "added_at": _TIME,
            }
        ],
        "subtotal": _MONEY,
        "item_count": 1,
        "checkout_ready": True,
        "expires_at": "2026-12-31T10:00:00Z",
    },
}
