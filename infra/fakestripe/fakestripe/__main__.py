"""`python -m fakestripe`: serve on $HOST:$PORT (0.0.0.0:12111 by default, for containers);
webhooks as `WEBHOOK_URL` and `STRIPE_WEBHOOK_SECRET` say (see `fakestripe.webhooks.Config`)."""

import logging
import os

import uvicorn

from fakestripe.app import create_app


def log_like_uvicorn() -> None:
    """Webhook outcomes in uvicorn's format, next to its own lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    logger = logging.getLogger("fakestripe")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main() -> None:
    host = os.environ.get("HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", "12111"))
    log_like_uvicorn()
    # A request a test left held at a gate must not keep the process from stopping.
    uvicorn.run(create_app(), host=host, port=port, log_level="info", timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
