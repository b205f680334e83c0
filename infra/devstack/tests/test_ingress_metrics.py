"""The services' /metrics stay on their own ports: the dev ingress answers 404 there, before
any route (the client's catch-all `/` would take it otherwise)."""

import httpx
from aiohttp import web

from devstack.ingress import create_app, internal


def test_metrics_paths_are_internal() -> None:
    assert internal("/metrics")
    assert internal("/metrics/x")
    assert not internal("/metricsx")
    assert not internal("/api/metrics")


async def test_the_ingress_answers_404_for_metrics() -> None:
    # Routed to a port where nothing listens: a 503 would mean it tried to proxy.
    app = create_app({"/": "http://127.0.0.1:9"})
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            answer = await http.get("/metrics")
    finally:
        await runner.cleanup()
    assert answer.status_code == 404
    assert answer.json() == {"errors": [{"message": "Not Found"}]}
