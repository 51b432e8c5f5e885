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


def test_0009_seeds_the_seven_reasons_of_an_existing_portal_with_its_crm_items(app: Flask):
    """A portal installed before the company's own reasons keeps decoding its deals: the seven reasons get the
    enumeration items the installer had recorded."""
    database.downgrade("0008")
    database.db.engine.dispose()
    settings = '{"b24_fields": {"refusal_reason": {"field": "UF_CRM_RC_REASON", "enum": {"price": "3151"}}}}'
    with database.db.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO portals (crm, external_id, domain, rest_base, language, timezone, settings, status, "
                "status_detail, created_at, updated_at) VALUES ('bitrix24', 'old-portal', 'old.example', '', 'ru', "
                "'Europe/Moscow', :settings, 'installed', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"settings": settings},
        )
    database.upgrade()
    with database.db.engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT code, name_ru, crm_item_id, retired FROM refusal_reasons r "
                "JOIN portals p ON p.id = r.portal_id WHERE p.external_id = 'old-portal' ORDER BY r.sort"
            )
        ).all()
    assert [row[0] for row in rows][:3] == ["not_interested", "price", "bought_elsewhere"] and len(rows) == 7
    assert (rows[1][1], rows[1][2], bool(rows[1][3])) == ("Дорого", "3151", False)
    assert rows[0][2] is None
