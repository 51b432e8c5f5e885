"""README "Try it", walked in a real Chromium against the real demo (`python -m app.local` with SANDBOX_ENABLED:
gunicorn, the RQ worker, the sandbox portal over TLS, its events, the proxied kanban and its BX24 library), with
the browser only: the guard sends a deal back, with a reason it lands in «Условный отказ»; QA opens the deal from
her review task on the app's tab and runs the two-step review with its callback; the client denies, the deal goes
back to sales under another manager with a fine, and a robot of the app runs on it; the head of sales sees the
fine in the reports; a new web lead in the exchange pipeline is taken from the exchange, one in the duty pipeline
goes to the manager on duty. Screenshots of every step go to test-artifacts/demo/."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import FrameLocator, Page, expect

from tests.test_local_stack import ROOT, _free_port, _read_until, _wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ARTIFACTS = ROOT / "test-artifacts" / "demo"
WAIT = 60_000  # the real worker and event delivery between a click and its effect
OLGA, DMITRY, NATALYA, TATYANA = "2", "3", "7", "9"


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`make run` as a newcomer runs it: the whole stack, until «Demo ready»."""
    instance = tmp_path_factory.mktemp("demo")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "PUBLIC_URL"}}
    env.update(INSTANCE_PATH=str(instance), PORT=str(port), SANDBOX_ENABLED="1")
    stack = subprocess.Popen([sys.executable, "-m", "app.local"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _read_until(stack, "Demo ready"), 180, "the demo to be installed")
        yield f"http://127.0.0.1:{port}"
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(timeout=60)


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(Path(ARTIFACTS / f"{name}.png")))


def act_as(page: Page, user: str) -> None:
    page.locator("#sb-user").select_option(user)
    expect(page.locator("#sb-user")).to_have_value(user)


def card(page: Page, deal_id: str, stage: str | None = None):
    column = f'.sb-column[data-stage="{stage}"] ' if stage else ""
    return page.locator(f'{column}.sb-card[data-deal-id="{deal_id}"]')


def review_tab(page: Page) -> FrameLocator:
    return page.frame_locator("#sb-editor iframe")


def action(frame: FrameLocator, name: str):
    return frame.locator(f'button[data-action="{name}"]')


def test_the_readme_story_with_the_browser_only(demo_url: str, page: Page):
    page.set_viewport_size({"width": 1500, "height": 950})
    page.goto(f"{demo_url}/sandbox?user={OLGA}&pipeline=0")
    expect(page.locator("#sb-status")).to_have_attribute("data-installed", "yes", timeout=WAIT)
    deal = page.locator('.sb-column[data-stage="PREPARATION"] .sb-card, .sb-column[data-stage="NEW"] .sb-card')
    olga_deal = deal.filter(has_text="Ольга Кузнецова").first
    deal_id = olga_deal.get_attribute("data-deal-id") or ""
    title = olga_deal.locator(".sb-title").inner_text()
    start_stage = olga_deal.get_attribute("data-stage")
    shot(page, "01-kanban")

    # 1. The guard: closing as lost without a reason snaps back with a notice.
    olga_deal.locator(".sb-move").select_option("LOSE")
    expect(card(page, deal_id, start_stage)).to_be_visible(timeout=WAIT)
    expect(page.locator("#sb-notices .sb-notice").first).to_contain_text("нельзя закрыть", timeout=WAIT)
    shot(page, "02-guard-notice")

    # 2. With a reason and a comment it lands in «Условный отказ».
    card(page, deal_id).locator(".sb-open").click()
    editor = page.locator("#sb-editor")
    editor.get_by_label("Причина отказа").select_option(label="Дорого")
    editor.get_by_label("Комментарий к отказу").fill("Клиент говорит, что у конкурента дешевле")
    editor.get_by_role("button", name="Сохранить").click()
    expect(page.locator("#sb-editor-result")).to_have_text("Сохранено.")
    editor.get_by_role("button", name="Закрыть").click()
    card(page, deal_id).locator(".sb-move").select_option("LOSE")
    expect(card(page, deal_id, "RC_REFUSAL")).to_be_visible(timeout=WAIT)

    # 3. QA: her new review task opens the deal on the app's tab; step 1, the callback, step 2.
    act_as(page, NATALYA)
    task = page.locator(f'#sb-tasks .sb-task:has-text("{title}")').first
    expect(task).to_be_visible(timeout=WAIT)
    shot(page, "03-qa-task")
    task.get_by_role("button", name="Открыть").click()
    tab = review_tab(page)
    expect(tab.locator("body")).to_have_attribute("data-bx24", "ready", timeout=WAIT)
    expect(action(tab, "recordings_not_confirmed")).to_be_visible(timeout=WAIT)
    shot(page, "04-review-step1")
    callback_at = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT11:00")
    action(tab, "recordings_not_confirmed").click()
    expect(tab.locator("#rc-action-result")).to_have_attribute("data-outcome", "done", timeout=WAIT)
    expect(action(tab, "schedule_callback")).to_be_visible(timeout=WAIT)
    tab.locator('input[name="at"]').fill(callback_at)
    action(tab, "schedule_callback").click()
    expect(tab.locator("#rc-action-result")).to_have_attribute("data-outcome", "done", timeout=WAIT)
    expect(action(tab, "client_denies")).to_be_visible(timeout=WAIT)
    shot(page, "05-review-callback")
    tab.locator('form[data-group="step2"] select[name="manager_id"]').select_option(DMITRY)
    action(tab, "client_denies").click()
    expect(tab.locator("#rc-closed")).to_be_visible(timeout=WAIT)
    shot(page, "06-review-done")
    editor.get_by_role("button", name="Закрыть").click()

    # 4. Back in sales under another manager; a robot of the app checks the deal's tasks.
    act_as(page, DMITRY)
    expect(card(page, deal_id)).to_contain_text("Дмитрий Попов", timeout=WAIT)
    card(page, deal_id).locator(".sb-open").click()
    editor.locator("#sb-robot").select_option(label="Проверить задачи")
    editor.locator("#sb-robot-form").get_by_role("button", name="Запустить робота").click()
    expect(page.locator("#sb-robot-result")).to_contain_text("Робот ответил:", timeout=WAIT)
    expect(page.locator("#sb-robot-result")).to_contain_text("Есть открытая задача")
    shot(page, "06b-robot")
    editor.get_by_role("button", name="Закрыть").click()

    # 5. The head of sales: the fine in the reports.
    act_as(page, TATYANA)
    page.get_by_role("button", name="Контроль отказов").click()
    app_frame = page.frame_locator("#sb-app iframe")
    expect(app_frame.locator("body")).to_have_attribute("data-bx24", "ready", timeout=WAIT)
    app_frame.get_by_role("tab", name="Отчёты").click()
    expect(app_frame.locator("#tab-reports")).to_contain_text("Ольга Кузнецова", timeout=WAIT)
    expect(page.locator("#sb-app iframe")).to_have_attribute("data-height", re.compile(r"^\d+$"))
    shot(page, "07-reports")
    page.locator("#sb-app-close").click()

    # 6. The exchange: a web lead in «Повторные продажи» goes to the pool; a manager takes it.
    act_as(page, DMITRY)
    page.locator("#sb-pipeline").select_option("1")
    expect(page.locator('.sb-column[data-stage^="C1:"]').first).to_be_visible(timeout=WAIT)
    with page.expect_response("**/sandbox/api/new-deal") as created:
        page.get_by_role("button", name="Новая входящая сделка").click()
    lead_id = created.value.json()["deal_id"]
    expect(card(page, lead_id)).to_contain_text("Биржа лидов", timeout=WAIT)
    page.get_by_role("button", name="Контроль отказов").click()
    expect(app_frame.locator("body")).to_have_attribute("data-bx24", "ready", timeout=WAIT)
    app_frame.get_by_role("tab", name="Биржа лидов").click()
    take = app_frame.locator(f'tr:has(a[href*="/crm/deal/details/{lead_id}/"]) button[data-take]')
    expect(take).to_be_visible(timeout=WAIT)
    shot(page, "08-exchange")
    take.click()
    page.locator("#sb-app-close").click()
    expect(card(page, lead_id)).to_contain_text("Дмитрий Попов", timeout=WAIT)
    shot(page, "09-taken")

    # 7. The duty rota: a new lead in «Тендеры» goes to today's manager on duty (the demo's rota starts with Ольга).
    page.locator("#sb-pipeline").select_option("2")
    expect(page.locator('.sb-column[data-stage^="C2:"]').first).to_be_visible(timeout=WAIT)
    with page.expect_response("**/sandbox/api/new-deal") as created:
        page.get_by_role("button", name="Новая входящая сделка").click()
    tender_id = created.value.json()["deal_id"]
    expect(card(page, tender_id)).to_contain_text("Ольга Кузнецова", timeout=WAIT)
    shot(page, "10-duty")
