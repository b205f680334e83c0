"""Crash safety: an order stored with its event, and then the process died before publishing."""

import signal
import subprocess
from datetime import UTC, datetime

import httpx
from bson import ObjectId

from ticketing_common.bus import EventBus
from ticketing_common.embedded import free_port, start_nats
from ticketing_orders.domain import new_order
from ticketing_testing import eventually, spawn_service, stream_messages, until_ready


async def test_an_event_left_in_the_outbox_is_published_once_at_start(
    start, new_ticket, db, published
):
    ticket = await new_ticket()
    user_id = str(ObjectId())
    doc = new_order(user_id, ticket, datetime.now(UTC), 900)
    await db["orders"].insert_one(doc)  # written, never published: the process died here

    async with start():
        (event,) = await eventually(lambda: published("order.created"))

        assert event["id"] == str(doc["_id"])
        assert event["userId"] == user_id
        assert event["ticket"] == {"id": str(ticket["_id"]), "price": ticket["price"]}

        async def sent():
            stored = await db["orders"].find_one({"_id": doc["_id"]})
            return "outbox" not in stored

        assert await eventually(sent)

    # Started again (and stopped, with its final relay pass): nothing goes out twice.
    async with start():
        pass
    assert len(await published("order.created")) == 1


def _spawn_orders(mongo_uri: str, nats_url: str, port: int) -> subprocess.Popen[bytes]:
    return spawn_service("ticketing_orders", port, MONGO_URI=mongo_uri, NATS_URL=nats_url)


async def test_an_order_survives_a_kill_between_its_write_and_its_publish(
    tmp_path, mongo_uri, db, new_ticket, signin
):
    """A real process, killed with SIGKILL while NATS is away: restarted, it publishes once."""
    nats_port, http_port = free_port(), free_port()
    own_nats = f"nats://127.0.0.1:{nats_port}"
    url = f"http://127.0.0.1:{http_port}"
    broker = start_nats(tmp_path / "nats", nats_port)
    service = _spawn_orders(mongo_uri, own_nats, http_port)
    try:
        await until_ready(url, service)
        ticket = await new_ticket()
        broker.stop()  # from here on, nothing the service stores can be published
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post(
                "/api/orders", json={"ticketId": str(ticket["_id"])}, headers=signin()
            )
        assert response.status_code == 201, response.text
        order_id = ObjectId(response.json()["id"])
        service.send_signal(signal.SIGKILL)
        service.wait(10)
        stored = await db["orders"].find_one({"_id": order_id})
        assert stored is not None and stored.get("outbox"), "the event waits in the outbox"

        broker = start_nats(tmp_path / "nats", nats_port)
        for _ in range(2):  # restarted, then killed and restarted again
            service = _spawn_orders(mongo_uri, own_nats, http_port)
            await until_ready(url, service)

            async def sent() -> bool:
                doc = await db["orders"].find_one({"_id": order_id})
                return doc is not None and "outbox" not in doc

            await eventually(sent)
            service.send_signal(signal.SIGKILL)
            service.wait(10)

        bus = await EventBus.connect(own_nats, name="crash-test", stream="TICKETING")
        try:
            subjects = [message["subject"] for message in await stream_messages(bus)]
        finally:
            await bus.close()
        assert subjects == ["order.created"]
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(10)
        broker.stop()
