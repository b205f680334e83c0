import pytest

from ticketing_common.settings import (
    MongoSettings,
    NatsSettings,
    ServiceSettings,
    SessionSettings,
    load_settings,
)


class Settings(ServiceSettings, MongoSettings, SessionSettings, NatsSettings):
    pass


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("JWT_KEY", "MONGO_URI", "NATS_URL", "JWT_KEY_FILE", "API_DOCS"):
        monkeypatch.delenv(name, raising=False)


def test_a_missing_setting_stops_start_up_with_its_name(monkeypatch):
    monkeypatch.setenv("MONGO_URI", "mongodb://x/db")
    monkeypatch.setenv("NATS_URL", "nats://x")
    with pytest.raises(SystemExit) as stopped:
        load_settings(Settings)
    assert str(stopped.value) == "JWT_KEY must be defined"


def test_every_required_setting_is_named_when_missing(monkeypatch):
    present = {"JWT_KEY": "k" * 32, "MONGO_URI": "mongodb://x/db", "NATS_URL": "nats://x"}
    for missing in present:
        for name, value in present.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv(missing)
        with pytest.raises(SystemExit, match=f"^{missing} must be defined$"):
            load_settings(Settings)


def test_a_file_setting_stands_in_for_a_missing_one(monkeypatch, tmp_path):
    secret = tmp_path / "jwt_key"
    secret.write_text("from-a-secret-file-long-enough-for-hs256\n")
    monkeypatch.setenv("JWT_KEY_FILE", str(secret))
    monkeypatch.setenv("MONGO_URI", "mongodb://x/db")
    monkeypatch.setenv("NATS_URL", "nats://x")
    settings = load_settings(Settings)
    assert settings.jwt_key == "from-a-secret-file-long-enough-for-hs256"
    assert settings.cookie_secure is True
    assert settings.jwt_ttl_seconds == 86400


def test_an_empty_variable_counts_as_missing(monkeypatch):
    monkeypatch.setenv("MONGO_URI", "")
    monkeypatch.setenv("NATS_URL", "nats://x")
    monkeypatch.setenv("JWT_KEY", "k" * 32)
    with pytest.raises(SystemExit, match=r"^MONGO_URI must be defined$"):
        load_settings(Settings)


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("false", False), ("true", True)])
def test_api_docs_are_on_unless_turned_off(monkeypatch, value, expected):
    """Production files set API_DOCS=false; dev and tests keep the docs."""
    if value is not None:
        monkeypatch.setenv("API_DOCS", value)
    assert load_settings(ServiceSettings).api_docs is expected


def test_an_api_docs_value_that_is_not_a_boolean_stops_start_up(monkeypatch):
    monkeypatch.setenv("API_DOCS", "sometimes")
    with pytest.raises(SystemExit, match="api_docs"):
        load_settings(ServiceSettings)
