"""The client's own CSS, JS and icon under `/static/`, with content-versioned URLs."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"


@cache
def asset_url(name: str) -> str:
    """`/static/<name>?v=<content hash>`: a changed file gets a new URL, so caching is safe."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


class Assets(StaticFiles):
    """Static files; a versioned URL may be cached for good, a bare one is revalidated."""

    def __init__(self) -> None:
        super().__init__(directory=STATIC_DIR)

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            versioned = scope.get("query_string", b"").startswith(b"v=")
            response.headers["cache-control"] = (
                "public, max-age=31536000, immutable" if versioned else "no-cache"
            )
            response.headers["x-content-type-options"] = "nosniff"
        return response
