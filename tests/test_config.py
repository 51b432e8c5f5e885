"""Configuration defaults and overrides."""

from pathlib import Path

import pytest

from app import create_app
from app.core.config import load_config, normalise_database_url, parse_bool
from app.core.db import db


def test_defaults_embed_sqlite_and_redis(tmp_path: Path):
    """With an empty environment the app needs nothing but its instance folder."""
    config = load_config(tmp_path, env={})
    assert config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'refusal_control.sqlite3'}"
    assert config["REDIS_URL"] is None
    assert config["EMBEDDED_REDIS_SOCKET"] == str(tmp_path / "redis.sock")
    assert config["B24_OAUTH_SERVER"] == "https://oauth.bitrix.info"
    assert config["PUBLIC_URL"] == "http://127.0.0.1:5000"
    assert config["SANDBOX_ENABLED"] is False


def test_secret_key_is_generated_once_and_kept(tmp_path: Path):
    """A generated key survives a restart, or every signed token would die with the process."""
    first = load_config(tmp_path, env={})["SECRET_KEY"]
    second = load_config(tmp_path, env={})["SECRET_KEY"]
    assert first == second
    assert len(first) >= 32
    assert load_config(tmp_path, env={"SECRET_KEY": "given"})["SECRET_KEY"] == "given"


def test_environment_overrides(tmp_path: Path):
    env = {
        "DATABASE_URL": "postgres://u:p@db:5432/rc",
        "REDIS_URL": "redis://cache:6379/2",
        "PUBLIC_URL": "https://rc.example.com/",
        "B24_OAUTH_SERVER": "https://oauth.bitrix24.tech/",
        "B24_CLIENT_ID": "local.123",
        "SANDBOX_ENABLED": "yes",
        "JOB_TIMEOUT_SECONDS": "60",
    }
    config = load_config(tmp_path, env=env)
    assert config["DATABASE_URL"] == "postgresql+psycopg://u:p@db:5432/rc"
    assert config["REDIS_URL"] == "redis://cache:6379/2"
    assert config["PUBLIC_URL"] == "https://rc.example.com"
    assert config["B24_OAUTH_SERVER"] == "https://oauth.bitrix24.tech"
    assert config["B24_CLIENT_ID"] == "local.123"
    assert config["SANDBOX_ENABLED"] is True
    assert config["JOB_TIMEOUT_SECONDS"] == 60


def test_bad_boolean_is_refused():
    with pytest.raises(ValueError, match="not a boolean"):
        parse_bool("perhaps")


def test_database_url_normalisation():
    assert normalise_database_url("postgresql://x/y") == "postgresql+psycopg://x/y"
    assert normalise_database_url("postgresql+psycopg://x/y") == "postgresql+psycopg://x/y"
    assert normalise_database_url("sqlite:///a.db") == "sqlite:///a.db"


def test_create_app_does_not_connect(tmp_path: Path):
    """Building the app with unreachable services must not fail: nothing connects at import or build."""
    app = create_app(
        {
            "INSTANCE_PATH": str(tmp_path),
            "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "REDIS_URL": "redis://127.0.0.1:1/0",
        }
    )
    assert app.config["DATABASE_URL"] == "postgresql+psycopg://nobody@127.0.0.1:1/none"


def test_sqlite_synchronous_defaults_to_normal_and_refuses_unsafe_modes(tmp_path: Path):
    assert load_config(tmp_path, env={})["SQLITE_SYNCHRONOUS"] == "NORMAL"
    assert load_config(tmp_path, env={"SQLITE_SYNCHRONOUS": "full"})["SQLITE_SYNCHRONOUS"] == "FULL"
    with pytest.raises(ValueError, match="SQLITE_SYNCHRONOUS"):
        load_config(tmp_path, env={"SQLITE_SYNCHRONOUS": "OFF"})


@pytest.mark.parametrize(("mode", "expected"), [("NORMAL", 1), ("FULL", 2)])
def test_sqlite_connections_use_wal_and_the_configured_synchronous_mode(tmp_path: Path, mode: str, expected: int):
    app = create_app(
        {
            "INSTANCE_PATH": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'sync.sqlite3'}",
            "SQLITE_SYNCHRONOUS": mode,
        }
    )
    with app.app_context():
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == expected
        db.engine.dispose()
