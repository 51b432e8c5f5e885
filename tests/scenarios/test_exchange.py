"""The lead exchange on both CRMs: new deals go to the pool user, managers claim them (within a cap) in the app or
in the CRM, give them back with a reason, idle claims return to the pool once, and heads see the stats."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, ExchangeClaim, ExchangeLot, utcnow
from app.crm.factory import client_for
from app.domain import exchange
from tests.integration.b24 import configure_guard
from tests.scenarios.driver import ADMIN, HEAD, MANAGER, OTHER_MANAGER, POOL, CrmDriver


@pytest.fixture
def market(bare_crm: CrmDriver) -> CrmDriver:
    """The CRM with a pool user «Биржа лидов», the app installed, the main pipeline on the exchange."""
    bare_crm.add_pool_user()
    bare_crm.install()
    configure_exchange(bare_crm)
    return bare_crm


def configure_exchange(crm: CrmDriver, **changes: Any) -> None:
    exchange.update_exchange_settings(
        crm.portal(),
        {"pipelines": {crm.pipeline_id("main"): {"mode": "exchange", "pool_user": str(POOL), **changes}}},
    )
    db.session.commit()


def incoming(crm: CrmDriver, title: str = "Заявка", source: str = "WEB") -> str:
    """A request arrives: a manager (or a form) creates a deal in the first stage; the app sees it."""
    return crm.new_deal(manager=MANAGER, stage="new", title=title, source=source)


def lot_of(deal_id: str) -> ExchangeLot:
    db.session.expire_all()
    lot = db.session.scalar(sa.select(ExchangeLot).where(ExchangeLot.deal_id == deal_id))
    assert lot is not None
    return lot


def claims(deal_id: str) -> list[ExchangeClaim]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(ExchangeClaim).where(ExchangeClaim.deal_id == deal_id)))


def audit_rows(deal_id: str) -> list[AuditEntry]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.deal_id == deal_id)))


def claim(crm: CrmDriver, deal_id: str, user_id: int) -> Any:
    """A manager presses «Взять» on the exchange page."""
    return crm.client.post(f"/api/exchange/lots/{lot_of(deal_id).id}/claim", headers=crm.token(user_id))


def give_back(crm: CrmDriver, deal_id: str, user_id: int, reason: str | None) -> Any:
    body = {} if reason is None else {"reason": reason}
    return crm.client.post(f"/api/exchange/lots/{lot_of(deal_id).id}/return", json=body, headers=crm.token(user_id))


def open_deals(crm: CrmDriver, user_id: int) -> int:
    return client_for(crm.portal()).count_open_deals(str(user_id), crm.pipeline_id("main"))


def test_a_new_deal_goes_to_the_pool_user_and_its_echo_changes_nothing(market: CrmDriver):
    deal_id = incoming(market)
    assert market.responsible(deal_id) == POOL
    lot = lot_of(deal_id)
    assert (lot.status, lot.source_id, lot.title) == (ExchangeLot.OPEN, "WEB", "Заявка")
    assert lot.amount is not None and float(lot.amount) == 150000
    writes = market.deal_writes(deal_id)
    market.settle()
    assert market.deal_writes(deal_id) == writes, "our own write must not loop"
    assert any(row.outcome == "to exchange" for row in audit_rows(deal_id))
    listed = market.client.get("/api/exchange/lots", headers=market.token(OTHER_MANAGER)).get_json()
    [shown] = [row for row in listed["lots"] if row["deal_id"] == deal_id]
    assert shown["url"] == market.deal_url(deal_id)


def test_deals_from_sources_that_are_not_incoming_stay_with_their_creator(market: CrmDriver):
    configure_exchange(market, incoming_sources=["WEB", "CALL"])
    deal_id = incoming(market, source="PARTNER")
    assert market.responsible(deal_id) == MANAGER


def test_the_cap_holds_through_the_app(market: CrmDriver):
    configure_exchange(market, cap=open_deals(market, MANAGER) + 1)
    first, second = incoming(market, title="Первая"), incoming(market, title="Вторая")
    assert claim(market, first, MANAGER).status_code == 200
    refused = claim(market, second, MANAGER)
    assert refused.status_code == 409 and refused.get_json()["error"] == "cap"
    market.settle()
    assert market.responsible(first) == MANAGER
    assert market.responsible(second) == POOL
    assert lot_of(second).status == ExchangeLot.OPEN
    taken = claim(market, first, OTHER_MANAGER)
    assert taken.status_code == 409 and taken.get_json()["error"] == "already_taken"


def test_the_cap_holds_through_a_direct_crm_edit(market: CrmDriver):
    held = incoming(market, title="Уже в работе")
    assert claim(market, held, MANAGER).status_code == 200
    market.settle()
    configure_exchange(market, cap=open_deals(market, MANAGER))
    deal_id = incoming(market)
    market.reassign(deal_id, MANAGER, by=MANAGER)
    market.settle()
    assert market.responsible(deal_id) == POOL
    [notice] = market.notices(MANAGER)
    assert "лимит" in notice
    assert lot_of(deal_id).status == ExchangeLot.OPEN
    assert any(row.outcome == "reverted" and row.reason == "over cap" for row in audit_rows(deal_id))


def test_taking_a_pool_deal_in_the_crm_under_the_cap_is_a_claim(market: CrmDriver):
    deal_id = incoming(market)
    market.reassign(deal_id, OTHER_MANAGER, by=OTHER_MANAGER)
    market.settle()
    assert market.responsible(deal_id) == OTHER_MANAGER
    [taken] = claims(deal_id)
    assert (taken.manager_id, taken.via, taken.ended_at) == (str(OTHER_MANAGER), "crm", None)
    assert lot_of(deal_id).status == ExchangeLot.TAKEN
    answer = claim(market, deal_id, MANAGER)
    assert answer.status_code == 409 and answer.get_json()["error"] == "already_taken"


def test_a_manager_returns_a_deal_with_a_reason(market: CrmDriver):
    deal_id = incoming(market)
    assert claim(market, deal_id, MANAGER).status_code == 200
    assert give_back(market, deal_id, MANAGER, None).status_code == 400
    assert give_back(market, deal_id, MANAGER, "Не мой профиль").status_code == 200
    assert market.responsible(deal_id) == POOL
    [returned] = claims(deal_id)
    assert (returned.outcome, returned.reason) == (ExchangeClaim.RETURNED, "Не мой профиль")
    market.settle()
    assert market.responsible(deal_id) == POOL
    assert claim(market, deal_id, OTHER_MANAGER).status_code == 200, "back on the exchange for others"
    market.settle()
    assert market.responsible(deal_id) == OTHER_MANAGER


def test_an_idle_claim_returns_to_the_pool_once(market: CrmDriver):
    configure_exchange(market, idle_days=3)
    idle, busy = incoming(market, title="Забытая"), incoming(market, title="С задачей")
    for deal_id in (idle, busy):
        assert claim(market, deal_id, MANAGER).status_code == 200
    market.create_task(busy, MANAGER, utcnow() + timedelta(days=30), "Перезвонить", by=MANAGER)
    market.settle()
    portal = market.portal()
    crm = client_for(portal)
    assert exchange.return_idle_claims(portal, crm, now=utcnow() + timedelta(days=2)) == 0
    later = utcnow() + timedelta(days=3, hours=1)
    assert exchange.return_idle_claims(portal, crm, now=later) == 1
    assert exchange.return_idle_claims(market.portal(), crm, now=later + timedelta(hours=2)) == 0
    market.settle()
    assert market.responsible(idle) == POOL
    assert market.responsible(busy) == MANAGER
    [auto] = claims(idle)
    assert auto.outcome == ExchangeClaim.AUTO_RETURNED
    notices = [text for text in market.notices(MANAGER) if "возвращена на биржу" in text]
    assert len(notices) == 1 and "Забытая" in notices[0]
    stats = {
        row.manager_id: row
        for row in exchange.claim_stats(portal.id, utcnow() - timedelta(days=1), later + timedelta(days=1))
    }
    assert (stats[str(MANAGER)].taken, stats[str(MANAGER)].auto_returned) == (2, 1)


def test_a_completed_task_no_longer_keeps_an_idle_claim(market: CrmDriver):
    configure_exchange(market, idle_days=3)
    deal_id = incoming(market, title="Сделанная задача")
    assert claim(market, deal_id, MANAGER).status_code == 200
    task_id = market.create_task(deal_id, MANAGER, utcnow() + timedelta(days=1), "Отправить КП", by=MANAGER)
    market.settle()
    portal = market.portal()
    later = utcnow() + timedelta(days=3, hours=1)
    assert exchange.return_idle_claims(portal, client_for(portal), now=later) == 0, "an open task is a next step"
    market.complete_task(task_id, by=MANAGER)
    market.settle()
    [task] = [t for t in market.deal_tasks(deal_id) if t.id == task_id]
    assert not task.is_open
    assert exchange.return_idle_claims(market.portal(), client_for(portal), now=later) == 1
    market.settle()
    assert market.responsible(deal_id) == POOL


def test_a_deal_won_later_leaves_the_exchange(market: CrmDriver):
    deal_id = incoming(market)
    assert claim(market, deal_id, MANAGER).status_code == 200
    market.settle()
    market.move(deal_id, "won", by=MANAGER)
    market.settle()
    assert lot_of(deal_id).status == ExchangeLot.CLOSED
    [closed] = claims(deal_id)
    assert closed.outcome == ExchangeClaim.WON


def test_heads_see_the_exchange_per_manager_on_the_reports_page(market: CrmDriver):
    configure_guard(market.portal(), heads=[str(HEAD)])
    won, lost, kept = incoming(market, title="Выигранная"), incoming(market, title="Проигранная"), incoming(market)
    for deal_id, who in ((won, MANAGER), (lost, MANAGER), (kept, OTHER_MANAGER)):
        assert claim(market, deal_id, who).status_code == 200
    market.settle()
    market.move(won, "won", by=MANAGER)
    market.move(lost, "lost", by=HEAD)
    market.settle()
    [waited] = claims(kept)
    assert waited.waited_seconds is not None and waited.waited_seconds >= 0
    today = exchange.portal_day(market.portal(), utcnow()).isoformat()
    answer = market.client.get(f"/api/exchange/stats?from={today}", headers=market.token(HEAD))
    rows = {row["manager_id"]: row for row in answer.get_json()["managers"]}
    assert (rows[str(MANAGER)]["taken"], rows[str(MANAGER)]["won"], rows[str(MANAGER)]["lost"]) == (2, 1, 1)
    assert rows[str(OTHER_MANAGER)]["taken"] == 1 and rows[str(OTHER_MANAGER)]["mean_wait_hours"] is not None

    page = market.client.get(f"/api/reports/view?from={today}&to={today}", headers=market.token(HEAD))
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Биржа лидов по менеджерам" in html and market.user_name(MANAGER) in html
    csv = market.client.get(f"/api/reports/exchange.csv?from={today}&to={today}", headers=market.token(HEAD))
    lines = csv.get_data(as_text=True).lstrip("\ufeff").strip().split("\r\n")
    assert lines[0].startswith("Менеджер;Взято с биржи;Выиграно;Проиграно;Возвращено на биржу")
    assert f"{market.user_name(MANAGER)};2;1;1;0;0;" in lines[1] + ";"
    assert lines[-1].startswith("Итого;3;1;1;0;0")
    manager_page = market.client.get(f"/api/reports/view?from={today}&to={today}", headers=market.token(MANAGER))
    assert manager_page.status_code == 403


def test_the_admin_sees_the_exchange_settings_and_a_manager_does_not(market: CrmDriver):
    admin = market.token(ADMIN, admin=True)
    answer = market.client.get("/api/exchange/settings", headers=admin)
    assert answer.status_code == 200
    assert answer.get_json()["settings"]["pipelines"][market.pipeline_id("main")]["pool_user"] == str(POOL)
    assert market.client.get("/api/exchange/settings", headers=market.token(MANAGER)).status_code == 403
    other = market.pipeline_id("other")
    bad = market.client.put(
        "/api/exchange/settings", json={"pipelines": {other: {"mode": "duty", "pool_user": str(POOL)}}}, headers=admin
    )
    assert bad.status_code == 400 and "duty_department" in bad.get_json()["fields"]["pipelines"][other]["value"]
    assert market.client.put("/api/exchange/settings", json={}, headers=market.token(MANAGER)).status_code == 403


def test_stats_through_the_api_for_heads_only(market: CrmDriver):
    deal_id = incoming(market)
    assert claim(market, deal_id, MANAGER).status_code == 200
    today = utcnow().date()
    query = f"/api/exchange/stats?from={today - timedelta(days=1)}&to={today + timedelta(days=2)}"
    assert market.client.get(query, headers=market.token(MANAGER)).status_code == 403
    assert market.client.get(query, headers=market.token(HEAD)).status_code == 403, "a head once the settings say so"
    configure_guard(market.portal(), heads=[str(HEAD)])
    answer = market.client.get(query, headers=market.token(HEAD))
    assert answer.status_code == 200
    [row] = answer.get_json()["managers"]
    assert {key: row[key] for key in ("manager_id", "taken", "returned", "auto_returned", "won", "lost")} == {
        "manager_id": str(MANAGER),
        "taken": 1,
        "returned": 0,
        "auto_returned": 0,
        "won": 0,
        "lost": 0,
    }
    assert row["mean_wait_hours"] is not None
