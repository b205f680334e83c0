"""expiration's /metrics: how late after `expiresAt` each `expiration:complete` went out."""

from ticketing_testing import eventually, scrape

from .support import in_seconds, order_created

LATENESS = "ticketing_expiration_lateness_seconds"
SUBJECT = {"subject": "expiration.complete"}


async def test_the_lateness_of_each_expiry_is_observed(client, publish, expirations):
    assert (await scrape(client)).value(f"{LATENESS}_count") == 0
    events = [order_created(in_seconds(0.5)), order_created(in_seconds(1))]
    for event in events:
        await publish(event)

    async def observed():
        found = await scrape(client)
        return found if found.value(f"{LATENESS}_count", **SUBJECT) == 2 else None

    found = await eventually(observed)
    for event in events:
        assert await expirations.of(event.id)
    # Late by about the worker's poll delay (50 ms by default): both well under 10 s.
    assert 0 <= found.value(f"{LATENESS}_sum", **SUBJECT) < 2 * 5
    assert found.value(f"{LATENESS}_bucket", le="10.0", **SUBJECT) == 2
