"""Database round trips per request, counted with PyMongo's command listener: a change that adds
one to a route shows here."""

USERS = "/api/users"
BODY = {"email": "trips@test.dev", "password": "password"}


async def test_each_route_costs_its_known_round_trips(client, mongo_commands):
    with mongo_commands.counting() as signup:
        assert (await client.post(f"{USERS}/signup", json=BODY)).status_code == 201
    with mongo_commands.counting() as me:
        assert (await client.get(f"{USERS}/currentuser")).status_code == 200
    with mongo_commands.counting() as signout:
        assert (await client.post(f"{USERS}/signout")).status_code == 200
    with mongo_commands.counting() as signin:
        assert (await client.post(f"{USERS}/signin", json=BODY)).status_code == 200
    with mongo_commands.counting() as wrong:
        body = {**BODY, "password": "not it"}
        assert (await client.post(f"{USERS}/signin", json=body)).status_code == 400

    assert signup == ["insert"]  # the unique index refuses a taken email: no read first
    assert me == signout == []  # the session cookie says who it is
    # The attempt is recorded before the hash (so a burst is counted), the failures in the
    # window read, the user read; a right password forgives the attempt, a wrong one keeps it.
    assert signin == ["insert", "find", "find", "delete"]
    assert wrong == ["insert", "find", "find"]
