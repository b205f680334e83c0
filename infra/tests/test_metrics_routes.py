"""The services' /metrics are scraped on their own ports: the Swarm stack's nginx answers 404
there before its catch-all `/` (the client) could serve the client's."""

from .deploy import nginx_locations


def test_nginx_does_not_route_the_metrics() -> None:
    routes = nginx_locations()
    assert routes["/metrics"] == "return 404"
    assert routes["/metrics/"] == "return 404"
