"""`python -m fakestripe`: serve on $HOST:$PORT (0.0.0.0:12111 by default, for containers)."""

import os

import uvicorn

from fakestripe.app import create_app


def main() -> None:
    host = os.environ.get("HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", "12111"))
    uvicorn.run(create_app(), host=host, port=port, log_level="info")


if __name__ == "__main__":
    main()
