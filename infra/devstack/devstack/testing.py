"""Pytest plugin (`-p devstack.testing`): the whole system, as `make run` starts it, for
end-to-end tests that talk to it through the ingress like a browser or an API client would.

`stack` starts one Stack per test session, on first use only, in a temporary root and on a free
ingress port; `start_stack(root, env)` gives a test a stack of its own (say, with a short
`EXPIRATION_WINDOW_SECONDS`). The children's output goes to `<root>/.data/logs/`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from devstack.stack import Stack


@contextmanager
def start_stack(
    root: Path,
    env: Mapping[str, str] | None = None,
    *,
    services: Iterable[str] | None = None,
    ingress_port: int = 0,
) -> Iterator[Stack]:
    """A started stack under `root` with `env` on top of every child's environment (and only
    `services`, when a test needs fewer; on `ingress_port`, else a free one); stopped, no
    process left, when the block ends."""
    with Stack(root, ingress_port=ingress_port, env=env, services=services) as stack:
        yield stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared stack: `stack.url` is the ingress; `stack.service_urls` and `stack.urls`
    reach the services and servers directly."""
    with start_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running
