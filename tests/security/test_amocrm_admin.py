"""amoCRM: only an account administrator connects or reconnects the integration (issue 16).

Any user may authorise an integration that is already installed, and the tokens have that user's rights. Before
the fix a plain manager's code replaced the admin's tokens, set the account back to "installing" and ran the
installer: `test_a_managers_code_after_install_changes_nothing` answered 200 and the stored tokens were the
manager's (the admin-only users list then failed with 403).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
import sqlalchemy as sa
from flask import Flask, current_app

from app.core.db import db
from app.core.models import AuditEntry, Portal
from app.core.queue import get_queue
from app.crm.amocrm import AmoCrm
from sandbox.amocrm import responses_amo
from tests.integration.amo import MANAGER, Amo, make_amo

ADMIN_ONLY = "Only an amoCRM account administrator can connect or reconnect the integration"


@pytest.fixture
def amo(app: Flask) -> Iterator[Amo]:
    sandbox, account = make_amo(app)
    with responses_amo(sandbox):
        yield Amo(app=app, client=app.test_client(), sandbox=sandbox, account=account)


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def _authorize_as(amo: Amo, user_id: int, headers: dict[str, str] | None = None) -> Any:
    """`user_id` allows access in amoCRM, which redirects his browser to our /amocrm/oauth."""
    query = {
        "code": amo.sandbox.authorization_code(amo.account, user_id),
        "state": amo.state(),
        "referer": amo.account.domain,
        "client_id": amo.account.client_id,
    }
    return amo.client.get("/amocrm/oauth", query_string=query, headers=headers or {})


def _queued() -> int:
    """Jobs waiting in any queue, now or scheduled."""
    queues = [get_queue(name) for name in current_app.config["QUEUE_NAMES"]]
    return sum(queue.count + queue.scheduled_job_registry.count for queue in queues)


def _snapshot(portal: Portal) -> tuple[Any, ...]:
    return (
        portal.access_token,
        portal.refresh_token,
        portal.token_expires_at,
        portal.status,
        portal.status_detail,
        portal.domain,
        portal.rest_base,
        portal.installed_at,
        portal.language,
    )


def _refusals() -> list[AuditEntry]:
    return list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.outcome == "refused")))


def test_an_admins_code_installs(amo: Amo) -> None:
    portal = amo.install()
    assert portal.status == "installed" and portal.access_token and portal.refresh_token
    assert amo.sandbox.account(amo.account).calls.count(("GET", "/api/v4/users", 200)) >= 1
    assert _refusals() == []


def test_a_managers_code_after_install_changes_nothing(amo: Amo) -> None:
    portal = amo.install()
    before = _snapshot(portal)
    assert _queued() == 0

    response = _authorize_as(amo, MANAGER)

    assert response.status_code == 403
    answer = response.get_json()
    assert answer["error"] == "forbidden"
    assert answer["message"].startswith("Подключить или переподключить интеграцию может только администратор")
    assert ADMIN_ONLY in answer["message"]
    after = amo.our_portal()
    assert _snapshot(after) == before  # the admin's tokens, the status, the host
    assert _queued() == 0  # no installer
    [refused] = _refusals()
    assert (refused.portal_id, refused.actor, refused.attempted) == (portal.id, str(MANAGER), "install")
    # amoCRM was asked with the manager's new token and said no; nothing was revoked or written there
    calls = amo.sandbox.account(amo.account).calls
    assert calls[-1] == ("GET", "/api/v4/users", 403)
    assert not [call for call in calls[-2:] if call[0] != "GET"]
    # the guard still has the admin's rights
    users = AmoCrm(after).list_users()
    assert {user.id for user in users} >= {"1", str(MANAGER)}


def test_a_managers_code_on_an_account_we_do_not_know_stores_nothing(amo: Amo) -> None:
    response = _authorize_as(amo, MANAGER)  # amoCRM's side: the integration is installed, ours never saw it
    assert response.status_code == 403
    assert ADMIN_ONLY in response.get_json()["message"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Portal)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 0
    assert _queued() == 0


def test_a_non_admin_cannot_install_in_the_sandbox_either(amo: Amo) -> None:
    portal = amo.install()
    amo.sandbox.uninstall(amo.account, "https://app.example.test/amocrm/uninstall")
    with pytest.raises(Exception, match="403"):
        amo.sandbox.authorization_code(amo.account, MANAGER)
    assert amo.our_portal().access_token == portal.access_token


HOST = "beta.amocrm.ru"


def _mock_exchange(mock: responses.RequestsMock, users: dict[str, Any]) -> None:
    token = {"access_token": "t", "refresh_token": "r", "expires_in": 86400}
    mock.add(responses.POST, f"https://{HOST}/oauth2/access_token", json=token)
    mock.add(responses.GET, f"https://{HOST}/api/v4/account", json={"id": 777, "current_user_id": 5})
    mock.add(responses.GET, f"https://{HOST}/api/v4/users", **users)


@pytest.mark.parametrize(
    "users",
    [
        {"body": requests.ConnectionError("down")},
        {"status": 500, "body": "oops"},
        {"status": 429, "json": {"title": "Too Many Requests"}},
        {"status": 302, "headers": {"Location": "https://evil.example/api/v4/users"}},
    ],
    ids=["unreachable", "error", "throttled", "redirect"],
)
def test_when_amocrm_does_not_tell_the_rights_nothing_is_stored(amo: Amo, users: dict[str, Any]) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        _mock_exchange(mock, users)
        response = amo.client.get("/amocrm/oauth", query_string={"code": "x", "referer": HOST, "from_widget": "1"})
        assert [call.request.url.split("?")[0] for call in mock.calls] == [
            f"https://{HOST}/oauth2/access_token",
            f"https://{HOST}/api/v4/account",
            f"https://{HOST}/api/v4/users",
        ]  # the redirect was not followed
    assert response.status_code == 502
    assert response.get_json()["error"] == "crm_unavailable"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Portal)) == 0
    assert _queued() == 0


def test_an_admin_on_a_mocked_host_with_an_empty_users_page_installs(amo: Amo) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        _mock_exchange(mock, {"status": 204, "body": ""})
        response = amo.client.get("/amocrm/oauth", query_string={"code": "x", "referer": HOST, "from_widget": "1"})
    assert response.status_code == 200, json.dumps(response.get_json())
    portal = db.session.scalar(sa.select(Portal).where(Portal.external_id == "777"))
    assert portal is not None and portal.status == "installing" and portal.access_token == "t"


def test_a_manager_who_reconnects_from_his_browser_reads_what_to_do_in_both_languages(amo: Amo) -> None:
    portal = amo.install()
    before = _snapshot(portal)
    response = _authorize_as(amo, MANAGER, headers=BROWSER)
    assert response.status_code == 403
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "может только администратор аккаунта amoCRM" in page
    assert "Only an amoCRM account administrator can connect or reconnect the integration" in page
    assert '"error"' not in page and "forbidden" not in page  # no raw JSON or codes for a person
    assert _snapshot(amo.our_portal()) == before


def test_a_tampered_connection_link_in_a_browser_is_a_page_not_json(app: Flask) -> None:
    app.config.update(AMO_CLIENT_ID="client", AMO_CLIENT_SECRET="secret")
    with responses.RequestsMock() as nothing_is_sent:
        response = app.test_client().get(
            "/amocrm/oauth",
            query_string={"code": "x", "referer": "evil.example?.amocrm.ru", "from_widget": "1"},
            headers=BROWSER,
        )
        assert len(nothing_is_sent.calls) == 0
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "Ссылка подключения неполная или не из amoCRM" in page and "The connection link is incomplete" in page
