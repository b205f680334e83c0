"""A JWT_KEY too short for HS256 (under 32 bytes) stops start-up, naming JWT_KEY."""

import pytest
from pydantic import ValidationError

from ticketing_common.settings import ServiceSettings, SessionSettings, load_settings
from ticketing_testing import TEST_JWT_KEY


class Settings(ServiceSettings, SessionSettings):
    pass


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("JWT_KEY", "JWT_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("key", ["", "short", "x" * 31])
def test_a_short_key_is_refused(key):
    with pytest.raises(ValidationError, match="JWT_KEY must be at least 32 bytes long"):
        Settings(jwt_key=key)


def test_a_short_key_in_the_environment_stops_start_up_naming_jwt_key(monkeypatch):
    monkeypatch.setenv("JWT_KEY", "short")
    with pytest.raises(SystemExit, match=r"^JWT_KEY must be at least 32 bytes long$"):
        load_settings(Settings)


def test_an_empty_key_file_stops_start_up_naming_jwt_key(monkeypatch, tmp_path):
    secret = tmp_path / "jwt_key"
    secret.write_text("\n")
    monkeypatch.setenv("JWT_KEY_FILE", str(secret))
    with pytest.raises(SystemExit, match=r"^JWT_KEY must be"):
        load_settings(Settings)


def test_a_short_key_file_stops_start_up_naming_jwt_key(monkeypatch, tmp_path):
    secret = tmp_path / "jwt_key"
    secret.write_text("from-a-secret\n")
    monkeypatch.setenv("JWT_KEY_FILE", str(secret))
    with pytest.raises(SystemExit, match=r"^JWT_KEY must be at least 32 bytes long$"):
        load_settings(Settings)


@pytest.mark.parametrize("key", ["k" * 32, "é" * 16, TEST_JWT_KEY])
def test_a_key_of_32_bytes_or_more_loads(monkeypatch, key):
    monkeypatch.setenv("JWT_KEY", key)
    assert load_settings(Settings).jwt_key == key
