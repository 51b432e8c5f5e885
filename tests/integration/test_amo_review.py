"""amoCRM-only QA review cases: the widget's lead-card tab and its ticket to the main page, recordings on a
telephony host and refused recording links. The review scenarios shared with Bitrix24 are in
tests/scenarios/test_review.py."""

from __future__ import annotations

import pytest

from app.core.db import db
from app.crm import amocrm
from app.domain.penalties import update_cpl_settings
from sandbox.amocrm.account import RECORDING_HOST
from tests.integration.amo import MANAGER, QA, Amo
from tests.integration.amo_review_helpers import (
    amo_reviewer,
    lead_in_review,
    open_lead_tab,
    page_config,
    widget_session,
)
from tests.integration.b24 import configure_guard
from tests.scenarios.steps import Reviewer

QA2 = 8
LOST = 143


@pytest.fixture
def guarded(amo_installed: Amo) -> Amo:
    portal = amo_installed.our_portal()
    configure_guard(portal)
    update_cpl_settings(portal, {"currency": "RUB", "default": "700", "by_source": {"yandex": "1500"}})
    db.session.commit()
    return amo_installed


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


# -- recordings ---------------------------------------------------------------------------------


def _lead_with_calls(amo: Amo, **call: object) -> tuple[int, Reviewer]:
    lead_id, _case = lead_in_review(amo)
    amo.sandbox.act(amo.account, MANAGER).make_call(lead_id, duration=42, **call)  # type: ignore[arg-type]
    return lead_id, amo_reviewer(amo, QA, lead_id)


def test_a_recording_on_the_telephony_host_is_fetched_without_our_token(guarded: Amo, monkeypatch: pytest.MonkeyPatch):
    resolving = {RECORDING_HOST: {"198.51.100.7"}}
    monkeypatch.setattr("app.crm.amocrm.client.resolve_addresses", lambda host: resolving.get(host, set()))
    # 198.51.100.0/24 is documentation space, not global: a telephony host must resolve to public addresses.
    _lead_id, qa = _lead_with_calls(guarded, recording_host=RECORDING_HOST)
    [call] = qa.view["calls"]
    url = qa.config["recordingUrl"].replace("CALL", call["id"])
    refused = guarded.client.get(url, headers=qa.headers)
    assert refused.status_code == 422 and "not fetched" in refused.get_json()["message"]
    resolving[RECORDING_HOST] = {"93.184.216.34"}
    seen: list[tuple[dict[str, str], str | None]] = []
    original = amocrm.fetch_recording

    def spy(target: str, headers: dict[str, str], pinned: str | None, **kwargs: object):  # type: ignore[no-untyped-def]
        seen.append((dict(headers), pinned))
        return original(target, headers, pinned, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("app.crm.amocrm.client.fetch_recording", spy)
    audio = guarded.client.get(url, headers=qa.headers)
    assert audio.status_code == 200 and audio.get_data().startswith(b"ID3")
    # no token, and the connection pinned to the address that was checked
    assert seen and all("Authorization" not in headers and pinned == "93.184.216.34" for headers, pinned in seen)
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
