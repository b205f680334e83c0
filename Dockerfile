# Every Ticketing image: the services (auth, tickets, orders, payments, expiration, client) and
# fakestripe, the Stripe test-mode server. Build arguments choose which one:
#   SOURCE   its folder in this repository           e.g. auth, infra/fakestripe
#   PACKAGE  its uv workspace package (in uv.lock)   e.g. ticketing-auth
#   MODULE   what the image runs with `python -m`     e.g. ticketing_auth
#   PORT     where it listens (3000; fakestripe 12111)
# Build from the repository root, so that `common/` and `uv.lock` are in the context:
#   docker build --build-arg SOURCE=auth --build-arg PACKAGE=ticketing-auth \
#     --build-arg MODULE=ticketing_auth -t "$REGISTRY/auth:$TAG" .
# docker-compose.yml passes the arguments of every image (`docker compose build`).

# An exact version tag: a new Python or Debian comes in only by editing this line.
ARG PYTHON_IMAGE=python:3.11.17-slim-trixie

# --- builder: resolve dependencies from the committed uv.lock into /opt/venv ---------------
FROM ${PYTHON_IMAGE} AS builder

ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install --no-cache-dir uv==0.13.9

# Declared after the steps every image shares, so that their layers are built once for all.
ARG SOURCE
ARG PACKAGE
ARG MODULE
# Without them, `COPY ${SOURCE}/` would take the whole context and uv would pick no package.
RUN test -n "$SOURCE" && test -n "$PACKAGE" && test -n "$MODULE" \
    || { echo "build arguments SOURCE, PACKAGE and MODULE are required (see the top of this Dockerfile)" >&2; exit 1; }

WORKDIR /src

# Third-party dependencies first: this layer is reused until uv.lock changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package "$PACKAGE"

# Then the workspace packages this image runs, installed as regular (non-editable) wheels.
COPY common/ common/
COPY ${SOURCE}/ ${SOURCE}/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "$PACKAGE"

# --- runtime: the venv only, run by an unprivileged user ----------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app

ARG PACKAGE
ARG MODULE
ARG PORT=3000

LABEL org.opencontainers.image.title="${PACKAGE}"

ENV PORT=${PORT} \
    SERVICE_MODULE=${MODULE}

COPY --from=builder /opt/venv /opt/venv

# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 10001:10001
WORKDIR /tmp

EXPOSE ${PORT}

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['PORT'] + '/healthz', timeout=4)"]

# `python -m $SERVICE_MODULE`, which exec-form CMD cannot expand: the shell replaces itself
# with python, so python is still PID 1 and receives SIGTERM.
CMD ["sh", "-c", "exec python -m \"$SERVICE_MODULE\""]
