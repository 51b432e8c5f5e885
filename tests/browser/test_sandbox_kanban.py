"""The demo's sandbox kanban in a real Chromium: a manager's forbidden move snaps back with a notice; with a
reason and a comment the deal lands in Conditional refusal. The app runs in-process against the sandbox;
`settle()` plays Bitrix24's event delivery and our worker between the clicks."""

from collections.abc import Iterator

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from sandbox import create_sandbox_app
from sandbox.mount import responses_sandbox
from tests.browser.conftest import LiveServer
from tests.integration.b24 import B24, configure_guard, new_deal
from tests.integration.conftest import make_b24

pytestmark = pytest.mark.browser
MANAGER, QA = 2, 7


@pytest.fixture
def demo(app: Flask) -> Iterator[tuple[B24, str]]:
    """The app installed in a sandbox portal whose kanban is served on a local port."""
    sandbox, portal = make_b24(app)
    with responses_sandbox(sandbox), LiveServer(create_sandbox_app(sandbox)) as kanban:
        harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
        harness.install()
        configure_guard(harness.our_portal())
        yield harness, kanban.url


def card(page: Page, deal_id: int, stage: str | None = None):
    column = f'.sb-column[data-stage="{stage}"] ' if stage else ""
    return page.locator(f'{column}.sb-card[data-deal-id="{deal_id}"]')


def test_a_manager_closing_as_lost_sees_the_deal_come_back_and_a_notice(demo, page: Page):
    b24, url = demo
    deal_id = new_deal(b24, manager=MANAGER, stage="EXECUTING", title="Поставка станков")
    page.goto(f"{url}/sandbox?user={MANAGER}&pipeline=0")
    expect(page.locator("h1")).to_have_text("Песочница Bitrix24: канбан сделок")
    expect(page.locator(".sb-explainer p[lang=en]")).to_contain_text("Conditional refusal")
    expect(page.locator("#sb-status")).to_contain_text("Приложение установлено")
    expect(card(page, deal_id, "EXECUTING")).to_be_visible()
    expect(page.locator("#sb-notices")).to_contain_text("Уведомлений нет")

    with page.expect_response("**/sandbox/api/move") as moved:
        card(page, deal_id).get_by_label("Переместить в… Поставка станков").select_option("LOSE")
    assert moved.value.ok
    assert b24.stage(deal_id) == "LOSE"
    expect(card(page, deal_id, "LOSE")).to_be_visible()

    b24.settle()
    expect(card(page, deal_id, "EXECUTING")).to_be_visible(timeout=5_000)
    expect(card(page, deal_id, "EXECUTING")).to_have_class("sb-card sb-moved")
    notice = page.locator("#sb-notices .sb-notice").first
    expect(notice).to_contain_text("нельзя закрыть как проигранную", timeout=5_000)
    expect(notice).to_contain_text("Ольга Кузнецова")


def test_with_a_reason_and_comment_a_dragged_deal_lands_in_conditional_refusal(demo, page: Page):
    b24, url = demo
    deal_id = new_deal(b24, manager=MANAGER, stage="PREPARATION", title="Монтаж линии")
    page.set_viewport_size({"width": 1920, "height": 1080})  # every column on screen: a drag never scrolls
    page.goto(f"{url}/sandbox?user={MANAGER}")
    expect(card(page, deal_id, "PREPARATION")).to_be_visible()

    card(page, deal_id).get_by_role("button", name="Открыть Монтаж линии").click()
    dialog = page.locator("#sb-editor")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Причина отказа").select_option(label="Дорого")
    dialog.get_by_label("Комментарий к отказу").fill("Клиент нашёл дешевле у конкурента")
    dialog.get_by_role("button", name="Сохранить").click()
    expect(page.locator("#sb-editor-result")).to_have_text("Сохранено.")
    dialog.get_by_role("button", name="Закрыть").click()
    b24.settle()

    with page.expect_response("**/sandbox/api/move") as moved:
        card(page, deal_id).locator(".sb-title").drag_to(page.locator('.sb-column[data-stage="LOSE"] ul'))
    assert moved.value.ok, moved.value.text()
    assert b24.stage(deal_id) == "LOSE", (moved.value.request.post_data, moved.value.text())
    b24.settle()
    assert b24.stage(deal_id) == "RC_REFUSAL"
    expect(card(page, deal_id, "RC_REFUSAL")).to_be_visible(timeout=5_000)
    expect(page.locator("#sb-notices .sb-notice").first).to_contain_text("Условный отказ", timeout=5_000)
    expect(page.locator("#sb-notices .sb-notice").first).to_contain_text("Дорого")


def test_qa_may_close_as_lost_and_the_panel_follows_the_acting_user(demo, page: Page):
    b24, url = demo
    deal_id = new_deal(b24, manager=MANAGER, stage="PREPARATION", title="Аренда техники")
    page.goto(f"{url}/sandbox?user={MANAGER}")
    expect(card(page, deal_id, "PREPARATION")).to_be_visible()
    page.get_by_label("Вы:").select_option(str(QA))
    with page.expect_response("**/sandbox/api/move"):
        card(page, deal_id).get_by_label("Переместить в… Аренда техники").select_option("LOSE")
    b24.settle()
    assert b24.stage(deal_id) == "LOSE"
    page.wait_for_timeout(1_500)
    expect(card(page, deal_id, "LOSE")).to_be_visible()
    expect(page.locator("#sb-notices")).to_contain_text("Уведомлений нет")
