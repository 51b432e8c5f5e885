"""The review tab and the QA queue in a real Chromium, against the app and the sandbox portal."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from app.core.db import db
from app.core.models import Penalty, RefusalCase
from app.domain import review
from app.domain.penalties import update_cpl_settings
from sandbox.mount import mount_responses
from tests.browser.conftest import LiveServer
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24
from tests.integration.review_helpers import HEAD, MANAGER, QA, QA2, case_in_review, deal_field, tab_form, the_case
from tests.scenarios.steps import local

pytestmark = pytest.mark.browser


@pytest.fixture
def portal(app: Flask, live_server: LiveServer) -> Iterator[B24]:
    """An installed, guarded sandbox portal that the live app reaches in-process."""
    import responses

    sandbox, sandbox_portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=sandbox_portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install()
        configure_guard(harness.our_portal())
        update_cpl_settings(harness.our_portal(), {"by_source": {"WEB": "2500"}})
        db.session.commit()
        yield harness


def open_tab(page: Page, live_server: LiveServer, b24: B24, user_id: int, deal_id: int, **extra: str) -> None:
    """Open the deal tab the way Bitrix24 does: a form POST into the frame."""
    fields = {**tab_form(b24, user_id, deal_id), **extra}
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
    )
    url = f"{live_server.url}/b24/placement/deal-tab?DOMAIN={b24.portal.domain}&LANG=ru"
    page.set_content(f'<form id="f" method="post" action="{url}">{inputs}</form>')
    with page.expect_navigation():
        page.evaluate("document.getElementById('f').submit()")


def button(page: Page, name: str):
    return page.get_by_role("button", name=name, exact=True)


def timeline(page: Page):
    return page.locator("#rc-timeline li")


def test_confirm_by_recordings_then_close_as_lost(portal: B24, live_server: LiveServer, page: Page):
    deal_id, _case = case_in_review(portal)
    portal.sandbox.act(portal.portal, MANAGER).make_call(deal_id, duration=61)
    open_tab(page, live_server, portal, QA, deal_id)
    expect(page.locator("h1")).to_have_text("Проверка отказа")
    expect(page.locator("#f-reason")).to_have_text("Дорого")
    expect(page.locator("#f-comment")).to_have_text("Клиент сказал, что дорого")
    expect(page.locator("#f-cpl")).to_contain_text("2")
    expect(page.locator("#f-manager")).to_have_text("Ольга Кузнецова")
    page.locator("#rc-calls button").click()
    expect(page.locator("#rc-calls audio")).to_have_count(1)
    assert page.locator("#rc-calls audio").get_attribute("src").startswith("blob:")
    page.locator('form[data-group="step1"] textarea').fill("Клиент на записи говорит о цене")
    button(page, "Записи подтверждают причину").click()
    expect(page.locator("#f-state")).to_have_text("Отказ подтверждён")
    page.locator('form[data-group="close_lost"] select[name="reason"]').select_option("price")
    button(page, "Закрыть как проигранную").click()
    expect(page.locator("#f-state")).to_have_text("Закрыта как проигранная")
    expect(page.locator("#rc-closed")).to_be_visible()
    expect(page.locator("form.rc-action:visible")).to_have_count(0)
    assert portal.stage(deal_id) == "LOSE"
    assert deal_field(portal, deal_id, "qa_verdict") == "confirmed"


def test_not_confirmed_callback_client_confirms_close_lost(portal: B24, live_server: LiveServer, page: Page):
    deal_id, _case = case_in_review(portal)
    open_tab(page, live_server, portal, QA, deal_id)
    button(page, "Записи не подтверждают").click()
    callback = page.locator('form[data-group="callback"]')
    expect(callback).to_be_visible()
    callback.locator('input[name="at"]').fill(local(minutes=90)[:16])
    callback.locator('select[name="assignee"]').select_option(str(QA2))
    button(page, "Назначить звонок").click()
    expect(page.locator("#f-state")).to_have_text("Назначен звонок клиенту")
    expect(page.locator("#f-next_callback")).to_contain_text("Алексей Волков")
    button(page, "Клиент подтвердил отказ").click()
    expect(page.locator("#f-state")).to_have_text("Отказ подтверждён")
    button(page, "Закрыть как проигранную").click()
    expect(page.locator("#f-state")).to_have_text("Закрыта как проигранная")
    expect(timeline(page)).to_have_count(5)
    assert portal.stage(deal_id) == "LOSE"


def test_client_denies_returns_the_deal_to_another_manager_with_a_fine(
    portal: B24, live_server: LiveServer, page: Page
):
    deal_id, case = case_in_review(portal)
    open_tab(page, live_server, portal, QA, deal_id)
    button(page, "Записей нет").click()
    page.locator('input[name="at"]').fill(local(minutes=30)[:16])
    button(page, "Назначить звонок").click()
    step2 = page.locator('form[data-group="step2"]')
    step2.locator('select[name="stage_id"]').select_option("EXECUTING")
    step2.locator('select[name="manager_id"]').select_option("4")
    step2.locator("textarea").fill("Клиент ждёт предложение")
    button(page, "Клиент не отказывался").click()
    expect(page.locator("#f-state")).to_have_text("Возвращена в продажи")
    deal = portal.sandbox.deal(portal.portal, deal_id)
    assert (deal["STAGE_ID"], str(deal["ASSIGNED_BY_ID"])) == ("EXECUTING", "4")
    db.session.expire_all()
    [fine] = db.session.query(Penalty).filter_by(case_id=case.id).all()
    assert (fine.manager_id, str(fine.amount)) == (str(MANAGER), "2500.00")
    assert any("штраф" in n.message for n in portal.sandbox.notifications(portal.portal, MANAGER))


def test_no_answer_until_unreachable_then_the_head_decides(portal: B24, live_server: LiveServer, page: Page):
    review.update_review_settings(portal.our_portal(), {"callback_attempts": 2})
    db.session.commit()
    deal_id, _case = case_in_review(portal)
    open_tab(page, live_server, portal, QA, deal_id)
    button(page, "Записи не подтверждают").click()
    page.locator('input[name="at"]').fill(local(minutes=30)[:16])
    button(page, "Назначить звонок").click()
    button(page, "Не ответил").click()
    expect(page.locator("#f-next_callback")).to_contain_text("1/2")
    button(page, "Не ответил").click()
    expect(page.locator("#f-state")).to_have_text("Клиент недоступен — решает руководитель")
    expect(page.locator("form.rc-action:visible")).to_have_count(0)
    [notice] = portal.sandbox.notifications(portal.portal, HEAD)
    assert "не ответил" in notice.message
    open_tab(page, live_server, portal, HEAD, deal_id)
    expect(button(page, "Вернуть в продажи другому менеджеру")).to_be_visible()
    button(page, "Предложить снова").click()
    expect(page.locator("#f-state")).to_have_text("Предложено повторно")
    assert the_case(deal_id).state == RefusalCase.WIN_BACK


def test_offer_again_keeps_the_manager(portal: B24, live_server: LiveServer, page: Page):
    deal_id, _case = case_in_review(portal, stage="EXECUTING")
    open_tab(page, live_server, portal, QA, deal_id)
    button(page, "Записи подтверждают причину").click()
    offer = page.locator('form[data-group="offer_again"]')
    expect(offer.locator('select[name="stage_id"]')).to_have_value("EXECUTING")
    offer.locator('select[name="stage_id"]').select_option("PREPARATION")
    button(page, "Предложить снова").click()
    expect(page.locator("#f-state")).to_have_text("Предложено повторно")
    deal = portal.sandbox.deal(portal.portal, deal_id)
    assert (deal["STAGE_ID"], str(deal["ASSIGNED_BY_ID"])) == ("PREPARATION", str(MANAGER))


def test_a_manager_sees_the_tab_read_only_and_his_posts_are_refused(portal: B24, live_server: LiveServer, page: Page):
    deal_id, _case = case_in_review(portal)
    open_tab(page, live_server, portal, MANAGER, deal_id)
    expect(page.locator("#rc-read-only")).to_be_visible()
    expect(page.locator("#f-reason")).to_have_text("Дорого")
    expect(page.locator("form.rc-action:visible")).to_have_count(0)
    statuses = page.evaluate(
        """async () => {
          const config = JSON.parse(document.getElementById("rc-config").textContent);
          const view = await (await fetch(config.caseUrl, {headers: {"X-RC-Token": config.token}})).json();
          const out = [];
          for (const action of ["recordings_confirm", "close_lost", "return_to_sales"]) {
            const r = await fetch(config.actionUrl.replace("ACTION", action), {
              method: "POST",
              headers: {"X-RC-Token": config.token, "Content-Type": "application/json"},
              body: JSON.stringify({version: view.version, expected: view.expected, note: "", params: {}})
            });
            out.push(r.status);
          }
          return out;
        }"""
    )
    assert statuses == [403, 403, 403]
    assert the_case(deal_id).state == RefusalCase.AWAITING_REVIEW
    assert portal.stage(deal_id) == "RC_REFUSAL"


def test_a_forged_frame_post_gets_401(portal: B24, live_server: LiveServer, page: Page):
    deal_id, _case = case_in_review(portal)
    with page.expect_response(re.compile(r".*/b24/placement/deal-tab.*")) as answer:
        open_tab(page, live_server, portal, QA, deal_id, APPLICATION_TOKEN="0" * 32)
    assert answer.value.status == 401
    expect(page.locator("#rc-frame-error")).to_have_text("Не удалось подтвердить, что страницу открыл ваш портал.")


def test_the_qa_queue_shows_overdue_first_and_filters(portal: B24, live_server: LiveServer, page: Page):
    from datetime import timedelta

    from app.core.models import utcnow

    first_deal, first = case_in_review(portal)
    _second_deal, second = case_in_review(portal, manager=3)
    second.review_due_at = utcnow() - timedelta(hours=3)
    db.session.commit()
    fields = {**tab_form(portal, QA, first_deal), "PLACEMENT": "DEFAULT", "PLACEMENT_OPTIONS": ""}
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
    )
    page.set_content(
        f'<form id="f" method="post" action="{live_server.url}/b24/app?DOMAIN={portal.portal.domain}&LANG=ru">'
        f"{inputs}</form>"
    )
    with page.expect_navigation():
        page.evaluate("document.getElementById('f').submit()")
    page.get_by_role("tab", name="Очередь ОКК").click()
    rows = page.locator("#rc-queue tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-case", str(second.id))
    expect(rows.nth(0)).to_have_attribute("data-overdue", "true")
    expect(rows.nth(0).locator(".rc-sla")).to_contain_text("просрочено")
    expect(rows.nth(1).locator("a")).to_have_attribute("href", re.compile(rf"/crm/deal/details/{first_deal}/$"))
    page.locator('#rc-queue-filters select[name="manager"]').select_option(str(MANAGER))
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_have_attribute("data-case", str(first.id))
