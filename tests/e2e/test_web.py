"""The storefront (web/, issue 23) in a real headless Chromium (Debian's ``chromium``,
driven by Playwright) against the whole test cluster: the web process is a client of
the edge's REST API only."""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from devstack.cluster import Cluster
from tests.e2e.helpers import PASSWORD, admin_session, bearer, create_admin, register, unique_email

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


async def signed_in_admin(stack: Cluster, browser: Any) -> tuple[Any, str]:
    """A new admin account, signed in on a page of its own; and its email."""
    email = unique_email().lower()
    await create_admin(stack, email)
    page = await (await browser.new_context()).new_page()
    await sign_in(page, f"http://{stack.addr('web')}", email)
    return page, email


async def _admin_makes_a_product(admin: Any, web: str, word: str, tmp_path: Path) -> None:
    """The admin makes a category and a product with an image through the admin page."""
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


async def _two_more_products(stack: Cluster, admin_email: str, word: str) -> None:
    """Two more products in the category, through the edge's API as the admin."""
    async with httpx.AsyncClient(base_url=f"http://{stack.addr('edge')}", timeout=30) as http:
        login = await http.post("/api/v1/auth/login", json={"email": admin_email, "password": PASSWORD})
        token = {"Authorization": f"Bearer {login.json()['tokens']['access_token']}"}
        category = next(c for c in (await http.get("/api/v1/categories?page_size=100")).json()["items"]
                        if c["name"] == f"Teaware {word}")  # fmt: skip
        for name in (f"Teapots {word}", f"Tea cups {word}"):  # empty subcategories: the tree shows them nested
            sub = {"name": name, "slug": name.lower().replace(" ", "-"), "parent_id": category["id"]}
            assert (await http.post("/api/v1/categories", headers=token, json=sub)).status_code == 201
        for name, price in ((f"Tea cup {word}", 990), (f"Saucer {word}", 1200)):
            made = await http.post(
                "/api/v1/products", headers=token,
                json={"name": name, "category_id": category["id"], "stock": 9,
                      "price": {"amount_minor": price, "currency": "EUR"}},
            )  # fmt: skip
            assert made.status_code == 201, made.text


async def _guest_browses_and_fills_a_cart(guest: Any, web: str, word: str) -> None:
    """A guest browses the category (cheapest first, two to a page, then the next page),
    filters by price, searches and adds the product to a guest cart."""
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


async def _signing_up_keeps_the_cart(guest: Any, word: str) -> None:
    """Signing up keeps the cart."""
    await guest.get_by_role("link", name="Sign up").click()
    await guest.get_by_label("Email").fill(unique_email())
    await guest.get_by_label("Your name").fill("Ann")
    await guest.get_by_label("Password").fill(PASSWORD)
    await guest.get_by_role("button", name="Sign up").click()
    await guest.get_by_role("button", name="Sign out (Ann)").wait_for()
    await guest.get_by_role("link", name="Cart").click()
    assert f"Glazed teapot {word}" in await guest.locator("#cart").inner_text()
    assert await guest.locator("#subtotal").inner_text() == "49.00 EUR"


async def _checkout_pays(guest: Any, web: str) -> str:
    """Checkout with an address, a shipping option and the test card: the order is paid (its id)."""
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
    return order_id


async def _admin_ships_and_delivers(admin: Any, guest: Any, web: str, order_id: str) -> None:
    """The admin ships it; the shopper's open page hears of it live (the bell's stream)."""
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


async def test_guest_buys_and_admin_ships(stack: Cluster, browser: Any, tmp_path: Path) -> None:
    web = f"http://{stack.addr('web')}"
    word = uuid.uuid4().hex[:6]
    admin, admin_email = await signed_in_admin(stack, browser)
    await _admin_makes_a_product(admin, web, word, tmp_path)
    await _two_more_products(stack, admin_email, word)
    guest = await (await browser.new_context(viewport={"width": 1000, "height": 760})).new_page()
    await _guest_browses_and_fills_a_cart(guest, web, word)
    await _signing_up_keeps_the_cart(guest, word)
    order_id = await _checkout_pays(guest, web)
    await _admin_ships_and_delivers(admin, guest, web, order_id)


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


async def test_admin_pages_refuse_a_customer_and_pages_refuse_framing(stack: Cluster) -> None:
    async with httpx.AsyncClient(base_url=f"http://{stack.addr('edge')}") as edge:
        customer = await register(edge)
    async with httpx.AsyncClient(base_url=f"http://{stack.addr('web')}") as http:
        page = await http.get("/signin")
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        csrf = http.cookies["shop_csrf"]
        signed_in = await http.post(
            "/signin", data={"email": customer["user"]["email"], "password": PASSWORD, "csrf": csrf}
        )
        assert signed_in.status_code == 303
        assert (await http.get("/admin")).status_code == 403
        refused = await http.post(f"/admin/products/{uuid.uuid4()}/stock", data={"stock": "9", "csrf": csrf})
        assert refused.status_code == 403
        assert "administrators" in refused.text


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
    await sign_up(page, web, "Bo")
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


@asynccontextmanager
async def admin_api(stack: Cluster) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """An HTTP client of the edge with an admin's token (for a test's setup)."""
    async with httpx.AsyncClient(base_url=f"http://{stack.addr('edge')}", timeout=30) as http:
        yield http, bearer(await admin_session(http, stack))


async def make_product(http: httpx.AsyncClient, token: dict[str, str], category_id: str, name: str) -> dict[str, Any]:
    made = await http.post(
        "/api/v1/products", headers=token,
        json={"name": name, "category_id": category_id, "stock": 4, "price": {"amount_minor": 1500, "currency": "EUR"}},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    found: dict[str, Any] = made.json()
    return found


async def sign_up(page: Any, web: str, name: str) -> None:
    await page.goto(f"{web}/signup")
    await page.get_by_label("Email").fill(unique_email())
    await page.get_by_label("Your name").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await page.get_by_role("button", name=f"Sign out ({name})").wait_for()


async def _admin_makes_categories(admin: Any, web: str, word: str) -> None:
    """A subcategory made on the admin page, under a top-level one; a slug the catalog
    refuses gets the service's message next to the slug."""
    await admin.goto(f"{web}/admin")
    for name, parent in ((f"Kitchen {word}", "None (top level)"), (f"Kettles {word}", f"Kitchen {word}")):
        await admin.get_by_label("Category name").fill(name)
        await admin.get_by_label("Slug (e.g. tea-cups)").fill(name.lower().replace(" ", "-"))
        await admin.get_by_label("Parent category").select_option(label=parent)
        await admin.get_by_role("button", name="Create category").click()
        await expect(admin.locator("#flash")).to_contain_text(f"Category {name} created")
    assert await admin.locator("#cat-parent option", has_text=f"Kettles {word}").inner_text() == f"— Kettles {word}"
    # A slug the catalog refuses: the service's message stands next to the slug.
    await admin.get_by_label("Category name").fill("Bad slug")
    await admin.get_by_label("Slug (e.g. tea-cups)").fill("Not A Slug!")
    await admin.get_by_role("button", name="Create category").click()
    await expect(admin.get_by_label("Slug (e.g. tea-cups)")).to_have_attribute("aria-invalid", "true")
    assert await admin.locator("#e-cat-slug").inner_text()
    slug = admin.get_by_label("Slug (e.g. tea-cups)")
    assert await slug.input_value() == "Not A Slug!", "the form keeps what was typed"


async def _kettle(stack: Cluster, admin_email: str, word: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Kettles category and a product in it, made through the edge's API."""
    async with httpx.AsyncClient(base_url=f"http://{stack.addr('edge')}", timeout=30) as http:
        categories = (await http.get("/api/v1/categories?page_size=100")).json()["items"]
        kettles = next(c for c in categories if c["name"] == f"Kettles {word}")
        login = await http.post("/api/v1/auth/login", json={"email": admin_email, "password": PASSWORD})
        product = await make_product(http, bearer(login.json()), kettles["id"], f"Kettle {word}")
    return kettles, product


async def _admin_edits_and_sets_stock(admin: Any, web: str, word: str) -> None:
    """Edit: the admin finds the product in the list and changes its name and price; then its stock."""
    await admin.goto(f"{web}/admin")
    await admin.get_by_role("navigation", name="Admin").get_by_role("link", name="Products").click()
    await admin.get_by_label("Find products").fill(f"kettle {word}")
    await admin.get_by_role("button", name="Find").click()
    await admin.locator("#products").get_by_role("link", name=f"Kettle {word}").click()
    await admin.get_by_label("Product name").fill(f"Copper kettle {word}")
    await admin.get_by_label("Price (e.g. 19.99)").fill("39.90")
    await admin.get_by_role("button", name="Save changes").click()
    await expect(admin.locator("#flash")).to_contain_text(f"Copper kettle {word} saved")

    # Stock: a negative number is refused with the field's message, a whole one is set.
    await admin.get_by_label("Units in stock").fill("-3")
    await admin.get_by_role("button", name="Set stock").click()
    await expect(admin.get_by_label("Units in stock")).to_have_attribute("aria-invalid", "true")
    assert "0" in await admin.locator("#e-f-stock").inner_text()
    await expect(admin.get_by_label("Units in stock")).to_be_focused()  # the field to fix
    assert "Traceback" not in await admin.content()
    await admin.get_by_label("Units in stock").fill("17")
    await admin.get_by_role("button", name="Set stock").click()
    await expect(admin.locator("#flash")).to_contain_text("Stock set to 17")


async def _admin_adds_and_deletes_an_image(admin: Any, tmp_path: Path) -> None:
    """Images: a file that is not an image is refused and says why; a PNG is added, then deleted."""
    fake = tmp_path / "kettle.png"
    fake.write_text("not a picture")
    await admin.get_by_label("Add an image (JPEG, PNG or WebP)").set_input_files(str(fake))
    await admin.get_by_role("button", name="Upload image").click()
    assert await admin.get_by_role("alert").inner_text()
    assert "Traceback" not in await admin.content()
    fake.write_bytes(png())
    await admin.get_by_label("Add an image (JPEG, PNG or WebP)").set_input_files(str(fake))
    await admin.get_by_role("button", name="Upload image").click()
    await expect(admin.locator("#flash")).to_contain_text("Image added")
    assert await admin.locator(".thumbs img").evaluate("img => img.complete && img.naturalWidth") == 96
    await admin.get_by_role("button", name="Delete picture 1").click()
    await expect(admin.locator("#flash")).to_contain_text("Image deleted")
    await expect(admin.locator(".thumbs img")).to_have_count(0)


async def _shopper_sees_the_edit(
    shopper: Any, web: str, word: str, *, product: dict[str, Any], kettles: dict[str, Any]
) -> None:
    """A shopper sees the new name, price and stock."""
    await sign_up(shopper, web, "Cleo")
    await shopper.goto(f"{web}/products/{product['id']}")
    assert await shopper.get_by_role("heading", level=1).inner_text() == f"Copper kettle {word}"
    assert await shopper.locator("#price").inner_text() == "39.90 EUR"
    assert await shopper.locator("#stock").inner_text() == "17 in stock"
    await shopper.goto(f"{web}/catalog?category_id={kettles['id']}")
    assert await shopper.locator("#results .card .name").all_inner_texts() == [f"Copper kettle {word}"]


async def _archived(admin: Any, shopper: Any, web: str, word: str, product: dict[str, Any]) -> None:
    """Archive: it leaves the catalog; its page says it is no longer sold."""
    await admin.get_by_role("button", name="Archive product").click()
    await expect(admin.locator("#product-status")).to_have_text("archived")
    await shopper.reload()
    assert await shopper.locator("#results .card").count() == 0
    await shopper.goto(f"{web}/products/{product['id']}")
    assert await shopper.locator("#availability").inner_text() == "No longer sold"
    assert await shopper.get_by_role("button", name="Add to cart").count() == 0
    await admin.goto(f"{web}/admin/products?q=kettle+{word}")
    assert await admin.locator(f"tr[data-product='{product['id']}'] .state").inner_text() == "archived"


async def _announcement_reaches_the_shopper(admin: Any, shopper: Any, web: str, word: str) -> None:
    """An announcement reaches the open page of a shopper live, then the notification list."""
    before = int(await shopper.locator("#bell-count").inner_text())
    await admin.goto(f"{web}/admin")
    await admin.get_by_label("Title").fill(f"Kettle week {word}")
    await admin.get_by_label("Message").fill("Every kettle ships free this week.")
    await admin.get_by_role("button", name="Publish announcement").click()
    await expect(admin.locator("#flash")).to_contain_text(f"Kettle week {word}")
    await shopper.wait_for_function(
        f"parseInt(document.getElementById('bell-count').textContent, 10) > {before}", timeout=30_000
    )
    await shopper.get_by_role("link", name="Notifications").click()
    note = shopper.locator("#notes li", has_text=f"Kettle week {word}")
    assert "Every kettle ships free this week." in await note.inner_text()
    assert await note.get_attribute("class") == "note announcement unread"
    await shopper.get_by_role("button", name="Mark all read").click()
    await expect(shopper.locator("#bell-count")).to_have_text("0")


async def test_admin_edits_stocks_archives_and_announces(stack: Cluster, browser: Any, tmp_path: Path) -> None:
    web = f"http://{stack.addr('web')}"
    word = uuid.uuid4().hex[:6]
    admin, admin_email = await signed_in_admin(stack, browser)
    await _admin_makes_categories(admin, web, word)
    kettles, product = await _kettle(stack, admin_email, word)
    await _admin_edits_and_sets_stock(admin, web, word)
    await _admin_adds_and_deletes_an_image(admin, tmp_path)
    shopper = await (await browser.new_context()).new_page()
    await _shopper_sees_the_edit(shopper, web, word, product=product, kettles=kettles)
    await _archived(admin, shopper, web, word, product)
    await _announcement_reaches_the_shopper(admin, shopper, web, word)


async def _garden(stack: Cluster, word: str) -> dict[str, Any]:
    """A category with a subcategory and a product in each; the one in the
    subcategory (answered: the watering can) has a review."""
    async with admin_api(stack) as (http, token):
        root = (await http.post("/api/v1/categories", headers=token,
                                json={"name": f"Garden {word}", "slug": f"garden-{word}"})).json()  # fmt: skip
        sub = await http.post(
            "/api/v1/categories", headers=token,
            json={"name": f"Watering cans {word}", "slug": f"cans-{word}", "parent_id": root["id"]},
        )  # fmt: skip
        assert sub.status_code == 201, sub.text
        can = await make_product(http, token, sub.json()["id"], f"Zinc can {word}")
        await make_product(http, token, root["id"], f"Rake {word}")
        author = await register(http)
        review = await http.post(
            f"/api/v1/products/{can['id']}/comments", headers=bearer(author),
            json={"body": f"Pours evenly {word}", "rating": 5},
        )  # fmt: skip
        assert review.status_code == 201, review.text
    return can


async def _guest_browses_the_tree(page: Any, web: str, word: str) -> None:
    """The tree: the top-level category holds both products, its subcategory only its own."""
    await page.goto(f"{web}/catalog")
    tree = page.get_by_role("navigation", name="Browse")
    await tree.get_by_role("link", name=f"Garden {word}").click()
    await expect(tree.locator("[aria-current=page]")).to_have_text(f"Garden {word}")
    names = page.locator("#results .card .name")
    assert sorted(await names.all_inner_texts()) == [f"Rake {word}", f"Zinc can {word}"]
    await tree.get_by_role("link", name=f"Watering cans {word}").click()
    await expect(tree.locator("[aria-current=page]")).to_have_text(f"Watering cans {word}")
    assert await names.all_inner_texts() == [f"Zinc can {word}"]
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    assert await crumbs.get_by_role("link").all_inner_texts() == [
        "All products",
        f"Garden {word}",
        f"Watering cans {word}",
    ]
    await page.locator("#results .card a").first.click()
    assert f"Garden {word}" in await page.get_by_role("navigation", name="Breadcrumb").inner_text()
    assert await page.get_by_role("button", name="Like").count() == 0, "a guest is asked to sign in instead"


async def _signed_in_likes_the_review(page: Any, web: str, word: str, can: dict[str, Any]) -> tuple[Any, Any]:
    """Signed in: like the review; it stays liked after a reload.  Answers the review's thread and like button."""
    await sign_up(page, web, "Dana")
    await page.goto(f"{web}/products/{can['id']}")
    thread = page.locator(".review", has_text=f"Pours evenly {word}")  # a locator: found again after each reload
    like = thread.get_by_role("button", name="Like this review")
    assert await like.get_attribute("aria-pressed") == "false"
    await like.click()
    await expect(like).to_have_attribute("aria-pressed", "true")  # the page after the post
    await page.reload()
    assert await like.get_attribute("aria-pressed") == "true"
    assert await like.locator(".likes").inner_text() == "1"
    return thread, like


async def _reply_and_take_the_like_back(page: Any, thread: Any, like: Any, word: str) -> None:
    """A blank reply is refused with the message next to its box, then a real one is posted
    (and liked); then the like on the review is taken back."""
    await thread.locator("summary").focus()
    await page.keyboard.press("Enter")  # a reply box opens from the keyboard
    await thread.get_by_label("Your reply").fill("   ")
    await thread.get_by_role("button", name="Post reply").click()
    box = thread.get_by_label("Your reply")
    await expect(box).to_have_attribute("aria-invalid", "true")
    assert await page.locator(".review .error").inner_text()
    await box.fill(f"Mine too {word}")
    await thread.get_by_role("button", name="Post reply").click()
    await expect(page.locator("#flash")).to_have_text("Your reply is posted")
    await page.reload()
    reply = page.locator(".review .reply", has_text=f"Mine too {word}")
    assert "Dana" in await reply.inner_text()
    await reply.get_by_role("button", name="Like this reply").click()
    await expect(reply.get_by_role("button", name="Like this reply")).to_have_attribute("aria-pressed", "true")
    # Taking the like back on the review.
    await like.click()
    await expect(like).to_have_attribute("aria-pressed", "false")
    assert await like.locator(".likes").inner_text() == "0"


async def test_category_tree_likes_and_replies(stack: Cluster, browser: Any) -> None:
    web = f"http://{stack.addr('web')}"
    word = uuid.uuid4().hex[:6]
    can = await _garden(stack, word)
    page = await (await browser.new_context()).new_page()
    await _guest_browses_the_tree(page, web, word)
    thread, like = await _signed_in_likes_the_review(page, web, word, can)
    await _reply_and_take_the_like_back(page, thread, like, word)


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
    .filter(e => e.type !== 'hidden' && e.type !== 'submit')
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
    .map(e => e.name || e.id)"""


async def test_phone_width_and_keyboard(stack: Cluster, browser: Any) -> None:
    web = f"http://{stack.addr('web')}"
    word = uuid.uuid4().hex[:6]
    async with admin_api(stack) as (http, token):
        body = {"name": f"Lamps with a long name {word}", "slug": f"lamps-{word}"}
        category = (await http.post("/api/v1/categories", headers=token, json=body)).json()
        lamp = await make_product(http, token, category["id"], f"Desk lamp {word}")
    phone = await (await browser.new_context(viewport={"width": 390, "height": 800})).new_page()
    for path in ("/", "/catalog", f"/catalog?category_id={category['id']}", f"/products/{lamp['id']}", "/signin",
                 "/signup", "/cart"):  # fmt: skip
        await phone.goto(web + path)
        assert await phone.evaluate("document.documentElement.scrollWidth") <= 390, f"{path} scrolls sideways"
        assert await phone.evaluate(UNLABELLED) == [], f"{path} has controls without a label"

    # Keyboard only: tab from the top of the page to the form, type, submit with Enter.
    await phone.goto(f"{web}/signin")
    await phone.keyboard.press("Tab")
    assert await phone.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(30):
        if await phone.evaluate("document.activeElement.id") == "f-email":
            break
        await phone.keyboard.press("Tab")
    assert await phone.evaluate("document.activeElement.labels[0].textContent") == "Email"
    email = unique_email().lower()
    await create_admin(stack, email)
    await phone.keyboard.type(email)
    await phone.keyboard.press("Tab")
    assert await phone.evaluate("document.activeElement.labels[0].textContent") == "Password"
    await phone.keyboard.type(PASSWORD)
    await phone.keyboard.press("Enter")
    await phone.get_by_role("button", name="Sign out").wait_for()
    pages = (f"/products/{lamp['id']}", "/checkout", "/notifications", "/orders", "/admin", "/admin/products",
             f"/admin/products/{lamp['id']}")  # fmt: skip
    for path in pages:
        await phone.goto(web + path)
        assert await phone.evaluate("document.documentElement.scrollWidth") <= 390, f"{path} scrolls sideways"
        assert await phone.evaluate(UNLABELLED) == [], f"{path} has controls without a label"
