"""Duty-rota routing on both CRMs: a new incoming deal goes to the manager on duty that day (the portal's day,
not UTC's), large deals to the commercial department (its head, or its own exchange), nobody on duty sends
the deal to the exchange; the rota is edited by admins only; the exchange endpoints keep tenants and roles
apart."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, ExchangeLot, Portal
from app.core.security import Identity, issue_token
from tests.integration.b24 import configure_guard
from tests.scenarios.driver import (
    ADMIN,
    COMMERCIAL,
    HEAD,
    INACTIVE_QA,
    MANAGER,
    OTHER_MANAGER,
    POOL,
    QA,
    CrmDriver,
)
from tests.scenarios.test_exchange import lot_of

MOSCOW = ZoneInfo("Europe/Moscow")  # both sandboxes' portals live in Moscow time
LARGE = 2_500_000  # at or above the threshold of 1 000 000


@pytest.fixture
def duty(bare_crm: CrmDriver) -> CrmDriver:
    """The CRM with a pool user, the app installed (QA 7 and 8, head 9), the main pipeline routed by the sales
    department's duty rota; incoming sources WEB and CALL; deals of 1 000 000 and more go to "commercial"."""
    bare_crm.add_pool_user()
    bare_crm.install()
    configure_guard(bare_crm.portal())
    configure_duty(bare_crm)
    return bare_crm


def configure_duty(crm: CrmDriver, **changes: Any) -> None:
    """The admin saves the routing settings on the settings tab."""
    settings = {
        "mode": "duty",
        "pool_user": str(POOL),
        "duty_department": crm.department_id("sales"),
        "incoming_sources": ["WEB", "CALL"],
        "large_threshold": "1000000",
        "commercial_department": crm.department_id("commercial"),
        **changes,
    }
    answer = crm.client.put(
        "/api/exchange/settings",
        json={"pipelines": {crm.pipeline_id("main"): settings}},
        headers=crm.token(ADMIN, admin=True),
    )
    assert answer.status_code == 200, answer.get_json()


def put_rota(crm: CrmDriver, days: dict[date, int], by: int = ADMIN, admin: bool = True) -> Any:
    """Someone saves duty days of the sales department on the rota tab."""
    body = {"department_id": crm.department_id("sales"), "days": {d.isoformat(): str(u) for d, u in days.items()}}
    return crm.client.put("/api/exchange/rota", json=body, headers=crm.token(by, admin=admin))


def incoming(crm: CrmDriver, title: str = "Заявка", amount: int = 150000, source: str = "WEB") -> str:
    """A request arrives: the site's form (as the admin's integration) creates a deal in the first stage."""
    return crm.new_deal(manager=ADMIN, stage="new", title=title, source=source, amount=amount)


def moscow_midnight() -> datetime:
    """Today's midnight in the portal's time zone (a moment in the past)."""
    return datetime.now(MOSCOW).replace(hour=0, minute=0, second=0, microsecond=0)


def audit_outcomes(deal_id: str) -> list[str]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(AuditEntry.outcome).where(AuditEntry.deal_id == deal_id)))


def test_the_duty_manager_is_picked_by_the_portal_day_around_midnight(duty: CrmDriver):
    midnight = moscow_midnight()
    yesterday, today = (midnight - timedelta(days=1)).date(), midnight.date()
    assert put_rota(duty, {yesterday: MANAGER, today: OTHER_MANAGER}).status_code == 200
    # Both moments fall on the same UTC day (midnight in Moscow is 21:00 UTC): only the portal's day tells
    # them apart.
    duty.set_clock(midnight - timedelta(minutes=1))
    late = incoming(duty, title="В 23:59")
    duty.set_clock(midnight + timedelta(minutes=1))
    early = incoming(duty, title="В 00:01")
    assert duty.responsible(late) == MANAGER
    assert duty.responsible(early) == OTHER_MANAGER
    assert any("дежурный" in text and "В 00:01" in text for text in duty.notices(OTHER_MANAGER))
    assert any("дежурный" in text and "В 23:59" in text for text in duty.notices(MANAGER))
    assert "to duty" in audit_outcomes(early)


def test_a_deal_from_a_source_that_is_not_incoming_stays_with_its_creator(duty: CrmDriver):
    today = datetime.now(MOSCOW).date()
    assert put_rota(duty, {today - timedelta(days=1): MANAGER, today: MANAGER}).status_code == 200
    deal_id = incoming(duty, source="PARTNER")
    assert duty.responsible(deal_id) == ADMIN
    assert not any("дежурный" in text for text in duty.notices(MANAGER))


def test_large_deals_go_to_the_commercial_department(duty: CrmDriver):
    today = datetime.now(MOSCOW).date()
    assert put_rota(duty, {today - timedelta(days=1): MANAGER, today: MANAGER}).status_code == 200
    deal_id = incoming(duty, title="Крупный заказ", amount=LARGE)
    if duty.department_heads:
        # Bitrix24: the head of the commercial department gets it, with a notice.
        assert duty.responsible(deal_id) == COMMERCIAL
        assert any("Крупная сделка" in text and "Крупный заказ" in text for text in duty.notices(COMMERCIAL))
    else:
        # amoCRM: a user group has no head, so the deal goes to the commercial department's own exchange.
        assert duty.responsible(deal_id) == POOL
        assert lot_of(deal_id).department_id == duty.department_id("commercial")
    assert not any("Крупный заказ" in text for text in duty.notices(MANAGER)), "not the manager on duty"


def test_large_deals_can_go_to_the_commercial_exchange(duty: CrmDriver):
    configure_duty(duty, commercial_route="exchange")
    deal_id = incoming(duty, amount=LARGE)
    assert duty.responsible(deal_id) == POOL
    lot = lot_of(deal_id)
    assert (lot.status, lot.department_id) == (ExchangeLot.OPEN, duty.department_id("commercial"))
    seen_by_sales = duty.client.get("/api/exchange/lots", headers=duty.token(MANAGER)).get_json()["lots"]
    seen_by_commerce = duty.client.get("/api/exchange/lots", headers=duty.token(COMMERCIAL)).get_json()["lots"]
    assert seen_by_sales == []
    assert [item["deal_id"] for item in seen_by_commerce] == [deal_id]
    refused = duty.client.post(f"/api/exchange/lots/{lot.id}/claim", headers=duty.token(MANAGER))
    assert refused.status_code == 403
    taken = duty.client.post(f"/api/exchange/lots/{lot.id}/claim", headers=duty.token(COMMERCIAL))
    assert taken.status_code == 200, taken.get_json()
    duty.settle()
    assert duty.responsible(deal_id) == COMMERCIAL


def test_nobody_on_duty_sends_the_deal_to_the_exchange(duty: CrmDriver):
    deal_id = incoming(duty, title="Ночная заявка")
    assert duty.responsible(deal_id) == POOL
    lot = lot_of(deal_id)
    assert (lot.status, lot.department_id) == (ExchangeLot.OPEN, None)
    listed = duty.client.get("/api/exchange/lots", headers=duty.token(MANAGER)).get_json()["lots"]
    assert [item["deal_id"] for item in listed] == [deal_id]


def test_the_rota_is_edited_by_admins_only(duty: CrmDriver):
    sales = duty.department_id("sales")
    first, second = date(2026, 5, 1), date(2026, 5, 2)
    assert put_rota(duty, {first: MANAGER, second: OTHER_MANAGER}, by=MANAGER, admin=False).status_code == 403
    assert put_rota(duty, {first: MANAGER, second: OTHER_MANAGER}, by=HEAD, admin=False).status_code == 403
    assert put_rota(duty, {first: MANAGER, second: OTHER_MANAGER}).status_code == 200
    admin = duty.token(ADMIN, admin=True)
    bad = duty.client.put("/api/exchange/rota", json={"department_id": sales, "days": {"1 мая": "2"}}, headers=admin)
    assert bad.status_code == 400 and "1 мая" in bad.get_json()["fields"]
    inactive = put_rota(duty, {date(2026, 5, 3): INACTIVE_QA})
    assert inactive.status_code == 400 and "2026-05-03" in inactive.get_json()["fields"]
    url = f"/api/exchange/rota?department_id={sales}&month=2026-05"
    shown = duty.client.get(url, headers=admin).get_json()
    assert shown["days"] == {"2026-05-01": str(MANAGER), "2026-05-02": str(OTHER_MANAGER)}
    assert duty.client.get(url, headers=duty.token(MANAGER)).status_code == 403
    assert duty.client.get(url, headers=duty.token(HEAD)).get_json()["days"] == shown["days"], "a head may look"


def test_another_portals_token_gets_404(duty: CrmDriver):
    deal_id = incoming(duty)
    lot_id = lot_of(deal_id).id
    ours = duty.portal()
    other = Portal(crm=ours.crm, external_id="another-tenant", domain="another.example", status="installed")
    db.session.add(other)
    db.session.commit()

    def as_other(user_id: int, admin: bool = False) -> dict[str, str]:
        return {"X-RC-Token": issue_token(Identity(other.id, str(user_id), is_admin=admin))}

    client = duty.client
    assert client.post(f"/api/exchange/lots/{lot_id}/claim", headers=as_other(MANAGER)).status_code == 404
    returned = client.post(f"/api/exchange/lots/{lot_id}/return", json={"reason": "x"}, headers=as_other(MANAGER))
    assert returned.status_code == 404
    assert put_rota(duty, {date(2026, 5, 1): MANAGER}).status_code == 200
    sales = duty.department_id("sales")
    rota = client.get(f"/api/exchange/rota?department_id={sales}&month=2026-05", headers=as_other(ADMIN, True))
    assert rota.get_json()["days"] == {}
    assert client.get("/api/exchange/stats", headers=as_other(ADMIN, True)).get_json()["managers"] == []
    assert duty.responsible(deal_id) == POOL and lot_of(deal_id).status == ExchangeLot.OPEN
    gone = {"X-RC-Token": issue_token(Identity(999_999, str(ADMIN), is_admin=True))}
    for method, url in (
        ("get", "/api/exchange/lots"),
        ("get", "/api/exchange/settings"),
        ("put", "/api/exchange/settings"),
        ("get", f"/api/exchange/rota?department_id={sales}"),
        ("put", "/api/exchange/rota"),
        ("get", "/api/exchange/stats"),
    ):
        assert getattr(client, method)(url, json={}, headers=gone).status_code == 404, url
    assert client.get("/api/exchange/lots").status_code == 401


def test_qa_cannot_take_and_only_the_holder_returns(duty: CrmDriver):
    deal_id = incoming(duty)
    lot_id = lot_of(deal_id).id
    client = duty.client
    assert client.post(f"/api/exchange/lots/{lot_id}/claim", headers=duty.token(QA)).status_code == 403
    assert client.post(f"/api/exchange/lots/{lot_id}/claim", headers=duty.token(POOL)).status_code == 403
    assert client.post(f"/api/exchange/lots/{lot_id}/claim", headers=duty.token(MANAGER)).status_code == 200
    duty.settle()
    assert duty.responsible(deal_id) == MANAGER
    reason = {"reason": "Клиент из другого региона"}
    url = f"/api/exchange/lots/{lot_id}/return"
    assert client.post(url, json=reason, headers=duty.token(OTHER_MANAGER)).status_code == 403
    assert duty.responsible(deal_id) == MANAGER
    assert client.post(url, json=reason, headers=duty.token(HEAD)).status_code == 200
    duty.settle()
    assert duty.responsible(deal_id) == POOL
