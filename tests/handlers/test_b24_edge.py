"""The Bitrix24 edge verifies every call before it stores anything."""

from urllib.parse import urlencode

import pytest
import responses
import sqlalchemy as sa
from flask import Flask

from app.core.db import db
from app.core.models import AuditEntry, InboxItem, Portal
from app.domain.robots import REGISTRY, Robot
from tests.helpers import make_portal

OAUTH = "https://oauth.bitrix.info"


def event_body(member_id: str, app_token: str, event: str = "ONCRMDEALUPDATE", deal_id: str = "7", **extra: str) -> str:
    fields = {
        "event": event,
        "event_handler_id": "3",
        "data[FIELDS][ID]": deal_id,
        "ts": "1764070000",
        "auth[domain]": "a.bitrix24.test",
        "auth[client_endpoint]": "https://a.bitrix24.test/rest/",
        "auth[server_endpoint]": "https://oauth.bitrix.info/rest/",
        "auth[member_id]": member_id,
        "auth[application_token]": app_token,
        "auth[access_token]": "user-access-token",
        "auth[user_id]": "5",
        **extra,
    }
    return urlencode(fields)


def robot_body(member_id: str, app_token: str, code: str = "rc_test_robot") -> str:
    return urlencode(
        {
            "workflow_id": "wf1",
            "code": code,
            "document_id[0]": "crm",
            "document_id[1]": "CCrmDocumentDeal",
            "document_id[2]": "DEAL_42",
            "event_token": "wf1|act|sig",
            "properties[days]": "3",
            "auth[member_id]": member_id,
            "auth[application_token]": app_token,
        }
    )


def frame(member_id: str, app_token: str = "", auth_id: str = "frame-auth") -> dict[str, str]:
    return {
        "AUTH_ID": auth_id,
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": "frame-refresh",
        "member_id": member_id,
        "APPLICATION_TOKEN": app_token,
        "PLACEMENT": "DEFAULT",
    }


FORM = {"content_type": "application/x-www-form-urlencoded"}


def _nothing_stored() -> None:
    assert db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem)) == 0


@pytest.fixture
def robot_registered(monkeypatch: pytest.MonkeyPatch):
    robot = Robot("rc_test_robot", "Тест", "Test", "", "", "tests.helpers.remember")
    monkeypatch.setitem(REGISTRY, robot.code, robot)
    return robot


def test_event_from_unknown_portal_is_401(client, app: Flask):
    response = client.post("/b24/events", data=event_body("nobody", "t"), **FORM)
    assert response.status_code == 401
    assert response.get_json()["message"] == "unknown portal"
    _nothing_stored()


def test_event_with_forged_application_token_is_401(client, app: Flask):
    make_portal("member-a", application_token="real-token", status="installed")
    response = client.post("/b24/events", data=event_body("member-a", "forged"), **FORM)
    assert response.status_code == 401
    _nothing_stored()


def test_event_without_auth_is_400_with_the_fields_named(client, app: Flask):
    response = client.post("/b24/events", data="event=ONCRMDEALUPDATE&data[FIELDS][ID]=1", **FORM)
    assert response.status_code == 400
    assert "auth" in response.get_json()["fields"]
    _nothing_stored()


def test_garbage_body_is_400_not_500(client, app: Flask):
    response = client.post("/b24/events", data=b"\xff\xfe\x00garbage", **FORM)
    assert response.status_code == 400


def test_valid_event_is_stored_once_without_tokens(client, app: Flask):
    portal = make_portal("member-a", application_token="real-token", status="installed")
    body = event_body("member-a", "real-token")
    first = client.post("/b24/events", data=body, **FORM)
    second = client.post("/b24/events", data=body, **FORM)
    assert first.status_code == 200 and first.get_json()["duplicate"] is False
    assert second.status_code == 200 and second.get_json()["duplicate"] is True
    rows = db.session.scalars(sa.select(InboxItem)).all()
    assert len(rows) == 1
    assert rows[0].portal_id == portal.id
    assert "user-access-token" not in rows[0].body
    assert "real-token" not in rows[0].body  # stored bodies keep no token, the application token included


def test_events_of_portal_a_never_land_on_portal_b(client, app: Flask):
    make_portal("member-a", application_token="token-a", status="installed")
    portal_b = make_portal("member-b", application_token="token-b", status="installed")
    assert client.post("/b24/events", data=event_body("member-b", "token-a"), **FORM).status_code == 401
    assert client.post("/b24/events", data=event_body("member-b", "token-b"), **FORM).status_code == 200
    rows = db.session.scalars(sa.select(InboxItem)).all()
    assert [row.portal_id for row in rows] == [portal_b.id]


def test_robot_call_with_forged_token_is_401(client, app: Flask, robot_registered):
    make_portal("member-a", application_token="real-token", status="installed")
    assert client.post("/b24/robots/rc_test_robot", data=robot_body("member-a", "forged"), **FORM).status_code == 401
    assert client.post("/b24/robots/rc_test_robot", data=robot_body("nobody", "x"), **FORM).status_code == 401
    _nothing_stored()


def test_unknown_robot_is_404(client, app: Flask):
    make_portal("member-a", application_token="real-token", status="installed")
    response = client.post("/b24/robots/nope", data=robot_body("member-a", "real-token", code="nope"), **FORM)
    assert response.status_code == 404
    _nothing_stored()


@responses.activate
def test_install_frame_not_confirmed_by_oauth_server_is_401(client, app: Flask):
    responses.get(f"{OAUTH}/rest/app.info/", status=401, json={"error": "invalid_token"})
    response = client.post("/b24/install", data=frame("member-new"))
    assert response.status_code == 401
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Portal)) == 0


@responses.activate
def test_install_frame_for_another_member_id_is_401(client, app: Flask):
    """A valid token of portal X cannot install (or take over) portal Y."""
    responses.get(
        f"{OAUTH}/rest/app.info/",
        json={
            "result": {
                "client_id": "",
                "user_id": 1,
                "install": {"member_id": "member-x", "domain": "x.test", "client_endpoint": "https://x.test/rest/"},
            }
        },
    )
    make_portal("member-y", application_token="token-y", status="installed")
    response = client.post("/b24/install", data=frame("member-y"))
    assert response.status_code == 401
    portal = db.session.scalar(sa.select(Portal).where(Portal.external_id == "member-y"))
    assert portal.access_token is None


def test_install_frame_without_auth_id_is_400(client, app: Flask):
    assert client.post("/b24/install", data={"member_id": "m"}).status_code == 400


@responses.activate
def test_app_frame_with_forged_application_token_is_401(client, app: Flask):
    make_portal("member-a", application_token="real-token", status="installed")
    response = client.post("/b24/app", data=frame("member-a", app_token="forged"))
    assert response.status_code == 401
    assert len(responses.calls) == 0


def test_app_frame_from_unknown_portal_is_401(client, app: Flask):
    assert client.post("/b24/app", data=frame("nobody")).status_code == 401


@responses.activate
def test_app_frame_whose_user_the_portal_rejects_is_401(client, app: Flask):
    make_portal("member-a", application_token="real-token", status="installed")
    responses.post("https://member-a.bitrix24.test/rest/batch.json", status=401, json={"error": "invalid_token"})
    response = client.post("/b24/app", data=frame("member-a", app_token="real-token"))
    assert response.status_code == 401
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 0


def test_install_status_needs_a_signed_token(client, app: Flask):
    assert client.get("/b24/install/status").status_code == 401
    assert client.get("/b24/install/status", headers={"X-RC-Token": "forged.token"}).status_code == 401


def test_a_new_application_token_is_accepted_at_once_and_then_the_old_one_is_refused(client, app: Flask):
    """Tokens are trusted from memory only while they match; a reinstall's new token is read fresh."""
    portal = make_portal("member-a", application_token="first-token", status="installed")
    assert client.post("/b24/events", data=event_body("member-a", "first-token"), **FORM).status_code == 200
    portal.application_token = "second-token"
    db.session.commit()
    new = client.post("/b24/events", data=event_body("member-a", "second-token", deal_id="8"), **FORM)
    old = client.post("/b24/events", data=event_body("member-a", "first-token", deal_id="9"), **FORM)
    assert new.status_code == 200 and new.get_json()["duplicate"] is False
    assert old.status_code == 401
    stored = db.session.scalars(sa.select(InboxItem.dedupe_key).order_by(InboxItem.id)).all()
    assert [key.split(":")[3] for key in stored] == ["7", "8"]


def test_a_forged_token_is_refused_while_the_real_one_is_remembered(client, app: Flask):
    make_portal("member-a", application_token="real-token", status="installed")
    assert client.post("/b24/events", data=event_body("member-a", "real-token"), **FORM).status_code == 200
    forged = client.post("/b24/events", data=event_body("member-a", "forged", deal_id="8"), **FORM)
    assert forged.status_code == 401
    assert db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem)) == 1


def test_an_uninstalled_portal_is_ignored_at_once_without_the_token_cache(client, app: Flask):
    app.config["TENANT_CACHE_SECONDS"] = 0
    portal = make_portal("member-a", application_token="real-token", status="installed")
    assert client.post("/b24/events", data=event_body("member-a", "real-token"), **FORM).status_code == 200
    portal.status = "uninstalled"
    db.session.commit()
    answer = client.post("/b24/events", data=event_body("member-a", "real-token", deal_id="8"), **FORM)
    assert answer.get_json() == {"ok": True, "ignored": "portal uninstalled"}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem)) == 1


def test_two_authors_changing_a_deal_in_one_second_are_two_rows_while_the_first_waits(client, app: Flask):
    """Our own write of a deal (its echo, by the app's user) and a manager's change in the same second carry
    the same `ts`: the manager's change must not be folded into the echo's row, which is consumed as our echo
    without a read. The same author's identical body still folds into the waiting row."""
    make_portal("member-a", application_token="real-token", status="installed")
    echo = client.post("/b24/events", data=event_body("member-a", "real-token", **{"auth[user_id]": "1"}), **FORM)
    change = client.post("/b24/events", data=event_body("member-a", "real-token", **{"auth[user_id]": "5"}), **FORM)
    again = client.post("/b24/events", data=event_body("member-a", "real-token", **{"auth[user_id]": "5"}), **FORM)
    assert echo.get_json()["duplicate"] is False
    assert change.get_json()["duplicate"] is False
    assert again.get_json()["duplicate"] is True
    assert db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem)) == 2
