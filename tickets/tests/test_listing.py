"""GET /api/tickets with the `after` cursor: the `Link: <...>; rel="next"` header, pages that
never repeat a ticket nor miss one that stays open while others are reserved, released and sold
between them, the open tickets stored before the listing key existed (listed at start), and
concurrent requests for a page sharing one read without missing a sale made before them."""

import asyncio
from urllib.parse import parse_qs, urlsplit

import pytest
from bson import ObjectId

from ticketing_common.coalesce import Coalesced
from ticketing_testing import eventually
from ticketing_tickets import repository

TICKETS = "/api/tickets"
AFTER_RULE = {
    "message": "After must be a cursor from a previous page's Link header",
    "field": "after",
}


def ids(page):
    return [t["id"] for t in page.json()]


def next_url(page):
    """The `rel="next"` reference of a page, or None on the last one."""
    link = page.links.get("next")
    return link["url"] if link else None


def cursor_of(page):
    """The `after` cursor in a page's next link."""
    return parse_qs(urlsplit(next_url(page)).query)["after"][0]


async def walk(client, url, between=None):
    """Every page from `url` on, following the next links; `between(seen)` runs between pages
    with the ids listed so far."""
    seen = []
    while url:
        page = await client.get(url)
        assert page.status_code == 200, page.text
        seen += ids(page)
        url = next_url(page)
        if url and between is not None:
            await between(seen)
    return seen


@pytest.fixture
def reserve(publish, acked, order_created):
    """Reserve a ticket through the bus; returns the order id once the service applied it."""

    async def hold(ticket):
        event = order_created(ticket)
        seq = await publish(event)
        await eventually(lambda: acked("order.created", seq))
        return event.id

    return hold


@pytest.fixture
def release(publish, acked, order_cancelled):
    """Cancel the order holding a ticket, through the bus, once the service applied it."""

    async def free(ticket, order_id):
        seq = await publish(order_cancelled(ticket, order_id))
        await eventually(lambda: acked("order.cancelled", seq))

    return free


async def test_the_cursor_pages_through_250_tickets_once_each_newest_first(client, new_ticket):
    made = [(await new_ticket(title=f"t{i}"))["id"] for i in range(250)]
    sizes = []

    async def count(seen):
        sizes.append(len(seen))

    listed = await walk(client, f"{TICKETS}?limit=100", count)
    assert sizes == [100, 200]  # three pages: no link after the last one
    assert listed == list(reversed(made))


async def test_pages_stay_stable_while_tickets_are_reserved_released_and_sold(
    client, new_ticket, reserve, release
):
    made = [await new_ticket(title=f"t{i}") for i in range(250)]
    newest_first = list(reversed(made))
    held = {t["id"]: await reserve(t) for t in newest_first[::10]}  # 25 reserved up front
    gone, back, behind, sold = set(), set(), set(), set()

    async def meanwhile(seen):
        # Between pages: reserve two open tickets still to come, release a reserved one still
        # to come and one already passed, and sell a new one (newer than every cursor).
        ahead = [t for t in newest_first if t["id"] < seen[-1]]
        for ticket in [t for t in ahead if t["id"] not in held][:2]:
            held[ticket["id"]] = await reserve(ticket)
            gone.add(ticket["id"])
        ticket = next(t for t in ahead if t["id"] in held and t["id"] not in gone)
        await release(ticket, held.pop(ticket["id"]))
        back.add(ticket["id"])
        ticket = next(t for t in newest_first if t["id"] > seen[-1] and t["id"] in held)
        await release(ticket, held.pop(ticket["id"]))
        behind.add(ticket["id"])
        sold.add((await new_ticket(title=f"new{len(seen)}"))["id"])

    listed = await walk(client, f"{TICKETS}?limit=100", meanwhile)
    assert len(listed) == len(set(listed))  # nothing twice
    assert listed == sorted(listed, reverse=True)  # newest first, across pages
    assert back <= set(listed)  # released before their page: listed in their place
    assert not (gone | behind | sold | set(held)) & set(listed)  # held, passed, or too new
    always_open = {t["id"] for t in newest_first} - gone - back - behind - set(held)
    assert always_open <= set(listed)
    # A fresh walk shows exactly what is open now, newest first.
    now = await walk(client, f"{TICKETS}?limit=100")
    assert now == sorted(sold | always_open | back | behind, reverse=True)
    assert len(now) == 250 + len(sold) - len(held)


async def test_a_reserved_ticket_is_not_listed_and_comes_back_in_its_place_when_released(
    client, new_ticket, reserve, release
):
    older, ticket, newer = [await new_ticket(title=t) for t in ("older", "ticket", "newer")]
    order_id = await reserve(ticket)
    assert ids(await client.get(TICKETS)) == [newer["id"], older["id"]]
    await release(ticket, order_id)
    assert ids(await client.get(TICKETS)) == [newer["id"], ticket["id"], older["id"]]


async def test_the_link_keeps_the_limit_and_drops_the_offset(client, new_ticket):
    made = [(await new_ticket(title=f"t{i}"))["id"] for i in range(5)]
    newest_first = list(reversed(made))
    first = await client.get(TICKETS, params={"limit": 2, "offset": 1})
    assert ids(first) == newest_first[1:3]
    url = next_url(first)
    assert url.startswith(f"{TICKETS}?limit=2&after=")
    assert first.headers["link"] == f'<{url}>; rel="next"'
    second = await client.get(url)
    assert ids(second) == newest_first[3:5]
    assert next_url(second) is None  # the last page has no link
    assert next_url(await client.get(TICKETS, params={"limit": 5})) is None


async def test_the_offset_still_works_and_counts_past_the_cursor(client, new_ticket):
    made = [(await new_ticket(title=f"t{i}"))["id"] for i in range(6)]
    newest_first = list(reversed(made))
    assert ids(await client.get(TICKETS, params={"offset": 2})) == newest_first[2:]
    after = cursor_of(await client.get(TICKETS, params={"limit": 1}))
    page = await client.get(TICKETS, params={"after": after, "offset": 2, "limit": 2})
    assert ids(page) == newest_first[3:5]


@pytest.mark.parametrize(
    "after", ["", "nope", "A" * 15, "A" * 17, "AAAAAAAAAAAAAAA=", "../etc/passwd"]
)
async def test_anything_but_a_cursor_is_a_400_with_its_field(client, after):
    response = await client.get(TICKETS, params={"after": after})
    assert response.status_code == 400
    assert response.json() == {"errors": [AFTER_RULE]}


async def test_a_cursor_past_every_ticket_is_an_empty_page(client, new_ticket):
    await new_ticket()
    response = await client.get(TICKETS, params={"after": "AAAAAAAAAAAAAAAA"})  # id 0
    assert response.status_code == 200
    assert response.json() == []
    assert "link" not in response.headers


async def test_open_tickets_stored_without_a_listing_key_are_listed_at_start(start, db):
    def stored(**more):
        return {"_id": ObjectId(), "title": "old", "price": 5.0, "userId": "u", "version": 0,
                "rev": 0, **more}  # fmt: skip

    legacy = [stored() for _ in range(3)]
    held = stored(orderId=str(ObjectId()), version=1, rev=1)
    await db["tickets"].insert_many([*legacy, held])
    async with start() as client:

        async def listed():
            found = ids(await client.get(TICKETS))
            return found if len(found) == len(legacy) else None

        shown = await eventually(listed)  # listed in the background, soon after start
    assert shown == [str(t["_id"]) for t in reversed(legacy)]
    docs = {d["_id"]: d async for d in db["tickets"].find()}
    assert [docs[t["_id"]]["listing"] for t in legacy] == [str(t["_id"]) for t in legacy]
    assert "listing" not in docs[held["_id"]]
    assert docs[legacy[0]["_id"]]["rev"] == 0  # no decision reads the key: no new revision


async def test_listing_the_stored_tickets_goes_newest_first_in_batches(db, monkeypatch):
    monkeypatch.setattr(repository, "BACKFILL_BATCH", 2)
    legacy = [{"_id": ObjectId(), "title": "old", "price": 5.0, "userId": "u", "version": 0,
               "rev": 0} for _ in range(5)]  # fmt: skip
    await db["tickets"].insert_many(legacy)
    tickets = repository.Tickets(db, None)
    assert await tickets.list_unlisted() == 5
    assert await tickets.list_unlisted() == 0  # idempotent: nothing left at the next start
    page, last = await tickets.available(10)
    assert [t["_id"] for t in page] == [t["_id"] for t in reversed(legacy)] and last is None


@pytest.fixture
def gated_reads(monkeypatch):
    """The listing reads of the running service, the first held after reading until the test
    opens it: `entered` counts callers that asked for a page, `reads` the database reads."""

    class Gate:
        opened = asyncio.Event()
        held = asyncio.Event()
        entered = 0
        reads = 0

    page, read = repository.Tickets._page, Coalesced.read

    async def held_page(self, *args):
        Gate.reads += 1
        found = await page(self, *args)
        if Gate.reads == 1:  # read, then held before it answers
            Gate.held.set()
            await Gate.opened.wait()
        return found

    async def counted_read(self, key, load):
        Gate.entered += 1
        return await read(self, key, load)

    monkeypatch.setattr(repository.Tickets, "_page", held_page)
    monkeypatch.setattr(Coalesced, "read", counted_read)
    return Gate


async def test_visitors_asking_for_a_page_together_share_one_read(client, new_ticket, gated_reads):
    made = [(await new_ticket(title=f"t{i}"))["id"] for i in range(3)]
    first = asyncio.create_task(client.get(TICKETS))
    await gated_reads.held.wait()
    others = [asyncio.create_task(client.get(TICKETS)) for _ in range(9)]

    async def all_asked():
        return gated_reads.entered == 10

    await eventually(all_asked)
    gated_reads.opened.set()
    pages = await asyncio.gather(first, *others)
    assert [ids(page) for page in pages] == [list(reversed(made))] * 10
    assert gated_reads.reads == 1


async def test_a_page_asked_for_after_a_sale_shows_it_while_an_older_read_is_in_flight(
    client, new_ticket, gated_reads
):
    old = await new_ticket(title="old")
    first = asyncio.create_task(client.get(TICKETS))
    await gated_reads.held.wait()  # a read of the page, made before the sale, is held
    sold = await new_ticket(title="sold meanwhile")
    after = asyncio.create_task(client.get(TICKETS))

    async def asked():
        return gated_reads.entered == 2

    await eventually(asked)
    gated_reads.opened.set()
    assert ids(await first) == [old["id"]]
    assert ids(await after) == [sold["id"], old["id"]]  # its own read, not the older one
    assert gated_reads.reads == 2
