"""Database round trips per payment, counted with PyMongo's command listener: a change that adds
one shows here. The Stripe call sits between them and is not counted."""

from .support import add_order, new_id

PAY = "/api/payments"


async def test_a_payment_costs_its_known_round_trips(client, db, signin, mongo_commands):
    user_id = new_id()
    order = await add_order(db, user_id=user_id, price=20)
    body = {"token": "pm_card_visa", "orderId": str(order["_id"])}
    with mongo_commands.counting() as pay:
        answer = await client.post(PAY, json=body, headers=signin(user_id))
        assert answer.status_code == 201, answer.text
    # The attempt recorded on the order's document before Stripe is called, then settled
    # there with `payment:created`: two conditional writes, no read first.
    assert pay == ["findAndModify", "findAndModify"]
