"""The storefront (web/, issue 23) in a real headless Chromium (Debian's ``chromium``,
driven by Playwright) against the whole test cluster: the web process is a client of
the edge's REST API only."""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.cluster import Cluster
from tests.e2e.helpers import PASSWORD, create_admin, unique_email

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ADDRESS = {"recipient_name": "Ann Buyer", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country_code": "DE"}  # fmt: skip


@pytest.fixture(scope="module")
def stack(services) -> Cluster:
    return services("user_svc", "product_svc", "order_svc", "comment_svc", "notify_svc", "edge", "web")


@pytest.fixture
async def browser(stack: Cluster) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


def png(width: int = 96, height: int = 72) -> bytes:
    """A small real PNG: a green-to-blue gradient."""
    rows = b"".join(b"\x00" + b"".join(bytes((20, 110 + x, 80 + y * 2)) for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


async def sign_in(page: Any, web: str, email: str) -> None:
    await page.goto(f"{web}/signin")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Sign out").wait_for()


async def test_guest_buys_and_admin_ships(stack: Cluster, browser: Any, tmp_path: Path) -> None:
    web = f"http://{stack.addr('web')}"
    word = uuid.uuid4().hex[:6]
    admin_email = unique_email().lower()
    await create_admin(stack, admin_email)

    # The admin makes a category and a product with an image through the admin page.
    admin = await (await browser.new_context()).new_page()
    await sign_in(admin, web, admin_email)
    await admin.goto(f"{web}/admin")
    await admin.get_by_label("Category name").fill(f"Teaware {word}")
    await admin.get_by_label("Slug (e.g. tea-cups)").fill(f"teaware-{word}")
    await admin.get_by_role("button", name="Create category").click()
    assert f"Category Teaware {word} created" in await admin.get_by_role("status").inner_text()
    await admin.get_by_label("Category", exact=True).select_option(label=f"Teaware {word}")
    await admin.get_by_label("Product name").fill(f"Glazed teapot {word}")
    await admin.get_by_label("Description").fill("A stoneware teapot, glazed by hand.")
    await admin.get_by_label("Price (e.g. 19.99)").fill("24.50")
    await admin.get_by_label("Stock").fill("5")
    image = tmp_path / "teapot.png"
    image.write_bytes(png())
    await admin.get_by_label("Image (JPEG, PNG or WebP)").set_input_files(str(image))
    await admin.get_by_role("button", name="Create product").click()
    await admin.get_by_role("heading", name=f"Glazed teapot {word}").wait_for()
    picture = admin.locator(".gallery img").first
    assert await picture.evaluate("img => img.complete && img.naturalWidth") == 96, "the image loads from storage"

    # Two more products in the category, through the edge's API as the admin.
    async with httpx.AsyncClient(base_url=f"http://{stack.addr('edge')}", timeout=30) as http:
        login = await http.post("/api/v1/auth/login", json={"email": admin_email, "password": PASSWORD})
        token = {"Authorization": f"Bearer {login.json()['tokens']['access_token']}"}
        category = next(c for c in (await http.get("/api/v1/categories?page_size=100")).json()["items"]
                        if c["name"] == f"Teaware {word}")  # fmt: skip
        for name, price in ((f"Tea cup {word}", 990), (f"Saucer {word}", 1200)):
            made = await http.post(
                "/api/v1/products", headers=token,
                json={"name": name, "category_id": category["id"], "stock": 9,
                      "price": {"amount_minor": price, "currency": "EUR"}},
            )  # fmt: skip
            assert made.status_code == 201, made.text

    # A guest browses the category (cheapest first, two to a page, then the next page),
    # filters by price, searches and adds the product to a guest cart.
    guest = await (await browser.new_context(viewport={"width": 1000, "height": 760})).new_page()
    await guest.goto(web)
    await guest.get_by_role("link", name="Catalog").click()
    await guest.get_by_label("Category").select_option(label=f"Teaware {word}")
    await guest.get_by_label("Sort").select_option(label="Price: low to high")
    await guest.get_by_role("button", name="Show").click()
    names = guest.locator("#results .card .name")
    assert await names.all_inner_texts() == [f"Tea cup {word}", f"Saucer {word}", f"Glazed teapot {word}"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await guest.screenshot(path=str(SCREENSHOTS / "catalog.png"))
    await guest.goto(guest.url + "&page_size=2")
    assert await names.all_inner_texts() == [f"Tea cup {word}", f"Saucer {word}"]
    await guest.get_by_role("link", name="Next page").click()
    assert await names.all_inner_texts() == [f"Glazed teapot {word}"]
    await guest.get_by_label("Min price").fill("10")
    await guest.get_by_label("Max price").fill("20")
    await guest.get_by_role("button", name="Show").click()
    assert await names.all_inner_texts() == [f"Saucer {word}"]
    await guest.goto(f"{web}/catalog")
    await guest.locator("#f-q").fill(f"teapot {word}")
    await guest.get_by_role("button", name="Show").click()
    results = guest.locator("#results .card")
    assert await results.count() == 1
    await results.first.get_by_role("link").click()
    assert await guest.locator("#price").inner_text() == "24.50 EUR"
    assert await guest.locator("#stock").inner_text() == "5 in stock"
    await guest.screenshot(path=str(SCREENSHOTS / "product.png"))
    await guest.get_by_label("Quantity").fill("2")
    await guest.get_by_role("button", name="Add to cart").click()
    assert f"Glazed teapot {word}" in await guest.locator("#cart").inner_text()
    cookies = {c["name"]: c for c in await guest.context.cookies()}
    assert cookies["shop_cart"]["httpOnly"] and cookies["shop_cart"]["sameSite"] == "Lax"

    # Signing up keeps the cart.
    await guest.get_by_role("link", name="Sign up").click()
    await guest.get_by_label("Email").fill(unique_email())
    await guest.get_by_label("Your name").fill("Ann")
    await guest.get_by_label("Password").fill(PASSWORD)
    await guest.get_by_role("button", name="Sign up").click()
    await guest.get_by_role("button", name="Sign out (Ann)").wait_for()
    await guest.get_by_role("link", name="Cart").click()
    assert f"Glazed teapot {word}" in await guest.locator("#cart").inner_text()
    assert await guest.locator("#subtotal").inner_text() == "49.00 EUR"

    # Checkout with an address, a shipping option and the test card: the order is paid.
    await guest.get_by_role("link", name="Check out").click()
    labels = {"recipient_name": "Full name", "line1": "Street and number", "city": "City",
              "postal_code": "Postal code", "country_code": "Country code (e.g. DE)"}  # fmt: skip
    for name, label in labels.items():
        await guest.get_by_label(label).fill(ADDRESS[name])
    await guest.locator("#ship-standard").check()
    await guest.get_by_label("Test card (approved)").check()
    await guest.get_by_role("button", name="Place order and pay").click()
    await guest.locator("#order-status").wait_for()
    assert await guest.locator("#order-status").inner_text() == "paid"
    order_id = guest.url.rsplit("/", 1)[1]
    await guest.get_by_role("link", name="Orders").click()
    assert order_id[:8] in await guest.locator("table").inner_text()
    await guest.goto(f"{web}/orders/{order_id}")

    # The admin ships it; the shopper's open page hears of it live (the bell's stream).
    before = int(await guest.locator("#bell-count").inner_text())
    await admin.goto(f"{web}/admin")
    ship = admin.locator(f"form.ship[data-order='{order_id}']")
    await ship.get_by_label("Tracking number").fill("TRACK123")
    await ship.get_by_role("button").click()
    assert f"Order {order_id} shipped" in await admin.get_by_role("status").inner_text()
    await guest.wait_for_function(
        f"parseInt(document.getElementById('bell-count').textContent, 10) > {before}", timeout=30_000
    )
    assert "shipped" in (await guest.locator(".toast").last.inner_text()).lower()
    await guest.reload()
    assert await guest.locator("#order-status").inner_text() == "shipped"
    assert "TRACK123" in await guest.locator("#shipment").inner_text()
    await admin.locator(f"form.deliver[data-order='{order_id}']").get_by_role("button").click()
    assert f"Order {order_id} delivered" in await admin.get_by_role("status").inner_text()
    await guest.reload()
    assert await guest.locator("#order-status").inner_text() == "delivered"


async def test_bad_input_shows_the_fields_message(stack: Cluster, browser: Any) -> None:
    web = f"http://{stack.addr('web')}"
    page = await (await browser.new_context(viewport={"width": 390, "height": 800})).new_page()  # a phone
    await page.goto(f"{web}/catalog")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390, "no sideways scrolling on a phone"
    await page.goto(f"{web}/signup")
    await page.get_by_label("Email").fill(unique_email())
    await page.get_by_label("Your name").fill("Ann")
    await page.get_by_label("Password").fill("short1")
    await page.get_by_role("button", name="Sign up").click()
    message = page.locator("#e-f-password")
    assert "too short" in await message.inner_text()
    assert await page.get_by_label("Password").get_attribute("aria-invalid") == "true"
    assert "Traceback" not in await page.content()
    assert await page.get_by_role("alert").inner_text()


async def test_forms_refuse_a_post_without_the_csrf_token(stack: Cluster) -> None:
    async with httpx.AsyncClient(base_url=f"http://{stack.addr('web')}") as http:
        assert (await http.get("/healthz")).status_code == 200
        await http.get("/signin")  # sets the CSRF cookie
        refused = await http.post("/signin", data={"email": "a@example.com", "password": PASSWORD, "csrf": "forged"})
        assert refused.status_code == 403
        assert "reload the page" in refused.text


async def test_a_declined_card_shows_why_and_the_order_can_be_cancelled(stack: Cluster, browser: Any) -> None:
    web = f"http://{stack.addr('web')}"
    admin_email = unique_email().lower()
    await create_admin(stack, admin_email)
    async with httpx.AsyncClient(base_url=f"http://{stack.addr('edge')}", timeout=30) as http:
        login = await http.post("/api/v1/auth/login", json={"email": admin_email, "password": PASSWORD})
        token = {"Authorization": f"Bearer {login.json()['tokens']['access_token']}"}
        slug = f"mugs-{uuid.uuid4().hex[:8]}"
        category = (await http.post("/api/v1/categories", headers=token, json={"name": "Mugs", "slug": slug})).json()
        product = await http.post(
            "/api/v1/products", headers=token,
            json={"name": "Mug", "category_id": category["id"], "stock": 3,
                  "price": {"amount_minor": 800, "currency": "EUR"}},
        )  # fmt: skip
        assert product.status_code == 201, product.text
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{web}/signup")
    await page.get_by_label("Email").fill(unique_email())
    await page.get_by_label("Your name").fill("Bo")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await page.get_by_role("button", name="Sign out (Bo)").wait_for()
    await page.goto(f"{web}/products/{product.json()['id']}")
    await page.get_by_label("Rating").select_option("4")
    await page.get_by_label("Your review").fill("Holds a lot of coffee.")
    await page.get_by_role("button", name="Post review").click()
    assert "Holds a lot of coffee." in await page.locator(".reviews").inner_text()
    await page.get_by_role("button", name="Add to cart").click()
    await page.get_by_role("link", name="Check out").click()
    await page.get_by_role("button", name="Place order and pay").click()
    # An empty address: the edge's field violations stand next to their fields.
    assert await page.locator(".field.invalid").count() >= 1
    assert await page.get_by_role("alert").inner_text()
    for label, value in (("Full name", "Bo"), ("Street and number", "2 High St"), ("City", "Berlin"),
                         ("Postal code", "10115"), ("Country code (e.g. DE)", "DE")):  # fmt: skip
        await page.get_by_label(label).fill(value)
    await page.get_by_label("Test card (declined)").check()
    await page.get_by_role("button", name="Place order and pay").click()
    await page.locator("#order-status").wait_for()
    assert await page.locator("#order-status").inner_text() == "pending payment"
    assert "declined" in (await page.get_by_role("alert").inner_text()).lower()
    await page.get_by_role("button", name="Cancel order").click()
    assert await page.locator("#order-status").inner_text() == "cancelled"
