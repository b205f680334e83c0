"""The tickets API's bodies, pure: the SPEC's messages for broken rules, the query rules, the
ticket as answered, and the OpenAPI schemas of every route. No server."""

import pytest
from bson import ObjectId
from pydantic import TypeAdapter, ValidationError

from ticketing_testing import TEST_JWT_KEY
from ticketing_tickets.domain import new_ticket
from ticketing_tickets.schemas import (
    OFFSET_MAX,
    After,
    Limit,
    NewTicket,
    Offset,
    TicketEdit,
    TicketOut,
    next_cursor,
)
from ticketing_tickets.service import SERVICE
from ticketing_tickets.settings import Settings

TITLE = ("title", "Title is required")
NEW_PRICE = ("price", "Price must be greater than 0")
OFFSET_RULE = "Offset must be between 0 and 10000"
AFTER_RULE = "After must be a cursor from a previous page's Link header"
EDIT_PRICE = ("price", "Price must be provided and must be greater than 0")


def failures(model, body):
    with pytest.raises(ValidationError) as failed:
        model.model_validate(body)
    return [(str(e["loc"][0]), e["msg"]) for e in failed.value.errors()]


@pytest.mark.parametrize("model", [NewTicket, TicketEdit])
def test_a_title_is_trimmed_and_a_price_may_be_a_numeric_string(model):
    body = model.model_validate({"title": "  concert  ", "price": " 19.99 "})
    assert (body.title, body.price) == ("concert", 19.99)


@pytest.mark.parametrize(
    ("model", "price_rule"), [(NewTicket, NEW_PRICE), (TicketEdit, EDIT_PRICE)]
)
def test_every_failed_rule_is_listed_with_its_message(model, price_rule):
    assert failures(model, {}) == [TITLE, price_rule]


@pytest.mark.parametrize("title", ["", "   ", None, 12, ["a"], "x" * 201])
def test_a_blank_too_long_or_not_text_title_is_required(title):
    assert failures(NewTicket, {"title": title, "price": 10}) == [TITLE]
    assert failures(TicketEdit, {"title": title, "price": 10}) == [TITLE]


@pytest.mark.parametrize(
    "price",
    [-10, 0, "0", "abc", "", True, False, None, [1], {"a": 1}, "NaN", "Infinity", "-Infinity",
     "1e7", 1e7, 1_000_000.01, 1.234, "1.234"],
)  # fmt: skip
def test_a_price_must_be_positive_at_most_a_million_with_two_decimals(price):
    assert failures(NewTicket, {"title": "concert", "price": price}) == [NEW_PRICE]
    assert failures(TicketEdit, {"title": "concert", "price": price}) == [EDIT_PRICE]


@pytest.mark.parametrize(
    ("rule", "value", "message"),
    [
        (Limit, 0, "Limit must be between 1 and 100"),
        (Limit, 101, "Limit must be between 1 and 100"),
        (Limit, "1.5", "Limit must be between 1 and 100"),
        (Offset, -1, OFFSET_RULE),
        (Offset, "abc", OFFSET_RULE),
        (Limit, 2**63, "Limit must be between 1 and 100"),
        (Limit, str(2**64), "Limit must be between 1 and 100"),
        (Offset, 2**63, OFFSET_RULE),
        (Offset, str(2**63), OFFSET_RULE),
        (Offset, "9" * 40, OFFSET_RULE),
        (Offset, OFFSET_MAX + 1, OFFSET_RULE),
    ],
)
def test_query_rules_refuse_out_of_range_values(rule, value, message):
    with pytest.raises(ValidationError) as failed:
        TypeAdapter(rule).validate_python(value)
    assert [e["msg"] for e in failed.value.errors()] == [message]


def test_query_rules_take_their_bounds():
    assert TypeAdapter(Limit).validate_python("100") == 100
    assert TypeAdapter(Offset).validate_python(0) == 0
    assert TypeAdapter(Offset).validate_python(str(OFFSET_MAX)) == OFFSET_MAX == 10_000


def test_a_cursor_stands_for_the_listing_key_it_was_made_of():
    key = str(ObjectId())
    cursor = next_cursor(key)
    assert len(cursor) == 16 and "=" not in cursor
    assert TypeAdapter(After).validate_python(cursor) == key
    assert TypeAdapter(After).validate_python(None) is None


@pytest.mark.parametrize(
    "cursor", ["", "abc", "A" * 15, "A" * 17, "AAAAAAAAAAAAAAA=", "AAAAAAAAAAAAAAA/", " " * 16]
)
def test_anything_but_a_cursor_is_refused(cursor):
    with pytest.raises(ValidationError) as failed:
        TypeAdapter(After).validate_python(cursor)
    assert [e["msg"] for e in failed.value.errors()] == [AFTER_RULE]


def test_a_free_ticket_has_no_order_id_key_and_no_internals():
    ticket = new_ticket("concert", 20.0, "u1")
    shown = TicketOut.of(ticket).model_dump(mode="json", exclude_none=True)
    assert shown == {
        "id": str(ticket["_id"]),
        "title": "concert",
        "price": 20.0,
        "userId": "u1",
        "version": 0,
    }


def test_a_reserved_ticket_shows_its_order_id():
    ticket = {**new_ticket("concert", 20.0, "u1"), "orderId": "o1", "releasedOrders": {"o0": True}}
    shown = TicketOut.of(ticket).model_dump(mode="json", exclude_none=True)
    assert shown["orderId"] == "o1"
    assert "releasedOrders" not in shown and "rev" not in shown


def test_every_route_declares_the_ticket_as_its_answer():
    settings = Settings(
        mongo_uri="mongodb://db/tickets", nats_url="nats://nats", jwt_key=TEST_JWT_KEY
    )
    api = SERVICE.build(settings).openapi()
    ticket_ref = "#/components/schemas/TicketOut"
    answers = {}
    for path, methods in api["paths"].items():
        for method, operation in methods.items():
            (ok,) = [code for code in operation["responses"] if code.startswith("2")]
            answers[(method, path)] = operation["responses"][ok]["content"]["application/json"]
    assert set(answers) == {
        ("post", "/api/tickets"),
        ("get", "/api/tickets"),
        ("get", "/api/tickets/{ticket_id}"),
        ("put", "/api/tickets/{ticket_id}"),
    }
    for (method, path), content in answers.items():
        schema = content["schema"]
        ref = schema["items"]["$ref"] if schema.get("type") == "array" else schema["$ref"]
        assert ref == ticket_ref, (method, path)
    fields = api["components"]["schemas"]["TicketOut"]["properties"]
    assert set(fields) == {"id", "title", "price", "userId", "version", "orderId"}
