"""Bitrix24-only lead exchange cases: twenty simultaneous claims on one lot, and the «put on the exchange» robot.
The exchange scenarios shared with amoCRM are in tests/scenarios/test_exchange.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from app.core import db as database
from app.core.db import db
from app.core.models import AuditEntry, ExchangeClaim, ExchangeLot
from tests.conftest import _MIGRATED, clean_tables, make_app
from tests.integration.b24 import B24
from tests.integration.exchange_helpers import (
    EXTRA_MANAGERS,
    POOL,
    add_people,
    configure_exchange,
    create_incoming,
    lot_of,
    responsible,
    token,
)

MANAGER, OTHER, QA = 2, 3, 7


@pytest.fixture
def app(
    database_url: str, tmp_path: Path, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    """The usual test app with a connection pool wide enough for twenty simultaneous requests (each request
    uses two connections: its own session and the CRM client's token session)."""
    original = database.engine_options
    monkeypatch.setattr(database, "engine_options", lambda url: {**original(url), "pool_size": 50, "max_overflow": 5})
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
def market(b24: B24) -> B24:
    """The portal with a pool user and twenty extra managers, the app installed, pipeline 0 on the exchange."""
    add_people(b24)
    b24.install()
    configure_exchange(b24.our_portal())
    return b24


def claims(deal_id: int) -> list[ExchangeClaim]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(ExchangeClaim).where(ExchangeClaim.deal_id == str(deal_id))))


def audit_rows(deal_id: int) -> list[AuditEntry]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.deal_id == str(deal_id))))


def test_twenty_concurrent_claims_have_exactly_one_winner(market: B24):
    deal_id = create_incoming(market)
    lot_id = lot_of(deal_id).id
    portal_id = market.our_portal().id
    barrier = threading.Barrier(len(EXTRA_MANAGERS))
    answers: dict[int, tuple[int, dict]] = {}
    headers = {user_id: token(portal_id, user_id) for user_id in EXTRA_MANAGERS}

    def take(user_id: int) -> None:
        client = market.app.test_client()
        barrier.wait(timeout=20)
        response = client.post(f"/api/exchange/lots/{lot_id}/claim", headers=headers[user_id])
        answers[user_id] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=take, args=(user_id,)) for user_id in EXTRA_MANAGERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    winners = [user for user, (status, _body) in answers.items() if status == 200]
    losers = [body for status, body in answers.values() if status != 200]
    assert len(answers) == 20 and len(winners) == 1
    assert len(losers) == 19
    assert all(body["error"] == "already_taken" and "already been taken" in body["message"] for body in losers)
    assert responsible(market, deal_id) == str(winners[0])
    [active] = [c for c in claims(deal_id) if c.ended_at is None]
    assert active.manager_id == str(winners[0])
    assert lot_of(deal_id).holder_id == str(winners[0])
    market.settle()
    assert responsible(market, deal_id) == str(winners[0]), "the echo of the claim must not undo it"


def test_the_robot_puts_a_deal_on_the_exchange(market: B24):
    assert "rc_put_on_exchange" in market.sandbox.robots(market.portal)
    deal_id = market.sandbox.act(market.portal, MANAGER).create_deal(
        TITLE="Старый клиент", CATEGORY_ID="0", STAGE_ID="EXECUTING", ASSIGNED_BY_ID=MANAGER, SOURCE_ID="PARTNER"
    )
    configure_exchange(market.our_portal(), incoming_sources=["WEB"])
    market.settle()
    assert responsible(market, deal_id) == str(MANAGER)
    event_token = market.sandbox.run_robot(market.portal, "rc_put_on_exchange", deal_id, {"reason": "отпуск"})
    market.settle()
    assert responsible(market, deal_id) == str(POOL)
    assert market.sandbox.robot_result(market.portal, event_token) == {"outcome": "on the exchange"}
    assert market.sandbox.rest_calls(market.portal, "bizproc.event.send") == 1
    assert lot_of(deal_id).status == ExchangeLot.OPEN
    assert any(row.attempted == "put on exchange" for row in audit_rows(deal_id))
