"""The amoCRM edge refuses what it cannot verify: uninstall signatures, webhook secrets, widget tokens."""

import hashlib
import hmac
import time

import sqlalchemy as sa

from app.core.db import db
from app.core.models import InboxItem, Portal
from sandbox.events import form_body
from tests.helpers import make_portal
from tests.integration.amo import APP_URL, MANAGER, Amo, new_lead

LOST = 143


def inbox_count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem))


def test_uninstall_with_a_forged_signature_changes_nothing(amo_installed: Amo):
    amo = amo_installed
    url = amo.sandbox.uninstall(amo.account, f"{APP_URL}/amocrm/uninstall", secret="not-the-client-secret")
    response = amo.client.get(url)
    assert response.status_code == 401 and response.get_json()["message"]
    portal = amo.our_portal()
    assert portal.status == "installed" and portal.refresh_token
    wrong_client = amo.client.get(
        "/amocrm/uninstall",
        query_string={"client_uuid": "someone-else", "account_id": amo.account.id, "signature": "00"},
    )
    assert wrong_client.status_code == 401
    assert amo.our_portal().status == "installed"


def test_uninstall_with_a_valid_signature_marks_the_account(amo_installed: Amo):
    amo = amo_installed
    response = amo.client.get(amo.sandbox.uninstall(amo.account, f"{APP_URL}/amocrm/uninstall"))
    assert response.status_code == 200
    portal = amo.our_portal()
    assert portal.status == "uninstalled" and portal.access_token is None and portal.refresh_token is None


def test_uninstall_signature_is_hmac_sha256_of_client_and_account(amo: Amo):
    message = f"{amo.account.client_id}|{amo.account.id}".encode()
    expected = hmac.new(amo.account.client_secret.encode(), message, hashlib.sha256).hexdigest()
    assert amo.sandbox.uninstall(amo.account, "https://x/u").endswith(f"signature={expected}")


def test_a_wrong_webhook_secret_or_account_is_refused(amo_installed: Amo):
    amo = amo_installed
    lead_id = new_lead(amo)
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, LOST)
    [hook] = amo.sandbox.pending_hooks()
    rows = inbox_count()
    wrong = hook.url.rsplit("/", 1)[0] + "/not-the-secret"
    response = amo.client.post(wrong, data=hook.body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 401 and response.get_json()["message"]
    other_account = hook.body.replace(f"account%5Bid%5D={amo.account.id}", "account%5Bid%5D=111")
    response = amo.client.post(hook.url, data=other_account, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 401
    assert inbox_count() == rows
    assert amo.status(lead_id) == LOST


def test_the_secret_of_one_account_does_not_open_another(amo_installed: Amo):
    amo = amo_installed
    secret_a = amo.our_portal().settings["amo_webhook_secret"]
    make_portal(
        "555", crm=Portal.AMOCRM, domain="beta.amocrm.ru", status="installed", settings={"amo_webhook_secret": "b" * 43}
    )
    rows = inbox_count()
    body = form_body({"leads": {"status": [{"id": 1, "status_id": 143}]}, "account": {"id": 555, "subdomain": "beta"}})
    for secret in (secret_a, "b" * 42):
        response = amo.client.post(
            f"/amocrm/webhooks/{secret}", data=body, content_type="application/x-www-form-urlencoded"
        )
        assert response.status_code == 401
    assert inbox_count() == rows


def test_malformed_webhook_bodies_get_a_clear_400(amo_installed: Amo):
    amo = amo_installed
    secret = amo.our_portal().settings["amo_webhook_secret"]
    for body in ("leads[status][0][id]=5", "account[id]=abc", f"account[id]={amo.account.id}&leads[status][0][id]=x"):
        response = amo.client.post(
            f"/amocrm/webhooks/{secret}", data=body, content_type="application/x-www-form-urlencoded"
        )
        assert response.status_code == 400 and response.get_json()["message"]


def test_webhook_ingest_answers_well_inside_two_seconds(amo_installed: Amo):
    amo = amo_installed
    lead_id = new_lead(amo)
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, LOST)
    [hook] = amo.sandbox.pending_hooks()
    started = time.monotonic()
    response = amo.client.post(hook.url, data=hook.body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and time.monotonic() - started < 0.5


def session(amo: Amo, token: str):
    """The widget outside a lead card (no lead id): the main page. A lead's tab: test_amo_review.py."""
    return amo.client.post(
        "/amocrm/widget/session",
        headers={"X-Auth-Token": token, "Origin": f"https://{amo.account.domain}"},
        json={"lead_id": ""},
    )


def test_a_widget_token_opens_the_main_page_once(amo_installed: Amo):
    amo = amo_installed
    token = amo.sandbox.widget_token(amo.account, 1, APP_URL)
    response = session(amo, token)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == f"https://{amo.account.domain}"
    url = response.get_json()["url"]
    assert url.startswith(f"{APP_URL}/amocrm/app?ticket=")
    page = amo.client.get(url.removeprefix(APP_URL))
    assert page.status_code == 200
    assert f"frame-ancestors https://{amo.account.domain}" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assert "Контроль отказов" in html and 'data-tab="settings"' in html  # the admin sees the settings tab
    assert amo.client.get(url.removeprefix(APP_URL)).status_code == 401, "a ticket works once"
    replay = session(amo, token)
    assert replay.status_code == 401 and replay.get_json()["message"]


def test_forged_foreign_and_expired_widget_tokens_are_refused(amo_installed: Amo):
    amo = amo_installed
    forged = amo.sandbox.widget_token(amo.account, 1, APP_URL, secret="a-guessed-secret-that-is-long-enough-for-hs256")
    wrong_audience = amo.sandbox.widget_token(amo.account, 1, "https://other.example")
    expired = amo.sandbox.widget_token(amo.account, 1, APP_URL, lifetime=-120)
    other_client = amo.sandbox.widget_token(amo.account, 1, APP_URL, client_uuid="another-integration")
    unknown_account = amo.sandbox.widget_token(amo.account, 1, APP_URL, account_id=42)
    for token in (forged, wrong_audience, expired, other_client, unknown_account, "", "not.a.jwt"):
        assert session(amo, token).status_code == 401
    manager = session(amo, amo.sandbox.widget_token(amo.account, MANAGER, APP_URL))
    page = amo.client.get(manager.get_json()["url"].removeprefix(APP_URL)).get_data(as_text=True)
    assert 'data-tab="settings"' not in page


def test_cors_preflight_is_answered_for_account_origins_only(amo: Amo):
    ok = amo.client.options("/amocrm/widget/session", headers={"Origin": f"https://{amo.account.domain}"})
    assert ok.status_code == 204 and "X-Auth-Token" in ok.headers["Access-Control-Allow-Headers"]
    assert amo.client.options("/amocrm/widget/session", headers={"Origin": "https://evil.example"}).status_code == 403
