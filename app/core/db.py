"""Database wiring: the SQLAlchemy object, SQLite pragmas, Alembic migrations, portable upserts."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, MetaData, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import PoolProxiedConnection

_T = TypeVar("_T")
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every process of this app.
MIGRATION_LOCK_KEY = 7_324_001


class Base(DeclarativeBase):
    """Declarative base with a naming convention Alembic can rely on."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    """Per-connection settings. `synchronous` is NORMAL or FULL (validated by app.config)."""

    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    return apply


def _after_fork_in_child() -> None:
    """Forked RQ work-horses must not reuse the parent's pooled connections."""
    for engine in list(_ENGINES):
        engine.dispose(close=False)
    HeldConnection.forget_after_fork()


_ENGINES: list[Engine] = []
os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(frozen=True)
class _Held:
    pid: int
    engine: Engine
    connection: PoolProxiedConnection


class _Disconnected(Exception):
    """The held connection turned out dead; the work may run once more on a fresh one."""


class HeldConnection:
    """A DBAPI connection checked out of the engine's pool once and kept by the process's main thread.

    For a hot path that runs one short statement and commits on every call (the webhook inbox): a pool
    checkout and return cost more than SQLite's own insert, and on PostgreSQL the pool's pre-ping is a
    round trip per checkout. Gunicorn's sync workers serve requests on their main thread; any other thread
    (a threaded development server) checks a connection out per call, as usual. A held connection that
    turns out dead (a database restart) is invalidated and the work runs once more on a fresh one; any
    other error invalidates it too and is raised. A forked child leaves its parent's connection alone.
    """

    _instances: ClassVar[list[HeldConnection]] = []

    def __init__(self) -> None:
        self._held: _Held | None = None
        self._inherited: list[_Held] = []
        HeldConnection._instances.append(self)

    def run(self, engine: Engine, work: Callable[[Any], _T]) -> _T:
        """`work(dbapi_connection)`, which must commit or roll back itself; returns what it returns."""
        if threading.current_thread() is not threading.main_thread():
            connection = engine.raw_connection()
            try:
                return work(connection.dbapi_connection)
            finally:
                connection.close()  # back to the pool, which rolls back whatever was not committed
        try:
            return self._run_held(engine, work)
        except _Disconnected:
            return self._run_held(engine, work, retry=False)

    def _run_held(self, engine: Engine, work: Callable[[Any], _T], *, retry: bool = True) -> _T:
        """`work` on the held connection; a DBAPI error invalidates it, a dropped one raises _Disconnected."""
        held = self._take(engine)
        try:
            return work(held.connection.dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            dead = engine.dialect.is_disconnect(error, held.connection.dbapi_connection, None)
            self._held = None
            held.connection.invalidate(error)
            if dead and retry:
                raise _Disconnected from error
            raise

    def _take(self, engine: Engine) -> _Held:
        held = self._held
        if held is not None and held.engine is engine and held.pid == os.getpid():
            return held
        if held is not None and held.pid == os.getpid():
            held.connection.close()  # another engine's (another app's): back to its own pool
        held = _Held(os.getpid(), engine, engine.raw_connection())
        self._held = held
        return held

    @classmethod
    def forget_after_fork(cls) -> None:
        """In a forked child: drop the parent's connections unclosed, and keep them referenced so that
        garbage collection does not close the parent's session either."""
        for instance in cls._instances:
            if instance._held is not None:
                instance._inherited.append(instance._held)
                instance._held = None


def engine_options(url: str) -> dict[str, Any]:
    """Engine options per backend."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}


def init_app(app: Flask) -> None:
    """Configure Flask-SQLAlchemy from DATABASE_URL (the db commands: app/cli/db.py)."""
    url = app.config["DATABASE_URL"]
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    db.init_app(app)
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas(app.config["SQLITE_SYNCHRONOUS"]))
        _ENGINES.append(engine)


def alembic_config(url: str) -> AlembicConfig:
    """Alembic configuration pointing at our migrations folder."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(revision: str = "head") -> None:
    """Apply migrations up to `revision`; concurrent callers on PostgreSQL wait for each other."""
    engine = db.engine
    config = alembic_config(current_app.config["DATABASE_URL"])
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(revision: str) -> None:
    """Revert migrations down to `revision` ("base" removes every table)."""
    config = alembic_config(current_app.config["DATABASE_URL"])
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def insert_ignore(model: type[Base], values: dict[str, Any], conflict_columns: list[str]) -> Any:
    """An INSERT that does nothing when the unique key exists (SQLite and PostgreSQL)."""
    dialect = db.engine.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(model).values(**values).on_conflict_do_nothing(index_elements=conflict_columns)
