"""Two Bitrix24 portals on one app: the exchange endpoints keep them apart.

The duty-rota scenarios (the portal's day around midnight, large deals, nobody on duty, who edits the rota,
who takes and returns) run on both CRMs in tests/scenarios/test_duty_rota.py."""

from __future__ import annotations

import pytest

from sandbox.mount import responses_sandbox
from sandbox.seed import ADMIN_ID
from tests.integration.b24 import B24
from tests.integration.conftest import make_b24
from tests.integration.exchange_helpers import (
    add_people,
    configure_exchange,
    create_incoming,
    lot_of,
    token,
)

MANAGER = 2


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


def test_a_second_portals_token_sees_nothing_of_the_first(app, duty: B24):
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
