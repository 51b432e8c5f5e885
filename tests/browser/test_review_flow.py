"""The review tab as QA staff walk it, in Russian and English: the recordings come before the verdict, the
status, the next step and the buttons always agree, each action says what it did, names stand where ids were
(timeline, source, CPL rule), and the finished review sums up the outcome, the new manager and the fine."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from app.core.db import db
from app.domain.penalties import update_cpl_settings
from sandbox.mount import mount_responses
from tests.browser.conftest import LiveServer
from tests.browser.test_page_walk import assert_label_above_box
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24
from tests.integration.review_helpers import QA, QA2, case_in_review, tab_form
from tests.scenarios.steps import local

pytestmark = pytest.mark.browser

WHEN = re.compile(r"\d\d\.\d\d\.\d{4} \d\d:\d\d")


@pytest.fixture
def portal(app: Flask, live_server: LiveServer) -> Iterator[B24]:
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


def open_tab(page: Page, live_server: LiveServer, b24: B24, user_id: int, deal_id: int, language: str) -> None:
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in tab_form(b24, user_id, deal_id).items()
    )
    url = f"{live_server.url}/b24/placement/deal-tab?DOMAIN={b24.portal.domain}&LANG={language}"
    page.set_content(f'<form id="f" method="post" action="{url}">{inputs}</form>')
    with page.expect_navigation():
        page.evaluate("document.getElementById('f').submit()")


def button(page: Page, name: str):
    return page.get_by_role("button", name=name, exact=True)


def test_the_whole_review_in_russian(portal: B24, live_server: LiveServer, page: Page):
    deal_id, _case = case_in_review(portal)
    open_tab(page, live_server, portal, QA, deal_id, "ru")
    expect(page.locator("#f-state")).to_have_text("Ожидает проверки")
    expect(page.locator("#rc-next-step")).to_contain_text("Шаг 1 из 2: прослушайте записи звонков")
    recordings_first = page.evaluate(
        """() => Boolean(document.getElementById("rc-calls").compareDocumentPosition(
             document.querySelector('form[data-group="step1"]')) & Node.DOCUMENT_POSITION_FOLLOWING)"""
    )
    assert recordings_first, "the recordings come before the verdict they are judged by"
    expect(page.locator("#f-source")).to_have_text("Веб-сайт")
    expect(page.locator("#f-cpl")).to_have_text("2\u00a0500\u00a0₽ (CPL источника «Веб-сайт»)")
    expect(page.locator("#rc-timeline li").first).to_contain_text("Открыта проверка — Сотрудник ОКК: Наталья Морозова")

    button(page, "Записи не подтверждают").click()
    expect(page.locator("#rc-action-result")).to_have_text(
        "Отмечено: записи не подтверждают причину. Назначьте звонок клиенту."
    )
    expect(page.locator("#f-state")).to_have_text("Записи не подтвердили причину — нужен звонок клиенту")
    expect(page.locator("#rc-next-step")).to_contain_text("Шаг 2 из 2: назначьте звонок клиенту")
    expect(page.locator('form[data-group="step1"]')).to_be_hidden()

    callback = page.locator('form[data-group="callback"]')
    # The date's box under its label, like «Кто звонит» under its own (not beside it).
    for name in ("at", "assignee"):
        box = callback.locator(f'[name="{name}"]')
        assert_label_above_box(callback.locator("label", has=page.locator(f'[name="{name}"]')), box)
    callback.locator('input[name="at"]').fill(local(minutes=100 * 24 * 60)[:16])
    button(page, "Назначить звонок").click()
    expect(page.locator("#rc-action-result")).to_have_text(
        "Не выполнено: Звонок можно назначить не дальше чем через 90 дней."
    )
    callback.locator('input[name="at"]').fill(local(minutes=90)[:16])
    callback.locator('select[name="assignee"]').select_option(str(QA2))
    button(page, "Назначить звонок").click()
    result = page.locator("#rc-action-result")
    expect(result).to_have_text(re.compile(r"^Перезвон назначен на \d\d\.\d\d\.\d{4} \d\d:\d\d, Алексей Волков\.$"))
    expect(page.locator("#f-state")).to_have_text("Назначен звонок клиенту")
    expect(page.locator("#rc-next-step")).to_contain_text("Алексей Волков звонит клиенту")
    expect(page.locator("#rc-timeline li").last).to_contain_text(", Алексей Волков")

    step2 = page.locator('form[data-group="step2"]')
    step2.locator('select[name="stage_id"]').select_option("EXECUTING")
    step2.locator('select[name="manager_id"]').select_option("4")
    button(page, "Клиент не отказывался").click()
    outcome = (
        "Итог: клиент не отказывался — сделка возвращена в продажи на стадию «В работе», новый менеджер — "
        "Елена Васильева. Штраф менеджеру Ольга Кузнецова: 2\u00a0500\u00a0₽."
    )
    expect(page.locator("#rc-action-result")).to_have_text(outcome)
    expect(page.locator("#rc-summary")).to_have_text(outcome)
    expect(page.locator("#rc-closed")).to_have_class("rc-summary")
    expect(page.locator("#rc-next-step")).to_be_hidden()
    expect(page.locator("#rc-timeline li").last).to_contain_text("В работе, Елена Васильева")
    # The stage section under the review follows the deal back to sales (it said «на проверке ОКК» before).
    expect(page.locator("#rc-pb-stage")).to_have_text("В работе", timeout=10_000)
    expect(page.locator("#rc-pb-waiting")).to_be_hidden()
    assert not re.search(r"(?<![\d.:])\b\d{1,2}\b(?![\d.:])", page.locator("#rc-timeline").inner_text())


def test_the_review_in_english(portal: B24, live_server: LiveServer, page: Page):
    deal_id, _case = case_in_review(portal)
    open_tab(page, live_server, portal, QA, deal_id, "en")
    expect(page.locator("h1")).to_have_text("Refusal review")
    expect(page.locator("#rc-next-step")).to_contain_text("Step 1 of 2: listen to the call recordings")
    expect(page.locator("#f-cpl")).to_contain_text("CPL of the source")
    button(page, "No recordings").click()
    expect(page.locator("#rc-action-result")).to_have_text(
        "Recorded: there are no recordings. Schedule a call to the client."
    )
    expect(page.locator("#f-state")).to_have_text("Recordings did not confirm the reason — call the client")
    callback = page.locator('form[data-group="callback"]')
    # The date's box under its label, like «Кто звонит» under its own (not beside it).
    for name in ("at", "assignee"):
        box = callback.locator(f'[name="{name}"]')
        assert_label_above_box(callback.locator("label", has=page.locator(f'[name="{name}"]')), box)
    callback.locator('input[name="at"]').fill(local(minutes=100 * 24 * 60)[:16])
    button(page, "Schedule the callback").click()
    expect(page.locator("#rc-action-result")).to_have_text("Not done: A callback can be at most 90 days ahead.")
    callback.locator('input[name="at"]').fill(local(minutes=90)[:16])
    button(page, "Schedule the callback").click()
    expect(page.locator("#rc-action-result")).to_have_text(
        re.compile(r"^Callback scheduled for .+, Наталья Морозова\.$")
    )
    button(page, "Client confirms").click()
    expect(page.locator("#f-state")).to_have_text("Refusal confirmed")
    expect(page.locator("#rc-next-step")).to_contain_text("close the deal as lost or offer again")
    button(page, "Close as lost").click()
    expect(page.locator("#rc-summary")).to_have_text("Outcome: the deal is closed as lost, reason: Price too high.")
    expect(page.locator("#rc-timeline")).not_to_contain_text("QA: 7")
