"""Database round trips per request, counted with PyMongo's command listener: a change that adds
one to a route shows here. The outbox publishes after the write and removes in the sweep, on
tasks of their own, so they are not the request's."""

from ticketing_testing import bearer

TICKETS = "/api/tickets"


async def test_each_route_costs_its_known_round_trips(client, mongo_commands, new_ticket):
    seller = bearer()
    ticket = await new_ticket(headers=seller)
    with mongo_commands.counting() as sell:
        answer = await client.post(TICKETS, json={"title": "t", "price": 5}, headers=seller)
        assert answer.status_code == 201
    with mongo_commands.counting() as page:
        assert (await client.get(TICKETS)).status_code == 200
    with mongo_commands.counting() as show:
        assert (await client.get(f"{TICKETS}/{ticket['id']}")).status_code == 200
    with mongo_commands.counting() as edit:
        body = {"title": "new", "price": 6}
        answer = await client.put(f"{TICKETS}/{ticket['id']}", json=body, headers=seller)
        assert answer.status_code == 200

    assert sell == ["insert"]  # the ticket and its `ticket:created`, one write
    assert page == ["find"]
    assert show == ["find"]
    assert edit == ["find", "findAndModify"]  # read, decide, write if unchanged since
