"""The lead exchange through the real handlers, a real worker and the sandbox portal."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from app import db as database
from app import exchange
from app.crm.factory import client_for
from app.db import db
from app.models import AuditEntry, ExchangeClaim, ExchangeLot, utcnow
from app.sandbox.seed import ADMIN_ID
from tests.conftest import _MIGRATED, clean_tables, make_app
from tests.integration.b24 import B24
from tests.integration.exchange_helpers import (
    EXTRA_MANAGERS,
    POOL,
    add_people,
    claim,
    configure_exchange,
    create_incoming,
    lot_of,
    open_deals,
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


def test_a_new_deal_goes_to_the_pool_user_and_its_echo_changes_nothing(market: B24):
    deal_id = create_incoming(market)
    assert responsible(market, deal_id) == str(POOL)
    lot = lot_of(deal_id)
    assert (lot.status, lot.source_id, lot.amount) == (ExchangeLot.OPEN, "WEB", "150000.00")
    updates = market.sandbox.rest_calls(market.portal, "crm.deal.update")
    market.settle()
    assert market.sandbox.rest_calls(market.portal, "crm.deal.update") == updates, "our own write must not loop"
    assert any(row.outcome == "to exchange" for row in audit_rows(deal_id))


def test_deals_from_sources_that_are_not_incoming_stay_with_their_creator(market: B24):
    configure_exchange(market.our_portal(), incoming_sources=["WEB", "CALL"])
    deal_id = create_incoming(market, source="PARTNER")
    assert responsible(market, deal_id) == str(MANAGER)


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


def test_the_cap_holds_through_the_app(market: B24):
    cap = open_deals(market, MANAGER) + 1
    configure_exchange(market.our_portal(), cap=cap)
    first, second = create_incoming(market, title="Первая"), create_incoming(market, title="Вторая")
    portal_id = market.our_portal().id
    assert claim(market.client, portal_id, lot_of(first).id, MANAGER).status_code == 200
    refused = claim(market.client, portal_id, lot_of(second).id, MANAGER)
    assert refused.status_code == 409
    assert refused.get_json()["error"] == "cap"
    assert responsible(market, first) == str(MANAGER)
    assert responsible(market, second) == str(POOL)
    assert lot_of(second).status == ExchangeLot.OPEN


def test_the_cap_holds_through_a_direct_crm_edit(market: B24):
    configure_exchange(market.our_portal(), cap=open_deals(market, MANAGER))
    deal_id = create_incoming(market)
    market.sandbox.act(market.portal, MANAGER).update_deal(deal_id, {"ASSIGNED_BY_ID": MANAGER})
    market.settle()
    assert responsible(market, deal_id) == str(POOL)
    notices = market.sandbox.notifications(market.portal, MANAGER)
    assert len(notices) == 1 and "лимит" in notices[0].message
    assert lot_of(deal_id).status == ExchangeLot.OPEN
    assert any(row.outcome == "reverted" and row.reason == "over cap" for row in audit_rows(deal_id))


def test_taking_a_pool_deal_in_the_crm_under_the_cap_is_a_claim(market: B24):
    deal_id = create_incoming(market)
    market.sandbox.act(market.portal, OTHER).update_deal(deal_id, {"ASSIGNED_BY_ID": OTHER})
    market.settle()
    assert responsible(market, deal_id) == str(OTHER)
    [taken] = claims(deal_id)
    assert (taken.manager_id, taken.via, taken.ended_at) == (str(OTHER), "crm", None)
    assert lot_of(deal_id).status == ExchangeLot.TAKEN
    # Someone else now grabbing it in the app is told it is taken.
    answer = claim(market.client, market.our_portal().id, lot_of(deal_id).id, MANAGER)
    assert answer.status_code == 409 and answer.get_json()["error"] == "already_taken"


def test_a_manager_returns_a_deal_with_a_reason(market: B24):
    deal_id = create_incoming(market)
    portal_id = market.our_portal().id
    lot_id = lot_of(deal_id).id
    assert claim(market.client, portal_id, lot_id, MANAGER).status_code == 200
    no_reason = market.client.post(f"/api/exchange/lots/{lot_id}/return", json={}, headers=token(portal_id, MANAGER))
    assert no_reason.status_code == 400
    answer = market.client.post(
        f"/api/exchange/lots/{lot_id}/return", json={"reason": "Не мой профиль"}, headers=token(portal_id, MANAGER)
    )
    assert answer.status_code == 200
    assert responsible(market, deal_id) == str(POOL)
    [returned] = claims(deal_id)
    assert (returned.outcome, returned.reason) == (ExchangeClaim.RETURNED, "Не мой профиль")
    market.settle()
    assert responsible(market, deal_id) == str(POOL)
    assert claim(market.client, portal_id, lot_id, OTHER).status_code == 200, "back on the exchange for others"


def test_an_idle_claim_returns_to_the_pool_once(market: B24):
    configure_exchange(market.our_portal(), idle_days=3)
    idle, busy = create_incoming(market, title="Забытая"), create_incoming(market, title="С задачей")
    portal_id = market.our_portal().id
    for deal_id in (idle, busy):
        assert claim(market.client, portal_id, lot_of(deal_id).id, MANAGER).status_code == 200
    market.sandbox.act(market.portal, MANAGER).create_task(
        TITLE="Перезвонить", RESPONSIBLE_ID=MANAGER, UF_CRM_TASK=[f"D_{busy}"], DEADLINE="2099-01-01T10:00:00+03:00"
    )
    market.settle()
    portal = market.our_portal()
    crm = client_for(portal)
    assert exchange.return_idle_claims(portal, crm, now=utcnow() + timedelta(days=2)) == 0
    later = utcnow() + timedelta(days=3, hours=1)
    assert exchange.return_idle_claims(portal, crm, now=later) == 1
    assert exchange.return_idle_claims(market.our_portal(), crm, now=later + timedelta(hours=2)) == 0
    market.settle()
    assert responsible(market, idle) == str(POOL)
    assert responsible(market, busy) == str(MANAGER)
    [auto] = claims(idle)
    assert auto.outcome == ExchangeClaim.AUTO_RETURNED
    notices = [n for n in market.sandbox.notifications(market.portal, MANAGER) if "возвращена на биржу" in n.message]
    assert len(notices) == 1 and "Забытая" in notices[0].message
    stats = {
        row.manager_id: row
        for row in exchange.claim_stats(portal.id, utcnow() - timedelta(days=1), later + timedelta(days=1))
    }
    assert (stats[str(MANAGER)].taken, stats[str(MANAGER)].auto_returned) == (2, 1)


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


def test_the_admin_sees_the_exchange_settings_and_a_manager_does_not(market: B24):
    portal_id = market.our_portal().id
    admin = market.client.get("/api/exchange/settings", headers=token(portal_id, ADMIN_ID, admin=True))
    assert admin.status_code == 200
    assert admin.get_json()["settings"]["pipelines"]["0"]["pool_user"] == str(POOL)
    assert market.client.get("/api/exchange/settings", headers=token(portal_id, MANAGER)).status_code == 403
    bad = market.client.put(
        "/api/exchange/settings",
        json={"pipelines": {"1": {"mode": "duty", "pool_user": str(POOL)}}},
        headers=token(portal_id, ADMIN_ID, admin=True),
    )
    assert bad.status_code == 400 and "duty_department" in bad.get_json()["fields"]["pipelines"]["1"]["value"]
    manager_put = market.client.put("/api/exchange/settings", json={}, headers=token(portal_id, MANAGER))
    assert manager_put.status_code == 403


def test_a_new_deal_closed_later_leaves_the_exchange(market: B24):
    deal_id = create_incoming(market)
    assert claim(market.client, market.our_portal().id, lot_of(deal_id).id, MANAGER).status_code == 200
    market.sandbox.act(market.portal, MANAGER).move_deal(deal_id, "WON")
    market.settle()
    assert lot_of(deal_id).status == ExchangeLot.CLOSED
    [closed] = claims(deal_id)
    assert closed.outcome == ExchangeClaim.CLOSED


def test_stats_through_the_api(market: B24):
    deal_id = create_incoming(market)
    portal_id = market.our_portal().id
    assert claim(market.client, portal_id, lot_of(deal_id).id, MANAGER).status_code == 200
    today = utcnow().date()
    query = f"/api/exchange/stats?from={today - timedelta(days=1)}&to={today + timedelta(days=2)}"
    answer = market.client.get(query, headers=token(portal_id, 9))
    assert market.client.get(query, headers=token(portal_id, MANAGER)).status_code == 403
    assert answer.status_code == 403, "user 9 is a head only once the guard settings say so"
    from tests.integration.b24 import configure_guard

    configure_guard(market.our_portal())
    answer = market.client.get(query, headers=token(portal_id, 9))
    assert answer.status_code == 200
    assert answer.get_json()["managers"] == [{"manager_id": "2", "taken": 1, "returned": 0, "auto_returned": 0}]
