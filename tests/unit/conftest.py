"""Fixtures for unit tests: the app on SQLite only, a seeded `InMemoryCrm` installed as every portal's client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from app.core.db import db
from app.core.models import Portal, RefusalCase, utcnow
from app.crm import factory, port
from app.domain import deal_events, directory, guard
from app.domain.guard import Decision
from tests.helpers import make_portal
from tests.unit.fake_crm import InMemoryCrm

# The people of the seeded portal (the same ids the scenario tests use).
ADMIN, MANAGER, OTHER_MANAGER, QA, QA2, HEAD, POOL = "1", "2", "3", "7", "8", "9", "12"
SALES = "20"  # the sales department: MANAGER and OTHER_MANAGER
MAIN = "0"  # the main pipeline: NEW, WORKING, LATE, REFUSAL (Conditional refusal), WON, LOSE
OTHER = "5"  # a second pipeline: C5:NEW, C5:WORKING, C5:REFUSAL, C5:WON, C5:LOSE


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Unit tests run on SQLite only (the scenarios cover PostgreSQL)."""
    return f"sqlite:///{tmp_path_factory.mktemp('unit') / 'unit.sqlite3'}"


def seeded_crm() -> InMemoryCrm:
    """A small portal: two pipelines, a sales department, managers, QA staff, a head and the pool user."""
    crm = InMemoryCrm(domain="unit.bitrix24.test")
    crm.add_pipeline(
        MAIN,
        [
            ("NEW", "process"),
            ("WORKING", "process"),
            ("LATE", "process"),
            ("REFUSAL", "process"),
            ("WON", "success"),
            ("LOSE", "failure"),
        ],
        name="Main",
        is_default=True,
    )
    crm.add_pipeline(
        OTHER,
        [
            ("C5:NEW", "process"),
            ("C5:WORKING", "process"),
            ("C5:REFUSAL", "process"),
            ("C5:WON", "success"),
            ("C5:LOSE", "failure"),
        ],
        name="Other",
    )
    crm.add_department(SALES, "Sales", head_id=HEAD)
    crm.add_user(ADMIN, "Admin", is_admin=True)
    crm.add_user(MANAGER, "Manager", departments=[SALES])
    crm.add_user(OTHER_MANAGER, "Other manager", departments=[SALES])
    crm.add_user(QA, "QA")
    crm.add_user(QA2, "QA two")
    crm.add_user(HEAD, "Head", departments=[SALES])
    crm.add_user(POOL, "Lead exchange")
    crm.add_source("WEB", "Website")
    crm.add_source("CALL", "Call")
    return crm


@pytest.fixture
def crm(app: Flask) -> Iterator[InMemoryCrm]:
    """The in-memory CRM, installed as the client of every portal; the real factory is restored afterwards."""
    fake = seeded_crm()
    port.use_client_factory(lambda portal: fake)
    yield fake
    port.use_client_factory(factory.client_for)


def guard_settings_for(**changes: Any) -> dict[str, Any]:
    return {"qa_users": [QA, QA2], "heads": [HEAD], **changes}


@pytest.fixture
def portal(app: Flask, crm: InMemoryCrm) -> Portal:
    """An installed portal: Conditional refusal stages in both pipelines, QA 7 and 8, head 9;
    a lead costs 1500 RUB from the website, 700 otherwise."""
    row = make_portal(
        "unit-portal",
        status="installed",
        installed_at=utcnow().replace(microsecond=0),
        settings={
            "refusal_stages": {MAIN: "REFUSAL", OTHER: "C5:REFUSAL"},
            "guard": guard_settings_for(),
            "cpl": {"currency": "RUB", "default": "700", "by_source": {"WEB": "1500"}, "by_pipeline": {}},
        },
    )
    directory.forget(row.id)
    return row


def configure(portal: Portal, section: str, **values: Any) -> None:
    """Change one settings section of the portal (as the settings page would) and commit."""
    settings = dict(portal.settings)
    settings[section] = {**settings.get(section, {}), **values}
    portal.settings = settings
    db.session.commit()
    directory.forget(portal.id)


def event(portal: Portal, deal_id: str, *, is_new: bool = False, automation: bool = False) -> None:
    """The CRM reports a deal change: the one entry point both CRMs' handlers call, with the portal's client."""
    deal_events.deal_changed(portal, port.client_for(portal), deal_id, is_new=is_new, automation=automation)


def decide(portal: Portal, deal_id: str, *, automation: bool = False) -> Decision:
    """The guard alone on a deal, for tests that assert on its decision."""
    return guard.Guard(portal, port.client_for(portal)).decide(deal_id, automation=automation)


def the_case(deal_id: str) -> RefusalCase | None:
    """The deal's latest refusal case, fresh from the database."""
    db.session.expire_all()
    return db.session.scalars(
        sa.select(RefusalCase).where(RefusalCase.deal_id == deal_id).order_by(RefusalCase.id.desc())
    ).first()


def seen_deal(portal: Portal, crm: InMemoryCrm, *, by: str = MANAGER, stage: str = "WORKING", **fields: Any) -> str:
    """A deal a manager works on, already seen by the app (its creation event was handled)."""
    deal = crm.add_deal(stage_id=stage, responsible_id=by, **fields)
    event(portal, deal.id, is_new=True)
    return deal.id


def refused_deal(portal: Portal, crm: InMemoryCrm, *, by: str = MANAGER, **fields: Any) -> tuple[str, RefusalCase]:
    """A manager closes a deal as lost with a reason and a comment: it lands in Conditional refusal, a case opens."""
    deal_id = seen_deal(portal, crm, by=by, **fields)
    crm.fill_refusal(deal_id, by=by, reason="price", comment="The client said it is too expensive")
    event(portal, deal_id)
    crm.move(deal_id, "LOSE", by=by)
    event(portal, deal_id)
    case = the_case(deal_id)
    assert case is not None
    return deal_id, case
