"""Migrations upgrade and downgrade on both databases."""

import sqlalchemy as sa
from flask import Flask

from app.core import db as database

FOUNDATION_TABLES = {"portals", "inbox", "audit"}


def _tables() -> set[str]:
    return set(sa.inspect(database.db.engine).get_table_names())


def test_downgrade_to_base_and_upgrade_again(app: Flask):
    assert FOUNDATION_TABLES <= _tables()
    database.downgrade("base")
    database.db.engine.dispose()
    assert not (FOUNDATION_TABLES & _tables())
    database.upgrade()
    assert FOUNDATION_TABLES <= _tables()
    with database.db.engine.connect() as connection:
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert version is not None


def test_upgrade_twice_is_harmless(app: Flask):
    database.upgrade()
    database.upgrade()
    assert FOUNDATION_TABLES <= _tables()
