"""Every page, server side, through the ingress of the running system."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bson import ObjectId

from ticketing_testing import Start, eventually

from .support import Browser, csrf_token, unique

if TYPE_CHECKING:
    from devstack.stack import Stack

TOKEN_ERROR = "Invalid or missing form token"


def order_id_of(location: str) -> str:
    found = re.fullmatch(r"/orders/([0-9a-f]{24})", location)
    assert found, location
    return found.group(1)


async def test_home_signed_out(visitor: Browser) -> None:
    page = await visitor.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for text in ("GitTix", "<h1>Tickets</h1>", "Sign Up", "Sign In", 'name="viewport"'):
        assert text in page.text
    for text in ("Sell Tickets", "My Orders", "Sign Out"):
        assert text not in page.text


async def test_signup_signs_in_and_goes_home(visitor: Browser) -> None:
    form = await visitor.get("/auth/signup")
    assert form.status_code == 200
    assert '<label for="email">' in form.text and '<label for="password">' in form.text
    email = await visitor.signup()
    assert "session" in visitor.http.cookies
    home = await visitor.get("/")
    for text in ("Sell Tickets", "My Orders", "Sign Out", email):
        assert text in home.text
    assert "Sign In" not in home.text


async def test_signup_lists_every_error(visitor: Browser) -> None:
    page = await visitor.submit("/auth/signup", {"email": "not-an-email", "password": "x"})
    assert page.status_code == 400
    assert "<li>Email must be valid</li>" in page.text
    assert "<li>Password must be between 4 and 20 characters</li>" in page.text
    assert 'value="not-an-email"' in page.text  # the visitor's input is kept
    assert "session" not in visitor.http.cookies


async def test_signup_email_in_use(browsers: list[Browser]) -> None:
    email = await browsers[0].signup()
    page = await browsers[1].submit("/auth/signup", {"email": email, "password": "secret"})
    assert page.status_code == 400
    assert "<li>Email in use</li>" in page.text


async def test_signin_and_signout(browsers: list[Browser]) -> None:
    email = await browsers[0].signup(password="right")
    visitor = browsers[1]
    page = await visitor.submit("/auth/signin", {"email": email, "password": "wrong"})
    assert page.status_code == 400
    assert "<li>Invalid credentials</li>" in page.text
    empty = await visitor.submit("/auth/signin", {"email": email, "password": ""})
    assert "<li>You must supply a password</li>" in empty.text

    done = await visitor.submit("/auth/signin", {"email": email, "password": "right"})
    assert done.status_code == 303 and done.headers["location"] == "/"
    assert "Sign Out" in (await visitor.get("/")).text

    out = await visitor.get("/auth/signout")
    assert out.status_code == 303 and out.headers["location"] == "/"
    assert "session" not in visitor.http.cookies
    home = await visitor.get("/")
    assert "Sign In" in home.text and "Sign Out" not in home.text


async def test_pages_that_need_a_user_send_to_signin(visitor: Browser) -> None:
    for path in ("/tickets/new", "/orders", f"/orders/{ObjectId()}"):
        page = await visitor.get(path)
        assert page.status_code == 303, path
        assert page.headers["location"] == "/auth/signin"
    posted = await visitor.submit("/tickets/new", {"title": "x", "price": "5"}, form="/auth/signin")
    assert posted.status_code == 303 and posted.headers["location"] == "/auth/signin"


async def test_sell_a_ticket(browsers: list[Browser]) -> None:
    seller, buyer = browsers[0], browsers[1]
    await seller.signup()
    form = await seller.get("/tickets/new")
    assert form.status_code == 200
    assert '<label for="title">' in form.text and '<label for="price">' in form.text
    title = unique("Concert")
    ticket_id = await seller.sell(title, "20")
    home = await buyer.get("/")
    row = home.text[home.text.index(title) :]
    assert "$20.00" in row[:300] and f'href="/tickets/{ticket_id}"' in row[:400]

    page = await buyer.get(f"/tickets/{ticket_id}")
    assert page.status_code == 200
    assert title in page.text and "Price: $20.00" in page.text and "Purchase" in page.text
    own = await seller.get(f"/tickets/{ticket_id}")
    assert "You are selling this ticket." in own.text


async def test_sell_form_lists_errors(visitor: Browser) -> None:
    await visitor.signup()
    page = await visitor.submit("/tickets/new", {"title": "  ", "price": "0"})
    assert page.status_code == 400
    assert "<li>Title is required</li>" in page.text
    assert "<li>Price must be greater than 0</li>" in page.text
    decimals = await visitor.submit("/tickets/new", {"title": "Show", "price": "1.234"})
    assert "<li>Price must be greater than 0</li>" in decimals.text
    assert 'value="Show"' in decimals.text


async def test_form_without_a_valid_token_is_refused(browsers: list[Browser]) -> None:
    visitor, other = browsers[0], browsers[1]
    await visitor.signup()
    await other.get("/")  # has a form token cookie of its own
    title = unique("Forged")
    attempts = [
        {"title": title, "price": "10"},
        {"title": title, "price": "10", "csrf_token": "0" * 64},
        {"title": title, "price": "10", "csrf_token": await other.token("/auth/signin")},
    ]
    for data in attempts:
        page = await visitor.http.post("/tickets/new", data=data)
        assert page.status_code == 403
        assert TOKEN_ERROR in page.text
    # A browser that never got the cookie (a cross-site post): refused too.
    stranger = browsers[2].http
    data = {"email": "a@b.co", "password": "secret", "csrf_token": "0" * 64}
    fresh = await stranger.post("/auth/signup", data=data)
    assert fresh.status_code == 403 and TOKEN_ERROR in fresh.text
    assert title not in (await visitor.get("/")).text


async def test_purchase_countdown_decline_and_pay(browsers: list[Browser]) -> None:
    seller, buyer, late = browsers
    await seller.signup()
    await buyer.signup()
    await late.signup()
    title = unique("Opera")
    ticket_id = await seller.sell(title, "35.5")

    bought = await buyer.submit(f"/tickets/{ticket_id}", {})
    assert bought.status_code == 303
    order_id = order_id_of(bought.headers["location"])
    page = await buyer.get(f"/orders/{order_id}")
    assert page.status_code == 200
    assert re.search(r"Time left to pay: \d+ seconds", page.text)
    assert "Visa (succeeds)" in page.text and "Declined card" in page.text
    assert 'value="pm_card_visa"' in page.text and 'value="pm_card_chargeDeclined"' in page.text
    assert "js.stripe.com" not in page.text
    assert "Pay $35.50" in page.text

    again = await late.submit(f"/tickets/{ticket_id}", {})
    assert again.status_code == 400
    assert "<li>Ticket is already reserved</li>" in again.text
    assert (await late.get(f"/orders/{order_id}")).status_code == 404

    declined = await buyer.submit(f"/orders/{order_id}", {"token": "pm_card_chargeDeclined"})
    assert declined.status_code == 402
    assert "<li>Your card was declined.</li>" in declined.text
    assert re.search(r"Time left to pay: \d+ seconds", declined.text)

    paid = await buyer.submit(f"/orders/{order_id}", {"token": "pm_card_visa"})
    assert paid.status_code == 303 and paid.headers["location"] == "/orders"

    async def complete() -> bool:
        orders = await buyer.get("/orders")
        row = orders.text[orders.text.find(title) :][:600]
        return title in orders.text and ">complete<" in row

    await eventually(complete)
    done = await buyer.get(f"/orders/{order_id}")
    assert "complete" in done.text and "has been paid" in done.text
    assert "Time left to pay" not in done.text and "Pay $" not in done.text

    async def gone() -> bool:
        return title not in (await buyer.get("/")).text

    await eventually(gone)
    ticket_page = await buyer.get(f"/tickets/{ticket_id}")
    assert "You bought this ticket." in ticket_page.text


async def test_cancelled_order_page(browsers: list[Browser], stack: Stack) -> None:
    import httpx

    seller, buyer = browsers[0], browsers[1]
    await seller.signup()
    await buyer.signup()
    ticket_id = await seller.sell(unique("Ballet"), "12")
    bought = await buyer.submit(f"/tickets/{ticket_id}", {})
    order_id = order_id_of(bought.headers["location"])
    # Cancelling is an API action only (the original had no page for it).
    session = buyer.http.cookies["session"]
    async with httpx.AsyncClient(base_url=stack.url, cookies={"session": session}) as api:
        gone = await api.delete(f"/api/orders/{order_id}")
    assert gone.status_code == 204
    page = await buyer.get(f"/orders/{order_id}")
    assert "This order is cancelled" in page.text
    assert "Time left to pay" not in page.text and "Pay $" not in page.text
    orders = await buyer.get("/orders")
    assert ">cancelled<" in orders.text


async def test_unknown_pages_are_html_404s(visitor: Browser) -> None:
    for path in (f"/tickets/{ObjectId()}", "/tickets/not-an-id", "/no/such/page"):
        page = await visitor.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html")
        assert "Page not found" in page.text and "GitTix" in page.text
    await visitor.signup()
    for path in (f"/orders/{ObjectId()}", "/orders/zzz"):
        page = await visitor.get(path)
        assert page.status_code == 404, path
        assert "Page not found" in page.text


async def test_static_files(visitor: Browser) -> None:
    home = await visitor.get("/")
    for name, kind in (("app.css", "text/css"), ("app.js", "javascript")):
        url = re.search(rf'"(/static/{name}\?v=[0-9a-f]+)"', home.text)
        assert url, name
        asset = await visitor.get(url.group(1))
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
        assert "immutable" in asset.headers["cache-control"]


async def test_stripe_elements_mode(browsers: list[Browser], start: Start) -> None:
    """With a publishable key the order page loads Stripe.js and posts the PaymentMethod id."""
    seller, buyer = browsers[0], browsers[1]
    await seller.signup()
    await buyer.signup()
    title = unique("Recital")
    ticket_id = await seller.sell(title, "15")
    bought = await buyer.submit(f"/tickets/{ticket_id}", {})
    order_id = order_id_of(bought.headers["location"])

    cookies = {"Cookie": "; ".join(f"{k}={v}" for k, v in buyer.http.cookies.items())}
    # The client in-process on the stack's APIs, with a publishable key of its own.
    async with start(stripe_publishable_key="pk_test_example") as client:
        page = await client.get(f"/orders/{order_id}", headers=cookies)
        assert page.status_code == 200
        assert '<script src="https://js.stripe.com/v3/"></script>' in page.text
        assert 'data-stripe-key="pk_test_example"' in page.text and 'id="card-element"' in page.text
        assert "Visa (succeeds)" not in page.text
        assert "https://js.stripe.com" in page.headers["content-security-policy"]
        # What Stripe.js would post once it has made a PaymentMethod.
        data = {"csrf_token": csrf_token(page.text), "token": "pm_card_visa"}
        paid = await client.post(f"/orders/{order_id}", data=data, headers=cookies)
        assert paid.status_code == 303 and paid.headers["location"] == "/orders"
        home = await client.get("/")
        assert "js.stripe.com" not in home.text  # loaded only where a card is asked for


async def test_home_pages_on_with_a_next_link(browsers: list[Browser]) -> None:
    seller, visitor = browsers[0], browsers[1]
    await seller.signup()
    titles = [unique(f"Paged {i:03d}") for i in range(105)]  # more than a page of 100
    for title in titles:
        sold = await seller.http.post("/api/tickets", json={"title": title, "price": 5})
        assert sold.status_code == 201, sold.text

    def shown(page: str) -> list[str]:
        return sorted((t for t in titles if t in page), key=page.index)

    home = await visitor.get("/")
    link = re.search(r'href="(/\?after=[\w-]{16})" rel="next">More tickets</a>', home.text)
    assert link, "no next link on the first page"
    assert shown(home.text) == titles[:4:-1]  # the 100 newest, newest first
    assert "Newest tickets" not in home.text

    more = await visitor.get(link.group(1))
    assert more.status_code == 200
    assert shown(more.text) == titles[4::-1]  # the next ones, newest first
    assert '<a class="button secondary" href="/">Newest tickets</a>' in more.text


async def test_a_mangled_page_link_is_a_400_page(visitor: Browser) -> None:
    page = await visitor.get("/?after=not-a-cursor")
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "There is no such page of tickets" in page.text
