"""The settings the tickets service refuses to start without, read from the environment."""

import pytest

from ticketing_common.settings import load_settings
from ticketing_tickets.settings import Settings


@pytest.mark.parametrize("missing", ["MONGO_URI", "NATS_URL", "JWT_KEY"])
def test_refuses_to_start_without_a_required_setting(monkeypatch, missing):
    values = {"MONGO_URI": "mongodb://db/tickets", "NATS_URL": "nats://nats", "JWT_KEY": "k" * 32}
    for name in (*values, *(f"{n}_FILE" for n in values)):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        if name != missing:
            monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=f"^{missing} must be defined$"):
        load_settings(Settings)


def test_reads_its_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("MONGO_URI", "mongodb://db/tickets")
    monkeypatch.setenv("NATS_URL", "nats://nats:4222")
    monkeypatch.setenv("JWT_KEY", "k" * 32)
    settings = load_settings(Settings)
    assert settings.service_name == "tickets"
    assert (settings.mongo_uri, settings.nats_url) == ("mongodb://db/tickets", "nats://nats:4222")
