"""The QA review, its recordings, callbacks and fines on an amoCRM account: the same assertions as
test_review.py, opened from the widget's lead-card tab, against the sandbox account and a real worker."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from app import review
from app.crm import amocrm
from app.db import db
from app.models import AuditEntry, Penalty, RefusalCase, ReviewCallback, utcnow
from app.penalties import update_cpl_settings
from app.queue import get_queue
from app.sandbox.amocrm.account import RECORDING_HOST
from tests.integration.amo import HEAD, MANAGER, OTHER_MANAGER, QA, Amo
from tests.integration.amo_review_helpers import (
    AmoReviewer,
    lead_field,
    lead_in_review,
    open_lead_tab,
    page_config,
    widget_session,
)
from tests.integration.b24 import configure_guard
from tests.integration.review_helpers import the_case

QA2 = 8
LOST = 143


@pytest.fixture
def guarded(amo_installed: Amo) -> Amo:
    portal = amo_installed.our_portal()
    configure_guard(portal)
    update_cpl_settings(portal, {"currency": "RUB", "default": "700", "by_source": {"yandex": "1500"}})
    db.session.commit()
    return amo_installed


def local(minutes: float = 0, seconds: float = 0) -> str:
    """A moment from now as the tab's date-time field sends it (account time, Moscow)."""
    moment = utcnow() + timedelta(minutes=minutes, seconds=seconds)
    return moment.astimezone(ZoneInfo("Europe/Moscow")).strftime("%Y-%m-%dT%H:%M:%S")


def call_tasks(amo: Amo, lead_id: int, user_id: int) -> list[dict]:
    return [
        t
        for t in amo.sandbox.tasks_for(amo.account, user_id=user_id, lead_id=lead_id)
        if "Перезвонить клиенту" in t["text"]
    ]


# -- the lead-card tab --------------------------------------------------------------------------


def test_the_lead_tab_opens_the_review_of_that_lead_and_leads_on_to_the_app(guarded: Amo):
    lead_id, case = lead_in_review(guarded)
    page = open_lead_tab(guarded, QA, lead_id)
    assert f"frame-ancestors https://{guarded.account.domain}" in page.headers["Content-Security-Policy"]
    config = page_config(page)
    assert config["caseUrl"].endswith(f"/api/review/cases/{case.id}")
    body = page.get_data(as_text=True)
    assert 'id="rc-open-app"' in body and "js/review.js" in body
    # A lead with no case says so; a lead tab without a lead is the main page.
    other = open_lead_tab(guarded, QA, 999999)
    assert other.status_code == 200 and 'id="rc-no-case"' in other.get_data(as_text=True)
    main = open_lead_tab(guarded, 1).get_data(as_text=True)
    assert 'data-tab="queue"' in main and 'data-tab="settings"' in main
    # The button on the review page swaps the page's token for a ticket to the main page, once.
    answer = guarded.client.post("/amocrm/app/ticket", headers={"X-RC-Token": config["token"]})
    assert answer.status_code == 200
    app_url = answer.get_json()["url"].removeprefix("https://app.example.test")
    app_page = guarded.client.get(app_url)
    assert app_page.status_code == 200 and 'data-tab="queue"' in app_page.get_data(as_text=True)
    assert guarded.client.get(app_url).status_code == 401
    assert guarded.client.post("/amocrm/app/ticket").status_code == 401
    assert guarded.client.post("/amocrm/app/ticket", headers={"X-RC-Token": "forged"}).status_code == 401


def test_a_lead_id_that_is_not_a_number_opens_the_main_page(guarded: Amo):
    answer = widget_session(guarded, QA, "5; drop table")
    page = guarded.client.get(answer.get_json()["url"].removeprefix("https://app.example.test"))
    assert page.status_code == 200 and 'data-tab="queue"' in page.get_data(as_text=True)


# -- the paths ----------------------------------------------------------------------------------


def test_recordings_confirm_then_close_as_lost_with_the_verdict_written(guarded: Amo):
    lead_id, _case = lead_in_review(guarded)
    qa = AmoReviewer(guarded, QA, lead_id)
    assert qa.view["actions"] == ["recordings_confirm", "recordings_not_confirmed", "recordings_none"]
    assert qa.view["case"]["manager"]["id"] == str(MANAGER)
    assert qa.view["case"]["manager"]["name"] == "Менеджер Иван"
    qa.act("recordings_confirm", "На записи клиент говорит про цену")
    assert qa.view["case"]["state"] == RefusalCase.CONFIRMED
    assert qa.view["actions"] == ["close_lost", "offer_again"]
    qa.act("close_lost", reason="price")
    assert guarded.status(lead_id) == LOST
    assert lead_field(guarded, lead_id, "qa_verdict") == "confirmed"
    assert the_case(lead_id).state == RefusalCase.CLOSED_LOST
    assert [step["action"] for step in qa.view["timeline"]][-2:] == ["recordings_confirm", "close_lost"]
    assert qa.view["actions"] == []
    # The echo of our own write was recognised: the lead stayed lost and nobody got a violation notice.
    guarded.settle()
    assert guarded.status(lead_id) == LOST
    assert the_case(lead_id).state == RefusalCase.CLOSED_LOST
    rows = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.deal_id == str(lead_id))).all()
    violations = [row.actor for row in rows if (row.details or {}).get("violation")]
    assert violations == [str(MANAGER)]  # only the manager's own attempt


def test_client_denies_returns_the_lead_to_another_manager_with_a_fine_by_source(guarded: Amo):
    lead_id, case = lead_in_review(guarded, utm_source="yandex")
    assert case.source_id == "yandex"
    qa = AmoReviewer(guarded, QA, lead_id)
    assert qa.view["case"]["source"] == "yandex"
    assert qa.view["case"]["cpl"].startswith("1") and "RUB" in qa.view["case"]["cpl"]
    qa.act("recordings_none")
    qa.act("schedule_callback", at=local(minutes=30), assignee=str(QA))
    back = guarded.statuses()["Переговоры"]
    qa.act("client_denies", "Клиент ждёт КП", stage_id=str(back))
    lead = guarded.sandbox.lead(guarded.account, lead_id)
    assert lead["status_id"] == back
    assert lead["responsible_user_id"] == OTHER_MANAGER
    assert lead_field(guarded, lead_id, "qa_verdict") == "leaked"
    [fine] = db.session.scalars(sa.select(Penalty).where(Penalty.case_id == case.id)).all()
    assert (fine.manager_id, fine.amount, fine.currency) == (str(MANAGER), Decimal("1500.00"), "RUB")
    assert the_case(lead_id).state == RefusalCase.LEAKED
    guarded.settle()
    assert guarded.status(lead_id) == back  # our own write did not trip the guard
    # The head's report counts the fine, and the source table names the lead source.
    head = {"X-RC-Token": page_config(open_lead_tab(guarded, HEAD, lead_id))["token"]}
    today = utcnow().astimezone(ZoneInfo("Europe/Moscow")).date().isoformat()
    body = guarded.client.get(f"/api/reports?from={today}&to={today}", headers=head).get_json()
    assert body["totals"]["penalties"] == {"RUB": "1500.00"}
    [manager] = body["managers"]
    assert manager["name"] == "Менеджер Иван"
    assert any(row["source_id"] == "yandex" and row["name"] == "yandex" for row in body["sources"])


def test_a_callback_fires_in_the_worker_and_creates_the_call_task(guarded: Amo):
    lead_id, case = lead_in_review(guarded)
    portal = guarded.our_portal()
    qa = AmoReviewer(guarded, QA, lead_id)
    qa.act("recordings_not_confirmed")
    qa.act("schedule_callback", at=local(seconds=2), assignee=str(QA2))
    assert get_queue("callbacks").scheduled_job_registry.get_job_ids() == [review.callback_job_id(portal.id, case.id)]
    guarded.work()
    assert call_tasks(guarded, lead_id, QA2) == []  # not yet due
    time.sleep(2.3)
    guarded.work()
    [task] = call_tasks(guarded, lead_id, QA2)
    assert task["task_type_id"] == amocrm.TASK_TYPE_CALL
    assert task["entity_type"] == "leads" and task["entity_id"] == lead_id
    assert task["complete_till"] >= int(utcnow().timestamp()) - 5
    callback = review.active_callback(the_case(lead_id))
    assert callback is not None and callback.status == ReviewCallback.DUE and callback.todo_id == str(task["id"])
    guarded.work()
    assert len(call_tasks(guarded, lead_id, QA2)) == 1  # never twice


# -- recordings ---------------------------------------------------------------------------------


def _lead_with_calls(amo: Amo, **call: object) -> tuple[int, AmoReviewer]:
    lead_id, _case = lead_in_review(amo)
    amo.sandbox.act(amo.account, MANAGER).make_call(lead_id, duration=42, **call)  # type: ignore[arg-type]
    return lead_id, AmoReviewer(amo, QA, lead_id)


def test_a_recording_on_the_account_host_plays_through_our_endpoint(guarded: Amo):
    _lead_id, qa = _lead_with_calls(guarded)
    [call] = qa.view["calls"]
    assert call["playable"] and call["duration"]
    audio = guarded.client.get(qa.config["recordingUrl"].replace("CALL", call["id"]), headers=qa.headers)
    assert audio.status_code == 200 and audio.mimetype == "audio/mpeg"
    assert audio.get_data().startswith(b"ID3")
    assert guarded.our_portal().access_token not in str(qa.view)
    someone_else = AmoReviewer(guarded, OTHER_MANAGER, _lead_id)
    url = qa.config["recordingUrl"].replace("CALL", call["id"])
    assert guarded.client.get(url, headers=someone_else.headers).status_code == 403


def test_a_recording_on_the_telephony_host_is_fetched_without_our_token(guarded: Amo, monkeypatch: pytest.MonkeyPatch):
    resolving = {RECORDING_HOST: {"198.51.100.7"}}
    monkeypatch.setattr(amocrm, "resolve_addresses", lambda host: resolving.get(host, set()))
    # 198.51.100.0/24 is documentation space, not global: a telephony host must resolve to public addresses.
    _lead_id, qa = _lead_with_calls(guarded, recording_host=RECORDING_HOST)
    [call] = qa.view["calls"]
    url = qa.config["recordingUrl"].replace("CALL", call["id"])
    refused = guarded.client.get(url, headers=qa.headers)
    assert refused.status_code == 422 and "not fetched" in refused.get_json()["message"]
    resolving[RECORDING_HOST] = {"93.184.216.34"}
    seen: list[dict[str, str]] = []
    original = amocrm.requests.get

    def spy(target: str, **kwargs: object):  # type: ignore[no-untyped-def]
        seen.append(dict(kwargs.get("headers") or {}))  # type: ignore[arg-type]
        return original(target, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(amocrm.requests, "get", spy)
    audio = guarded.client.get(url, headers=qa.headers)
    assert audio.status_code == 200 and audio.get_data().startswith(b"ID3")
    assert seen and all("Authorization" not in headers for headers in seen)
    guarded.app.config["AMO_RECORDING_HOSTS"] = ("telephony.example",)
    assert guarded.client.get(url, headers=qa.headers).status_code == 422


@pytest.mark.parametrize(
    "link",
    [
        "http://acme.amocrm.ru/recordings/1.mp3",
        "https://127.0.0.1/recordings/1.mp3",
        "https://169.254.169.254/latest/meta-data/",
        "https://user:pass@records.telephony.test/1.mp3",
        "https://acme.amocrm.ru:8443/recordings/1.mp3",
        "file:///etc/passwd",
    ],
)
def test_recording_links_to_private_or_odd_addresses_are_refused(guarded: Amo, link: str):
    _lead_id, qa = _lead_with_calls(guarded, link=link)
    [call] = qa.view["calls"]
    answer = guarded.client.get(qa.config["recordingUrl"].replace("CALL", call["id"]), headers=qa.headers)
    assert answer.status_code == 422 and answer.get_json()["error"] == "recording_refused"
