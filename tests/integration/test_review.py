"""Bitrix24-only QA review cases: the deal tab's frame checks, two portals of one app, an outcome the portal
refuses for now. The review scenarios shared with amoCRM are in tests/scenarios/test_review.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from app.core.db import db
from app.core.models import Effect, RefusalCase
from app.core.security import Identity, issue_token
from app.domain.penalties import update_cpl_settings
from sandbox.mount import responses_sandbox
from tests.integration.b24 import APP_URL, B24, configure_guard, new_deal
from tests.integration.conftest import make_b24
from tests.integration.review_helpers import (
    MANAGER,
    QA,
    case_in_review,
    open_tab,
    reviewer,
    tab_form,
    the_case,
)


@pytest.fixture
def guarded(installed: B24) -> B24:
    configure_guard(installed.our_portal())
    update_cpl_settings(installed.our_portal(), {"by_source": {"WEB": "1500"}})
    db.session.commit()
    return installed


@pytest.fixture
def two_portals(app: Flask) -> Iterator[tuple[B24, B24]]:
    """Two installed portals of the same app in one sandbox."""
    sandbox, first = make_b24(app)
    second = sandbox.seed_portal(
        domain="b.bitrix24.test",
        installed=False,
        app_url=APP_URL,
        seed=7,
        client_id=first.client_id,
        client_secret=first.client_secret,
    )
    sandbox.set_rate_limit(second, rate=200, burst=200)
    with responses_sandbox(sandbox):
        ours = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=first)
        theirs = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=second)
        for b24 in (ours, theirs):
            b24.install()
            configure_guard(b24.our_portal())
        yield ours, theirs


def deal_updates(b24: B24, deal_id: int) -> int:
    """Successful crm.deal.update calls on the deal."""
    calls = b24.sandbox.calls(b24.portal, "crm.deal.update")
    return sum(1 for c in calls if str(c.params.get("id")) == str(deal_id) and c.status == 200)


# -- the frame ---------------------------------------------------------------------------------


def test_a_forged_or_incomplete_frame_is_refused(guarded: B24):
    deal_id, _case = case_in_review(guarded)
    url = f"/b24/placement/deal-tab?DOMAIN={guarded.portal.domain}&LANG=ru"
    forged = {**tab_form(guarded, QA, deal_id), "APPLICATION_TOKEN": "f" * 32}
    assert guarded.client.post(url, data=forged).status_code == 401
    bogus_user = {**tab_form(guarded, QA, deal_id), "AUTH_ID": "not-a-token"}
    assert guarded.client.post(url, data=bogus_user).status_code == 401
    unknown = {**tab_form(guarded, QA, deal_id), "member_id": "0" * 32}
    assert guarded.client.post(url, data=unknown).status_code == 401
    no_deal = {**tab_form(guarded, QA, deal_id), "PLACEMENT_OPTIONS": "{}"}
    answer = guarded.client.post(url, data=no_deal)
    assert answer.status_code == 400
    assert "Эта вкладка открывается только из карточки сделки." in answer.get_data(as_text=True)
    page = open_tab(guarded, QA, deal_id)
    assert page.headers["Content-Security-Policy"] == f"frame-ancestors https://{guarded.portal.domain}"
    assert "Set-Cookie" not in page.headers


def _deal_with_call(b24: B24) -> tuple[int, RefusalCase]:
    deal_id = new_deal(b24)
    b24.sandbox.act(b24.portal, MANAGER).make_call(deal_id, duration=42)
    from tests.integration.b24 import fill_refusal

    fill_refusal(b24, deal_id, MANAGER, "price", "Дорого")
    b24.settle()
    b24.sandbox.act(b24.portal, MANAGER).move_deal(deal_id, "LOSE")
    b24.settle()
    return deal_id, the_case(deal_id)


# -- tenants -----------------------------------------------------------------------------------


def test_another_portals_token_gets_404_on_every_case_endpoint(two_portals: tuple[B24, B24]):
    ours, theirs = two_portals
    deal_id, case = _deal_with_call(ours)
    qa = reviewer(ours, QA, deal_id)
    call_id = qa.view["calls"][0]["id"]
    foreign = {"X-RC-Token": issue_token(Identity(portal_id=theirs.our_portal().id, user_id=str(QA)))}
    body = {"version": qa.view["version"], "expected": qa.view["expected"], "note": "", "params": {}}
    assert ours.client.get(qa.config["caseUrl"], headers=foreign).status_code == 404
    action = qa.config["actionUrl"].replace("ACTION", "recordings_confirm")
    assert ours.client.post(action, json=body, headers=foreign).status_code == 404
    recording = qa.config["recordingUrl"].replace("CALL", call_id)
    assert ours.client.get(recording, headers=foreign).status_code == 404
    assert the_case(deal_id).state == RefusalCase.AWAITING_REVIEW
    their_queue = ours.client.get("/api/review/queue", headers=foreign)
    assert their_queue.status_code == 200 and their_queue.get_json()["cases"] == []
    our_queue = ours.client.get("/api/review/queue", headers=qa.headers)
    assert [row["id"] for row in our_queue.get_json()["cases"]] == [case.id]
    # A frame of the other portal cannot open our deal's case either: it sees its own (none).
    page = open_tab(theirs, QA, deal_id)
    assert "По этой сделке нет проверки отказа" in page.get_data(as_text=True)


# -- the queue and settings --------------------------------------------------------------------


def test_an_outcome_the_crm_refuses_for_now_is_written_once_when_it_answers_again(guarded: B24):
    deal_id, case = case_in_review(guarded)
    qa = reviewer(guarded, QA, deal_id)
    qa.act("recordings_confirm")
    writes = deal_updates(guarded, deal_id)
    guarded.app.config["B24_RETRY_ATTEMPTS"] = 1
    guarded.sandbox.force_operation_limit(guarded.portal, "crm.deal.update", times=-1)
    answer = qa.post("close_lost")
    assert answer.status_code == 200  # the decision is recorded; the CRM catches up later
    assert the_case(deal_id).state == RefusalCase.CLOSED_LOST
    assert guarded.stage(deal_id) == "RC_REFUSAL"
    pending = db.session.scalar(sa.select(Effect).where(Effect.key == f"case:{case.id}:outcome"))
    assert pending is not None and pending.status == Effect.PENDING
    guarded.sandbox.force_operation_limit(guarded.portal, "crm.deal.update", times=0)
    guarded.settle()
    assert guarded.stage(deal_id) == "LOSE"
    assert deal_updates(guarded, deal_id) == writes + 1
