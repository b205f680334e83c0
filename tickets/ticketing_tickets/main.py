"""Wires the tickets service to MongoDB and NATS and runs it."""

from __future__ import annotations

from fastapi import FastAPI

from ticketing_common.service import serve_forever, service_lifespan
from ticketing_common.settings import load_settings
from ticketing_tickets.app import create_app
from ticketing_tickets.events.listeners import LISTENERS
from ticketing_tickets.models import COLLECTION, INDEXES
from ticketing_tickets.settings import Settings


def build(settings: Settings) -> FastAPI:
    lifespan = service_lifespan(settings, indexes=INDEXES, outbox=[COLLECTION], listeners=LISTENERS)
    return create_app(settings, lifespan)


def main() -> None:
    settings = load_settings(Settings)
    serve_forever(build(settings), settings)
