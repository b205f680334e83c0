"""Rendering: the money filter, the headers every page carries, and the order pages' texts
for each status (the templates compare with `statuses`, i.e. `OrderStatus`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from ticketing_client.views import content_policy, env, money, page, redirect
from ticketing_common.events import OrderStatus

if TYPE_CHECKING:
    from .support import MakeVisitor

SEED = "v" * 43


@pytest.mark.parametrize(
    ("value", "shown"),
    [(20, "$20.00"), ("35.5", "$35.50"), (1234567.891, "$1,234,567.89"), ("n/a", "n/a")],
)
def test_money(value: Any, shown: str) -> None:
    assert money(value) == shown


def test_content_policy() -> None:
    plain, stripe = content_policy(False), content_policy(True)
    assert "script-src 'self';" in plain and "frame-src 'none'" in plain
    assert "frame-ancestors 'none'" in plain and "form-action 'self'" in plain
    assert "script-src 'self' https://js.stripe.com;" in stripe
    assert "connect-src 'self' https://api.stripe.com" in stripe


def test_a_page_carries_the_form_token_and_headers(make_visitor: MakeVisitor) -> None:
    visitor = make_visitor(csrf=SEED)
    response = page(visitor, "error.html", status=404, title="Page not found", detail="None.")
    html = bytes(response.body).decode()
    assert response.status_code == 404 and response.media_type == "text/html"
    assert "<h1>Page not found</h1>" in html and "Sign In" in html
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["content-security-policy"] == content_policy(False)
    assert "set-cookie" not in response.headers  # the browser has its seed


def test_a_new_visitor_gets_its_seed_after_the_apis_cookies(make_visitor: MakeVisitor) -> None:
    visitor = make_visitor()
    response = redirect(visitor, "/", cookies=["session=x; Path=/"])
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert response.headers.getlist("set-cookie") == ["session=x; Path=/", visitor.csrf_cookie()]


def test_statuses_are_common_order_statuses() -> None:
    assert env.globals["statuses"] is OrderStatus


def order(status: str, **more: Any) -> dict[str, Any]:
    """An order as the orders API answers it."""
    values = {"id": "o" * 24, "status": status, "price": 10, "refunded": False, **more}
    return {**values, "ticket": {"title": "Show"}}


def order_page(make_visitor: MakeVisitor, status: str, **more: Any) -> str:
    payable = status in ("created", "awaiting:payment")
    response = page(
        make_visitor(csrf=SEED),
        "order_show.html",
        order=order(status, **more),
        ticket={"title": "Show"},
        seconds_left=60 if payable else 0,
        expired=not payable,
        payable=payable,
        test_cards=(("pm_card_visa", "Visa (succeeds)"),),
        token="pm_card_visa",
    )
    return bytes(response.body).decode()


def test_order_page_of_each_status(make_visitor: MakeVisitor) -> None:
    open_ = order_page(make_visitor, "created")
    assert "Time left to pay: 60 seconds" in open_ and "Pay $10.00" in open_
    paid = order_page(make_visitor, "complete")
    assert "has been paid" in paid and "Pay $" not in paid
    cancelled = order_page(make_visitor, "cancelled")
    assert "This order is cancelled: it was not paid in time." in cancelled
    assert "Order Expired" in cancelled and "Your payment was refunded" not in cancelled
    refunded = order_page(make_visitor, "cancelled", refunded=True)
    assert "Your payment was refunded." in refunded


def test_orders_list_marks_refunds_of_cancelled_orders(make_visitor: MakeVisitor) -> None:
    orders = [
        order("cancelled", refunded=True),
        order("complete", refunded=True),  # cannot happen; shown as it is, no badge
    ]
    html = bytes(page(make_visitor(csrf=SEED), "orders.html", orders=orders).body).decode()
    assert html.count("status-refunded") == 1 and ">cancelled<" in html and ">complete<" in html


@pytest.mark.parametrize(
    ("status", "says", "link"),
    [
        ("complete", "You bought this ticket.", "View your order"),
        ("created", "You have reserved this ticket.", "Continue to payment"),
    ],
)
def test_ticket_page_of_the_buyers_order(
    make_visitor: MakeVisitor, status: str, says: str, link: str
) -> None:
    response = page(
        make_visitor(csrf=SEED),
        "ticket_show.html",
        ticket={"id": "t" * 24, "title": "Show", "price": 5},
        my_order=order(status),
        own=False,
        reserved=True,
    )
    html = bytes(response.body).decode()
    assert says in html and link in html and "Purchase" not in html
