"""The pages in a real browser: Playwright driving Debian's Chromium through the ingress.

Screenshots of every page, at 1280x800 and at 375 px wide, go to `screenshots/` at the root.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright", reason="playwright is not installed (root dev group)")

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
SHOTS = Path(__file__).resolve().parents[2] / "screenshots"
SIZES = {"desktop": (1280, 800), "phone": (375, 740)}

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_visitor(chromium: Browser) -> Iterator[Callable[[str], Page]]:
    """Each call: a fresh browser profile (own cookies) on the given base URL."""
    contexts: list[BrowserContext] = []

    def make(base_url: str) -> Page:
        context = chromium.new_context(base_url=base_url, viewport={"width": 1280, "height": 800})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def shot(page: Page, name: str) -> None:
    """Screenshots of the page as it stands, on a desktop and on a phone."""
    SHOTS.mkdir(exist_ok=True)
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(SHOTS / f"{name}-{size}.png"), full_page=True)
    page.set_viewport_size({"width": SIZES["desktop"][0], "height": SIZES["desktop"][1]})


def reload_until(page: Page, check: Callable[[Page], bool], within: float = 20.0) -> None:
    """Reload until `check` holds: what crosses the event bus arrives a little later."""
    deadline = time.monotonic() + within
    while not check(page):
        assert time.monotonic() < deadline, f"{page.url} never showed what was expected"
        page.wait_for_timeout(250)
        page.reload()


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def sign_up(page: Page, email: str | None = None) -> str:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    page.goto("/auth/signup")
    page.get_by_label("Email Address").fill(email)
    page.get_by_label("Password").fill("secret")
    page.get_by_role("button", name="Sign Up").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("link", name="Sign Out")).to_be_visible()
    return email


def sell(page: Page, title: str, price: str) -> None:
    page.get_by_role("link", name="Sell Tickets").click()
    expect(page).to_have_url(re.compile(r"/tickets/new$"))
    page.get_by_label("Title").fill(title)
    page.get_by_label("Price").fill(price)
    page.get_by_role("button", name="Submit").click()
    expect(page).to_have_url(re.compile(r"/$"))


def purchase(page: Page, title: str) -> None:
    page.goto("/")
    page.get_by_role("link", name=f"View {title}").click()
    expect(page.get_by_role("heading", name=title)).to_be_visible()
    page.get_by_role("button", name="Purchase").click()
    expect(page).to_have_url(re.compile(r"/orders/[0-9a-f]{24}$"))


def listed(title: str) -> Callable[[Page], bool]:
    return lambda page: page.get_by_text(title).count() > 0


def test_sell_buy_decline_and_pay(stack: Any, new_visitor: Callable[[str], Page]) -> None:
    seller = new_visitor(stack.url)
    seller.goto("/")
    expect(seller.get_by_role("heading", name="Tickets")).to_be_visible()
    shot(seller, "home-signed-out")
    seller.goto("/auth/signup")
    shot(seller, "signup")
    seller.get_by_label("Email Address").fill("not an email")
    seller.get_by_label("Password").fill("x")
    seller.get_by_role("button", name="Sign Up").click()
    expect(seller.locator(".errors")).to_contain_text("Email must be valid")
    shot(seller, "signup-errors")
    sign_up(seller)

    # A form error (price 0) is shown under the form; then the ticket goes on sale.
    title = unique("Jazz Night")
    seller.get_by_role("link", name="Sell Tickets").click()
    shot(seller, "sell")
    seller.get_by_label("Title").fill(title)
    seller.get_by_label("Price").fill("0")
    seller.get_by_role("button", name="Submit").click()
    errors = seller.locator("form .errors")
    expect(errors).to_contain_text("Price must be greater than 0")
    shot(seller, "sell-error")
    seller.get_by_label("Price").fill("20")
    seller.get_by_label("Title").focus()  # leaving the field shows two decimals
    expect(seller.get_by_label("Price")).to_have_value("20.00")
    seller.get_by_role("button", name="Submit").click()
    expect(seller).to_have_url(re.compile(r"/$"))
    expect(seller.get_by_text(title)).to_be_visible()
    shot(seller, "home-signed-in")

    buyer = new_visitor(stack.url)
    sign_up(buyer)
    expect(buyer.get_by_role("row", name=re.compile(re.escape(title)))).to_contain_text("$20.00")
    buyer.get_by_role("link", name=f"View {title}").click()
    expect(buyer.get_by_text("Price: $20.00")).to_be_visible()
    shot(buyer, "ticket")
    buyer.get_by_role("button", name="Purchase").click()
    expect(buyer).to_have_url(re.compile(r"/orders/[0-9a-f]{24}$"))
    order_url = buyer.url

    countdown = buyer.locator("#countdown")
    expect(countdown).to_have_text(re.compile(r"^Time left to pay: \d+ seconds$"))
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first)  # the script counts down
    expect(countdown).to_have_text(re.compile(r"^Time left to pay: \d+ seconds$"))
    shot(buyer, "order")

    buyer.get_by_label("Declined card").check()
    buyer.get_by_role("button", name=re.compile(r"^Pay \$20\.00$")).click()
    expect(buyer.locator("form .errors")).to_contain_text("Your card was declined.")
    shot(buyer, "order-declined")

    buyer.get_by_label("Visa (succeeds)").check()
    buyer.get_by_role("button", name=re.compile(r"^Pay ")).click()
    expect(buyer).to_have_url(re.compile(r"/orders$"))
    row = buyer.get_by_role("row", name=re.compile(re.escape(title)))
    reload_until(buyer, lambda p: "complete" in row.inner_text())
    expect(buyer.get_by_role("link", name="My Orders")).to_be_visible()
    shot(buyer, "orders")

    buyer.goto(order_url)
    expect(buyer.get_by_text("This order is complete")).to_be_visible()
    expect(buyer.get_by_role("button", name=re.compile(r"^Pay "))).to_have_count(0)
    shot(buyer, "order-complete")

    buyer.goto("/")
    reload_until(buyer, lambda p: not listed(title)(p))


def test_signed_out_visitor_and_unknown_pages(
    stack: Any, new_visitor: Callable[[str], Page]
) -> None:
    page = new_visitor(stack.url)
    page.goto("/tickets/new")
    expect(page).to_have_url(re.compile(r"/auth/signin$"))
    expect(page.get_by_role("heading", name="Sign In")).to_be_visible()
    shot(page, "signin")
    response = page.goto("/tickets/0123456789abcdef01234567")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    shot(page, "not-found")


def test_unpaid_order_expires(tmp_path: Path, new_visitor: Callable[[str], Page]) -> None:
    from devstack.testing import start_stack

    with start_stack(tmp_path, {"EXPIRATION_WINDOW_SECONDS": "4"}) as short:
        seller = new_visitor(short.url)
        sign_up(seller)
        title = unique("Matinee")
        sell(seller, title, "9.99")

        buyer = new_visitor(short.url)
        sign_up(buyer)
        purchase(buyer, title)
        # However little of the window is left when the page shows, it ends as "Order Expired".
        expect(buyer.locator(".countdown")).to_have_text("Order Expired")
        expect(buyer.locator("#pay-form")).to_be_hidden()
        shot(buyer, "order-expired")

        # The expiration service cancels the order; the ticket is on sale again.
        reload_until(buyer, lambda p: p.get_by_text("This order is cancelled").count() > 0)
        expect(buyer.get_by_text("Order Expired")).to_be_visible()
        shot(buyer, "order-cancelled")
        buyer.goto("/")
        reload_until(buyer, listed(title))


def test_pages_work_without_javascript(stack: Any, chromium: Browser) -> None:
    """Forms do the work; the countdown shows the server's figure and stays put."""
    contexts = [
        chromium.new_context(base_url=stack.url, java_script_enabled=False) for _ in range(2)
    ]
    try:
        seller, buyer = (context.new_page() for context in contexts)
        sign_up(seller)
        title = unique("Quiet Show")
        sell(seller, title, "7.5")
        sign_up(buyer)
        purchase(buyer, title)
        countdown = buyer.locator("#countdown")
        expect(countdown).to_have_text(re.compile(r"^Time left to pay: \d+ seconds$"))
        buyer.get_by_label("Visa (succeeds)").check()
        buyer.get_by_role("button", name="Pay $7.50").click()
        expect(buyer).to_have_url(re.compile(r"/orders$"))
        row = buyer.get_by_role("row", name=re.compile(re.escape(title)))
        reload_until(buyer, lambda p: "complete" in row.inner_text())
    finally:
        for context in contexts:
            context.close()


def wait_until(check: Callable[[], Any], within: float = 20.0) -> Any:
    """Poll `check` until it holds: for what the page does not show (the fake Stripe, a store)."""
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)
    return result


def test_an_order_cancelled_while_paying_is_refunded(
    stack: Any, new_visitor: Callable[[str], Page]
) -> None:
    """The buyer pays; while Stripe's call is held at the fake Stripe server, another tab
    cancels the order; then Stripe charges. The charge is refunded and the pages say so."""
    import httpx
    from bson import ObjectId
    from pymongo import MongoClient

    seller = new_visitor(stack.url)
    sign_up(seller)
    title = unique("Refund Gala")
    sell(seller, title, "15")
    buyer = new_visitor(stack.url)
    sign_up(buyer)
    purchase(buyer, title)
    order_url = buyer.url
    order_id = order_url.rsplit("/", 1)[1]

    with (
        httpx.Client(base_url=stack.urls["stripe"], timeout=10) as fake,
        MongoClient(stack.urls["mongo"]) as mongo,
    ):
        replicas = mongo["payments"]["orders"]
        try:
            wait_until(lambda: replicas.find_one({"_id": ObjectId(order_id)}))  # payments knows it
            rule = {"hold": True, "match": "POST /v1/payment_intents", "count": 1}
            assert fake.post("/_test/faults", json=rule).status_code == 200
            buyer.get_by_label("Visa (succeeds)").check()
            buyer.get_by_role("button", name="Pay $15.00").click(no_wait_after=True)
            wait_until(lambda: fake.get("/_test/faults").json()["held"] == 1)

            # Another tab of the same buyer cancels the order meanwhile.
            (session,) = [c["value"] for c in buyer.context.cookies() if c["name"] == "session"]
            with httpx.Client(base_url=stack.url, cookies={"session": session}) as tab:
                assert tab.delete(f"/api/orders/{order_id}").status_code == 204
            cancelled = {"_id": ObjectId(order_id), "status": "cancelled"}
            wait_until(lambda: replicas.find_one(cancelled))  # payments has heard of it
            assert fake.post("/_test/faults/release", json={}).json()["released"] == 1
        finally:
            fake.delete("/_test/faults")

        # The payment is refused for the cancelled order: the order page, which says so.
        expect(buyer.get_by_text("This order is cancelled")).to_be_visible()
        expect(buyer).to_have_url(order_url)
        shot(buyer, "order-cancelled-while-paying")
        intents = fake.get("/_test/payment_intents").json()["data"]
        (intent,) = [i for i in intents if i["metadata"].get("orderId") == order_id]
        assert intent["amount_refunded"] == intent["amount_received"] == 1500

    buyer.goto(order_url)  # a GET: reloading the answer to the form would post it again
    reload_until(buyer, lambda p: p.get_by_text("Your payment was refunded.").count() > 0)
    expect(buyer.get_by_text("Status: cancelled")).to_be_visible()
    expect(buyer.get_by_role("button", name=re.compile(r"^Pay "))).to_have_count(0)
    shot(buyer, "order-refunded")

    buyer.get_by_role("link", name="My Orders", exact=True).click()
    row = buyer.get_by_role("row", name=re.compile(re.escape(title)))
    expect(row.locator(".status-cancelled")).to_have_text("cancelled")
    expect(row.locator(".status-refunded")).to_have_text("refunded")
    shot(buyer, "orders-refunded")
