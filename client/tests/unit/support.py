"""What the client's unit tests share besides fixtures: the shape of `make_visitor`."""

from collections.abc import Callable

from ticketing_client.visitor import Visitor

MakeVisitor = Callable[..., Visitor]
