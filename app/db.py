"""Database wiring: the SQLAlchemy object, SQLite pragmas, Alembic migrations, portable upserts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, MetaData, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase

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


_ENGINES: list[Engine] = []
os.register_at_fork(after_in_child=_after_fork_in_child)


def engine_options(url: str) -> dict[str, Any]:
    """Engine options per backend."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}


def init_app(app: Flask) -> None:
    """Configure Flask-SQLAlchemy from DATABASE_URL and register the db commands."""
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
    app.cli.add_command(upgrade_command)
    app.cli.add_command(downgrade_command)


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


@click.command("db-upgrade")
@click.argument("revision", default="head")
def upgrade_command(revision: str) -> None:
    """Apply database migrations."""
    upgrade(revision)
    click.echo(f"database upgraded to {revision}")


@click.command("db-downgrade")
@click.argument("revision")
def downgrade_command(revision: str) -> None:
    """Revert database migrations."""
    downgrade(revision)
    click.echo(f"database downgraded to {revision}")
