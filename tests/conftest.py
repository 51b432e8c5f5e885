"""Shared fixtures: the app on SQLite and on PostgreSQL, real Redis, and an in-process worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.core import db as database
from app.core.db import Base
from app.core.worker import make_worker


def _worker_redis_url(base: str, worker: str) -> str:
    """Each pytest-xdist worker (gw0, gw1, …) gets its own Redis database, counting down from the base one."""
    if not worker.startswith("gw"):
        return base
    head, _, number = base.rpartition("/")
    return f"{head}/{int(number or 0) - int(worker[2:])}"


TEST_REDIS_URL = _worker_redis_url(
    os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"), os.environ.get("PYTEST_XDIST_WORKER", "")
)
TEST_POSTGRES_SERVER = os.environ.get("TEST_POSTGRES_SERVER", "postgresql://postgres@127.0.0.1:5432")
TEST_POSTGRES_DB = os.environ.get("TEST_POSTGRES_DB", "refusal_control_test") + f"_{os.getpid()}"


def _recreate_postgres_database(name: str) -> str:
    with psycopg.connect(f"{TEST_POSTGRES_SERVER}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{TEST_POSTGRES_SERVER}/{name}"


def _drop_postgres_database(name: str) -> None:
    with psycopg.connect(f"{TEST_POSTGRES_SERVER}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database of each kind, created once per test session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.sqlite3'}"
        yield url
        return
    url = _recreate_postgres_database(TEST_POSTGRES_DB)
    # pytest tears a parametrised session fixture down when a worker's tests switch between the two kinds and
    # sets it up again: the database is then new and empty, so it needs its migrations again.
    _MIGRATED.discard(url)
    yield url
    _drop_postgres_database(TEST_POSTGRES_DB)


_MIGRATED: set[str] = set()


def make_app(database_url: str, instance_path: Path, **overrides: object) -> Flask:
    """An app for tests, on the given database and the test Redis."""
    config = {
        "TESTING": True,
        "INSTANCE_PATH": str(instance_path),
        "DATABASE_URL": database_url,
        "REDIS_URL": TEST_REDIS_URL,
        "SECRET_KEY": "test-secret-key",
        "PUBLIC_URL": "https://app.example.test",
        # Periodic jobs (scans, digests, reports) would fire whenever a test crosses a slot boundary;
        # tests that exercise them set their own table.
        "PERIODIC_JOBS": (),
        **overrides,
    }
    return create_app(config)


def clean_tables() -> None:
    """Empty every table, keeping the schema."""
    engine = database.db.engine
    with engine.begin() as connection:
        tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(sa.text(f"DELETE FROM {table}"))


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The test Redis database, flushed before and after each test."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def app(database_url: str, tmp_path: Path, redis_client: redis.Redis) -> Iterator[Flask]:
    """The app with a migrated, empty database and an empty Redis, inside an app context."""
    flask_app = make_app(database_url, tmp_path)
    with flask_app.app_context():
        if database_url not in _MIGRATED:
            database.upgrade()
            _MIGRATED.add(database_url)
        clean_tables()
        yield flask_app
        database.db.session.remove()
        database.db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for the app."""
    return app.test_client()


def run_jobs(app: Flask, queues: list[str] | None = None) -> None:
    """Run every queued (and due scheduled) job in-process with a real RQ worker and its scheduler."""
    worker = make_worker(app, queues, simple=True)
    worker.work(burst=True, with_scheduler=True)


@pytest.fixture
def worker(app: Flask):
    """Call `worker()` to drain the queues in-process."""
    return lambda queues=None: run_jobs(app, queues)
