"""Duty-rota routing and the tenant/role checks of the exchange endpoints."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app import exchange
from app.db import db
from app.sandbox import ManualClock
from app.sandbox.mount import responses_sandbox
from app.sandbox.seed import ADMIN_ID, COMMERCIAL_HEAD
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24
from tests.integration.exchange_helpers import (
    POOL,
    add_people,
    configure_exchange,
    create_incoming,
    lot_of,
    responsible,
    token,
)

MOSCOW = ZoneInfo("Europe/Moscow")
MANAGER, OTHER, QA, HEAD = 2, 3, 7, 9


@pytest.fixture
def duty(b24: B24) -> B24:
    add_people(b24)
    b24.install()
    configure_exchange(
        b24.our_portal(),
        mode="duty",
        duty_department="2",
        incoming_sources=["WEB", "CALL"],
        large_threshold="1000000",
        commercial_department="4",
    )
    return b24


def _midnight_clock(b24: B24) -> tuple[ManualClock, datetime]:
    """The portal's clock one minute before today's midnight in Moscow (a moment in the past)."""
    midnight = datetime.now(MOSCOW).replace(hour=0, minute=0, second=0, microsecond=0)
    clock = ManualClock((midnight - timedelta(minutes=1)).timestamp())
    b24.sandbox.clock = clock
    b24.sandbox.set_rate_limit(b24.portal, enabled=False)  # its token bucket refills by this frozen clock
    return clock, midnight


def test_the_duty_manager_is_picked_by_the_portal_day_around_midnight(duty: B24):
    clock, midnight = _midnight_clock(duty)
    portal = duty.our_portal()
    yesterday, today = (midnight - timedelta(days=1)).date(), midnight.date()
    exchange.set_rota(portal.id, "2", {yesterday: str(MANAGER), today: str(OTHER)})
    db.session.commit()
    late = create_incoming(duty, creator=5, title="В 23:59")
    clock.advance(120)
    early = create_incoming(duty, creator=5, title="В 00:01")
    assert responsible(duty, late) == str(MANAGER)
    assert responsible(duty, early) == str(OTHER)
    assert any("дежурный" in n.message for n in duty.sandbox.notifications(duty.portal, OTHER))


def test_utc_midnight_is_not_the_portal_midnight(duty: B24):
    portal = duty.our_portal()
    day = datetime(2026, 3, 10, tzinfo=MOSCOW).date()
    exchange.set_rota(portal.id, "2", {day: str(MANAGER)})
    db.session.commit()
    # 22:30 UTC on March 9 is 01:30 on March 10 in Moscow.
    assert exchange.duty_user(portal, "2", datetime(2026, 3, 9, 22, 30, tzinfo=ZoneInfo("UTC"))) == str(MANAGER)
    assert exchange.duty_user(portal, "2", datetime(2026, 3, 9, 20, 59, tzinfo=ZoneInfo("UTC"))) is None


def test_large_deals_go_to_the_commercial_department(duty: B24):
    _clock, midnight = _midnight_clock(duty)
    exchange.set_rota(duty.our_portal().id, "2", {(midnight - timedelta(days=1)).date(): str(MANAGER)})
    db.session.commit()
    deal_id = create_incoming(duty, creator=5, amount="2500000.00")
    assert responsible(duty, deal_id) == str(COMMERCIAL_HEAD)
    assert any("Крупная сделка" in n.message for n in duty.sandbox.notifications(duty.portal, COMMERCIAL_HEAD))


def test_large_deals_can_go_to_the_commercial_exchange(duty: B24):
    configure_exchange(duty.our_portal(), commercial_route="exchange")
    deal_id = create_incoming(duty, creator=5, amount="2500000.00")
    assert responsible(duty, deal_id) == str(POOL)
    lot = lot_of(deal_id)
    assert lot.department_id == "4"
    portal_id = duty.our_portal().id
    seen_by_sales = duty.client.get("/api/exchange/lots", headers=token(portal_id, MANAGER)).get_json()["lots"]
    seen_by_commerce = duty.client.get("/api/exchange/lots", headers=token(portal_id, COMMERCIAL_HEAD)).get_json()
    assert seen_by_sales == []
    assert [item["deal_id"] for item in seen_by_commerce["lots"]] == [str(deal_id)]
    refused = duty.client.post(f"/api/exchange/lots/{lot.id}/claim", headers=token(portal_id, MANAGER))
    assert refused.status_code == 403


def test_nobody_on_duty_sends_the_deal_to_the_exchange(duty: B24):
    deal_id = create_incoming(duty, creator=5)
    assert responsible(duty, deal_id) == str(POOL)
    assert lot_of(deal_id).status == "open"


def test_the_rota_is_edited_by_admins_only(duty: B24):
    portal_id = duty.our_portal().id
    body = {"department_id": "2", "days": {"2026-05-01": str(MANAGER), "2026-05-02": str(OTHER)}}
    admin = token(portal_id, ADMIN_ID, admin=True)
    assert duty.client.put("/api/exchange/rota", json=body, headers=token(portal_id, MANAGER)).status_code == 403
    assert duty.client.put("/api/exchange/rota", json=body, headers=admin).status_code == 200
    bad = duty.client.put("/api/exchange/rota", json={"department_id": "2", "days": {"1 мая": "2"}}, headers=admin)
    assert bad.status_code == 400
    inactive = duty.client.put(
        "/api/exchange/rota", json={"department_id": "2", "days": {"2026-05-03": "10"}}, headers=admin
    )
    assert inactive.status_code == 400
    shown = duty.client.get("/api/exchange/rota?department_id=2&month=2026-05", headers=admin).get_json()
    assert shown["days"] == {"2026-05-01": "2", "2026-05-02": "3"}
    assert (
        duty.client.get(
            "/api/exchange/rota?department_id=2&month=2026-05", headers=token(portal_id, MANAGER)
        ).status_code
        == 403
    )
    configure_guard(duty.our_portal())
    assert (
        duty.client.get("/api/exchange/rota?department_id=2&month=2026-05", headers=token(portal_id, HEAD)).status_code
        == 200
    )


def test_another_portals_token_gets_404(app, duty: B24):
    deal_id = create_incoming(duty, creator=5)
    lot_id = lot_of(deal_id).id
    sandbox_b, portal_b = make_b24(app, domain="b.bitrix24.test", seed=7)
    with responses_sandbox(sandbox_b):
        other = B24(app=app, client=app.test_client(), sandbox=sandbox_b, portal=portal_b)
        other_id = other.install().id
    foreign = token(other_id, MANAGER)
    foreign_admin = token(other_id, ADMIN_ID, admin=True)
    client = duty.client
    assert client.post(f"/api/exchange/lots/{lot_id}/claim", headers=foreign).status_code == 404
    assert client.post(f"/api/exchange/lots/{lot_id}/return", json={"reason": "x"}, headers=foreign).status_code == 404
    with responses_sandbox(sandbox_b):
        assert client.get("/api/exchange/lots", headers=foreign).get_json()["lots"] == []
        assert client.get("/api/exchange/settings", headers=foreign_admin).get_json()["settings"] == {"pipelines": {}}
        assert (
            client.get("/api/exchange/rota?department_id=2&month=2026-05", headers=foreign_admin).get_json()["days"]
            == {}
        )
        assert client.get("/api/exchange/stats", headers=foreign_admin).get_json()["managers"] == []
    gone = token(999_999, ADMIN_ID, admin=True)
    for method, url in (
        ("get", "/api/exchange/lots"),
        ("get", "/api/exchange/settings"),
        ("put", "/api/exchange/settings"),
        ("get", "/api/exchange/rota?department_id=2"),
        ("put", "/api/exchange/rota"),
        ("get", "/api/exchange/stats"),
    ):
        assert getattr(client, method)(url, json={}, headers=gone).status_code == 404, url
    assert client.get("/api/exchange/lots").status_code == 401


def test_qa_cannot_take_and_only_the_holder_returns(duty: B24):
    configure_guard(duty.our_portal())
    deal_id = create_incoming(duty, creator=5)
    portal_id = duty.our_portal().id
    lot_id = lot_of(deal_id).id
    assert duty.client.post(f"/api/exchange/lots/{lot_id}/claim", headers=token(portal_id, QA)).status_code == 403
    assert duty.client.post(f"/api/exchange/lots/{lot_id}/claim", headers=token(portal_id, POOL)).status_code == 403
    assert duty.client.post(f"/api/exchange/lots/{lot_id}/claim", headers=token(portal_id, MANAGER)).status_code == 200
    reason = {"reason": "Клиент из другого региона"}
    url = f"/api/exchange/lots/{lot_id}/return"
    assert duty.client.post(url, json=reason, headers=token(portal_id, OTHER)).status_code == 403
    assert duty.client.post(url, json=reason, headers=token(portal_id, HEAD)).status_code == 200
    assert responsible(duty, deal_id) == str(POOL)
