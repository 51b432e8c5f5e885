"""Sessions: a page token never outlives the session the CRM vouched for, however often it is traded for a new
ticket; an uninstalled portal's tokens are refused on every API; administrator rights are re-read, so a user
the CRM no longer calls an administrator cannot change the settings with the token he still holds."""

from __future__ import annotations

import re
import time

import pytest
from flask import Flask

from app.core.db import db
from app.core.security import TOKEN_MAX_AGE_SECONDS
from app.domain.settings import guard_settings
from tests.integration.amo import Amo
from tests.integration.amo_review_helpers import open_lead_tab
from tests.integration.b24 import B24
from tests.integration.conftest import amo, b24, installed  # noqa: F401 - fixtures
from tests.integration.review_helpers import page_config
from tests.security.conftest import ADMIN, HEAD, headers, installed_portal

ADMIN_USER = 1  # an administrator in both sandboxes
_TOKEN = re.compile(r'"token":\s*"([^"]+)"')


class Clock:
    """time.time() moved forward by `offset` seconds (itsdangerous and the app read it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + self.offset)


def _page_token(page) -> str:
    assert page.status_code == 200, page.get_data(as_text=True)[:300]
    found = _TOKEN.search(page.get_data(as_text=True))
    assert found, "the page carries no token"
    return found.group(1)


def test_trading_the_amocrm_page_token_for_tickets_never_extends_the_session(
    amo: Amo,  # noqa: F811 - the imported fixture
    monkeypatch: pytest.MonkeyPatch,
):
    amo.install()
    clock = Clock(monkeypatch)
    token = page_config(open_lead_tab(amo, ADMIN_USER))["token"]
    # Every 50 minutes the page trades its token for a fresh ticket and opens the main page with it.
    for _ in range(2):
        clock.offset += 50 * 60
        ticket = amo.client.post("/amocrm/app/ticket", headers={"X-RC-Token": token})
        assert ticket.status_code == 200
        token = _page_token(amo.client.get(ticket.get_json()["url"].removeprefix("https://app.example.test")))
        assert amo.client.get("/api/settings/reports", headers={"X-RC-Token": token}).status_code == 200
    # Past the lifetime of the session amoCRM vouched for, the newest token is as dead as the first.
    clock.offset = TOKEN_MAX_AGE_SECONDS + 60
    assert amo.client.get("/api/settings/reports", headers={"X-RC-Token": token}).status_code == 401
    assert amo.client.post("/amocrm/app/ticket", headers={"X-RC-Token": token}).status_code == 401


API_GETS = [
    "/api/settings",
    "/api/settings/cpl",
    "/api/settings/reports",
    "/api/reports",
    "/api/reports/view",
    "/api/reports/ledger",
    "/api/reports/managers.csv",
    "/api/exchange/lots",
    "/api/exchange/settings",
    "/api/exchange/rota",
    "/api/exchange/stats",
    "/api/review/queue",
    "/api/review/settings",
    "/api/taskcontrol/report",
    "/api/taskcontrol/settings",
    "/b24/install/status",
]
API_WRITES = [
    ("PUT", "/api/settings", {"exempt_users": [HEAD]}),
    ("PUT", "/api/settings/reports", {}),
    ("POST", "/b24/install/retry", None),
]


def test_an_uninstalled_portals_tokens_are_refused_on_every_api(app: Flask):
    portal = installed_portal(settings={"guard": {"heads": [ADMIN]}})
    admin = headers(portal, ADMIN, admin=True)
    portal.status = "uninstalled"
    db.session.commit()
    client = app.test_client()
    for path in API_GETS:
        assert client.get(path, headers=admin).status_code == 401, path
    for method, path, body in API_WRITES:
        assert client.open(path, method=method, json=body, headers=admin).status_code == 401, path
    db.session.expire_all()
    assert guard_settings(portal).exempt_users == ()


def test_a_demoted_administrators_token_cannot_change_the_settings(b24: B24):  # noqa: F811 - the fixture
    b24.install()
    admin_page = b24.client.post(f"/b24/app?DOMAIN={b24.portal.domain}&LANG=ru", data=b24.frame(ADMIN_USER))
    token = {"X-RC-Token": _page_token(admin_page)}
    assert b24.client.put("/api/settings", json={"review_sla_hours": 30}, headers=token).status_code == 200
    # The portal takes his administrator rights away; the next time he opens the app the portal says so.
    with b24.sandbox.lock:
        b24.portal.users[ADMIN_USER]["IS_ADMIN"] = False
    reopened = b24.client.post(f"/b24/app?DOMAIN={b24.portal.domain}&LANG=ru", data=b24.frame(ADMIN_USER))
    assert reopened.status_code == 200
    # The token he kept from before is still within its lifetime, but its administrator bit is not trusted.
    answer = b24.client.put("/api/settings", json={"exempt_users": [str(ADMIN_USER)]}, headers=token)
    assert answer.status_code == 403
    assert guard_settings(b24.our_portal()).exempt_users == ()
    assert guard_settings(b24.our_portal()).review_sla_hours == 30
