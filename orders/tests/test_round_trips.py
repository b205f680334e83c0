"""Database round trips per request, counted with PyMongo's command listener: a change that adds
one to a route shows here. The outbox publishes after the write and removes in the sweep, on
tasks of their own, so they are not the request's."""

ORDERS = "/api/orders"


async def test_each_route_costs_its_known_round_trips(client, mongo_commands, signin, new_ticket):
    buyer = signin()
    ticket = await new_ticket()
    with mongo_commands.counting() as place:
        answer = await client.post(ORDERS, json={"ticketId": str(ticket["_id"])}, headers=buyer)
        assert answer.status_code == 201
    order = answer.json()["id"]
    with mongo_commands.counting() as mine:
        assert (await client.get(ORDERS, headers=buyer)).status_code == 200
    with mongo_commands.counting() as show:
        assert (await client.get(f"{ORDERS}/{order}", headers=buyer)).status_code == 200
    with mongo_commands.counting() as cancel:
        assert (await client.delete(f"{ORDERS}/{order}", headers=buyer)).status_code == 204

    assert place == ["find", "insert"]  # the ticket's replica; the order and `order:created`
    assert show == ["find", "find"]  # the order, its ticket
    assert cancel == ["find", "findAndModify"]  # read, decide, write if unchanged since
    assert mine == ["find", "find"]  # the orders, then their tickets in one query

    for _ in range(3):
        ticket = await new_ticket()
        body = {"ticketId": str(ticket["_id"])}
        assert (await client.post(ORDERS, json=body, headers=buyer)).status_code == 201
    with mongo_commands.counting() as four:
        assert len((await client.get(ORDERS, headers=buyer)).json()) == 4
    assert four == mine  # not one query per order
