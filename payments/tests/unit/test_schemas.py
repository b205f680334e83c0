"""The payments API's input and output (`schemas`), no server."""

import pytest
from pydantic import ValidationError

from ticketing_payments.schemas import MAX_TOKEN_LENGTH, NewPayment, PaymentOut, Received


def failures(body: object) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        NewPayment.model_validate(body)
    return [(str(e["loc"][0]), e["msg"]) for e in caught.value.errors()]


def test_a_payment_names_a_card_and_an_order_trimmed():
    payment = NewPayment.model_validate({"token": " pm_card_visa ", "orderId": " o1 "})
    assert (payment.token, payment.orderId) == ("pm_card_visa", "o1")


def test_each_missing_or_empty_field_is_an_invalid_value():
    assert failures({}) == [("token", "Invalid value"), ("orderId", "Invalid value")]
    for body, field in (
        ({"token": "   ", "orderId": "o1"}, "token"),
        ({"token": 42, "orderId": "o1"}, "token"),
        ({"token": "t" * (MAX_TOKEN_LENGTH + 1), "orderId": "o1"}, "token"),
        ({"token": "pm_card_visa", "orderId": None}, "orderId"),
    ):
        assert failures(body) == [(field, "Invalid value")], body
    assert NewPayment.model_validate({"token": "t" * MAX_TOKEN_LENGTH, "orderId": "o1"})


def test_the_answers_are_the_spec_s_json():
    assert PaymentOut(id="p1").model_dump(mode="json") == {"id": "p1"}
    assert Received(received=True).model_dump(mode="json") == {"received": True}
