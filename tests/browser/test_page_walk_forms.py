"""The second walk through the pages (issue #20), in a real Chromium, in Russian and English: the duty rota shows
with the exchange and the queue, not under the settings or the reports; a stage's required fields are a compact
picker with a filter, usable from the keyboard; the schedule, postpone and new-reason fields sit under their labels
in groups; the time zone is chosen from a list; the reports' notes sit in their cards; no page asks for a resource
that is not there; the sandbox kanban shows every column beside its notifications panel."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from app.core.db import db
from app.core.i18n import translate
from app.domain import exchange
from sandbox import create_sandbox_app
from sandbox.mount import responses_sandbox
from tests.browser.conftest import LiveServer
from tests.browser.test_page_walk import assert_label_above_box, installed, open_app  # noqa: F401
from tests.browser.test_reports_page import seed_cases
from tests.integration.b24 import B24, configure_guard, new_deal
from tests.integration.conftest import make_b24

pytestmark = pytest.mark.browser
ADMIN, MANAGER, QA, HEAD = 1, 2, 7, 9
SALES = "2"  # «Отдел продаж»
TABS = {
    "ru": {"settings": "Настройки", "reports": "Отчёты", "exchange": "Биржа лидов", "status": "Состояние"},
    "en": {"settings": "Settings", "reports": "Reports", "exchange": "Lead exchange", "status": "Status"},
}


def plan_duty(harness: B24) -> None:
    ours = harness.our_portal()
    exchange.update_exchange_settings(
        ours, {"pipelines": {"0": {"mode": "duty", "pool_user": "12", "duty_department": SALES}}}
    )
    exchange.set_rota(ours.id, SALES, {exchange.portal_day(ours, datetime.now(UTC)): str(MANAGER)})
    db.session.commit()


@pytest.mark.parametrize("language", ["ru", "en"])
def test_the_duty_rota_shows_with_the_exchange_and_the_queue_not_under_every_tab(
    installed: B24,  # noqa: F811
    live_server,
    page: Page,
    language: str,
):
    plan_duty(installed)
    duty = page.locator("#rc-duty")
    open_app(page, live_server.url, installed, ADMIN, language)
    expect(page.locator("#tab-settings")).to_be_visible()
    expect(duty).to_be_hidden()
    for tab in ("reports", "status"):
        page.get_by_role("tab", name=TABS[language][tab]).click()
        expect(duty).to_be_hidden()
    page.get_by_role("tab", name=TABS[language]["exchange"]).click()
    expect(duty).to_be_visible()
    expect(duty.locator(".rc-duty-today strong")).to_have_text("Ольга Кузнецова")
    page.get_by_role("tab", name=TABS[language]["settings"]).click()
    expect(duty).to_be_hidden()

    # A head of sales starts on the reports: no rota there; QA staff and managers see it on their queue.
    open_app(page, live_server.url, installed, HEAD, language)
    expect(page.locator("#tab-reports")).to_be_visible()
    expect(duty).to_be_hidden()
    for user in (QA, MANAGER):
        open_app(page, live_server.url, installed, user, language)
        expect(page.locator("#tab-queue")).to_be_visible()
        expect(duty).to_be_visible()


@pytest.mark.parametrize("language", ["ru", "en"])
def test_a_stages_required_fields_are_a_compact_picker_with_a_filter_used_from_the_keyboard(
    installed: B24,  # noqa: F811
    live_server,
    page: Page,
    language: str,
):
    open_app(page, live_server.url, installed, ADMIN, language)
    picker = page.locator('#rc-req-settings .rc-req-picker[data-stage="EXECUTING"]')
    summary = picker.locator("summary")
    expect(summary).to_have_text(translate("req_settings_none", language), timeout=10_000)
    # Closed, a stage takes one line like a select, not a tall list box.
    assert (picker.bounding_box() or {})["height"] < 50
    rows = page.locator("#rc-req-pipelines .rc-req-stage")
    first, second = rows.nth(0).bounding_box(), rows.nth(1).bounding_box()
    assert first and second and second["y"] - first["y"] < 70

    summary.focus()
    page.keyboard.press("Enter")
    search = picker.get_by_placeholder(translate("req_settings_filter", language))
    expect(search).to_be_visible()
    page.keyboard.press("Tab")
    expect(search).to_be_focused()
    page.keyboard.type("сумм")
    visible = picker.locator(".rc-req-options label:visible")
    expect(visible).to_have_count(1)
    expect(visible).to_have_text("Сумма")
    page.keyboard.press("Tab")
    expect(picker.get_by_label("Сумма", exact=True)).to_be_focused()
    page.keyboard.press("Space")
    expect(picker.get_by_label("Сумма", exact=True)).to_be_checked()
    expect(summary).to_have_text("Сумма")
    expect(page.locator('#rc-req-settings [data-count="EXECUTING"]')).to_have_text(
        translate("req_settings_count", language).format(count=1)
    )
    search.fill("нет такого поля")
    expect(picker.get_by_text(translate("req_settings_no_match", language))).to_be_visible()
    # The fields stand in columns when the filter shows them all.
    search.fill("")
    lefts = picker.locator(".rc-req-options label").evaluate_all(
        "nodes => nodes.map((n) => Math.round(n.getBoundingClientRect().left))"
    )
    assert len(set(lefts)) > 1, lefts

    page.locator("#rc-req-settings").get_by_role("button", name=translate("settings_save", language)).click()
    expect(page.locator("#rc-req-result")).to_have_attribute("data-outcome", "saved")
    open_app(page, live_server.url, installed, ADMIN, language)
    expect(page.locator('.rc-req-picker[data-stage="EXECUTING"] summary')).to_have_text("Сумма", timeout=10_000)


def test_the_playbook_presets_long_text_folds_under_its_summary(
    installed: B24,  # noqa: F811
    live_server,
    page: Page,
):
    open_app(page, live_server.url, installed, ADMIN, "ru")
    preset = page.locator("#rc-pb-preset")
    expect(preset.locator("#rc-pb-preset-list li")).to_have_count(9, timeout=10_000)
    expect(preset.locator("#rc-pb-preset-list")).to_be_hidden()
    assert (preset.bounding_box() or {})["height"] < 400, "nine stages of text stand open on the settings page"
    preset.get_by_text("Стадии шаблона, шаги и критерии").click()
    expect(preset.locator('[data-preset="RC_PB_LEAD"]')).to_be_visible()


@pytest.mark.parametrize("language", ["ru", "en"])
def test_schedule_postpone_and_new_reason_fields_sit_under_their_labels_in_groups(
    installed: B24,  # noqa: F811
    live_server,
    page: Page,
    language: str,
):
    open_app(page, live_server.url, installed, ADMIN, language)
    for name in ("weekly_weekday", "weekly_hour", "monthly_day", "monthly_hour"):
        box = page.locator(f'#rc-schedule [name="{name}"]')
        assert_label_above_box(box.locator("xpath=.."), box)
    postpone = page.locator("#rc-postpone-pipelines select").first
    expect(postpone).to_be_visible(timeout=10_000)
    assert_label_above_box(postpone.locator("xpath=.."), postpone)

    # Their long choices («Оставить в «Отложено»», «Как в CRM — МСК (UTC+3)») are not cut off.
    for select in (postpone, page.locator('#rc-tz-settings select[name="time_zone"]')):
        fits = select.evaluate(
            """(node) => { const probe = document.createElement("span"); probe.style.font = getComputedStyle(node).font;
                probe.textContent = node.options[node.selectedIndex].text; document.body.appendChild(probe);
                const wide = probe.getBoundingClientRect().width; probe.remove();
                return node.clientWidth - 32 >= wide; }"""
        )
        assert fits, select.evaluate("(node) => node.options[node.selectedIndex].text")

    add = page.locator("#rc-reasons-add")
    expect(add.locator("fieldset legend")).to_have_text(translate("reasons_new", language))
    for name in ("name_ru", "name_en"):
        box = add.locator(f'input[name="{name}"]')
        assert_label_above_box(box.locator("xpath=.."), box)
    # Both names on one row, the button under them inside the group.
    ru, en = add.locator('input[name="name_ru"]').bounding_box(), add.locator('input[name="name_en"]').bounding_box()
    button = add.get_by_role("button", name=translate("reasons_add", language)).bounding_box()
    group = add.locator("fieldset").bounding_box()
    assert ru and en and button and group
    assert abs(ru["y"] - en["y"]) < 2
    assert button["y"] > ru["y"] + ru["height"] and button["y"] + button["height"] <= group["y"] + group["height"]


@pytest.mark.parametrize("language", ["ru", "en"])
def test_the_reports_notes_sit_inside_their_cards(
    installed: B24,  # noqa: F811
    live_server,
    page: Page,
    language: str,
):
    open_app(page, live_server.url, installed, HEAD, language)
    expect(page.locator("#rc-report-content")).to_be_visible(timeout=10_000)
    for key, table in (("abc_report_definitions", "abc"), ("exchange_stats_definitions", "exchange")):
        note = page.get_by_text(translate(key, language), exact=True)
        expect(note).to_have_count(1)
        card = page.locator(f'.rc-report-block[data-table="{table}"]')
        expect(card.get_by_text(translate(key, language), exact=True)).to_be_visible()
    previous = page.locator('.rc-report-block[data-table="analytics"] .rc-block-note')
    expect(previous).to_contain_text(translate("analytics_previous", language).split("{")[0].strip())


@pytest.mark.parametrize("language", ["ru", "en"])
def test_report_headings_stand_over_their_numbers_and_the_ledger_names_deals_without_ids(
    installed: B24,  # noqa: F811
    live_server,
    page: Page,
    language: str,
):
    seed_cases(installed.our_portal().id)
    open_app(page, live_server.url, installed, HEAD, language)
    table = page.locator("#rc-table-managers")
    expect(table).to_be_visible(timeout=10_000)
    headings = table.locator("thead th")
    cells = table.locator("tbody tr").first.locator("td")
    for index in range(1, headings.count()):  # every column but the manager's name holds numbers
        heading, cell = headings.nth(index).bounding_box(), cells.nth(index).bounding_box()
        assert heading and cell
        assert abs(heading["x"] + heading["width"] - cell["x"] - cell["width"]) < 2, headings.nth(index).inner_text()
        expect(headings.nth(index)).to_have_css("text-align", "right")
    expect(headings.first).to_have_css("text-align", "left")
    # A column with «—» in its first row still stands on the right, its dash under the heading.
    sources = page.locator("#rc-table-sources")
    expect(sources.locator("thead th").last).to_have_css("text-align", "right")
    expect(sources.locator("tbody td").last).to_have_css("text-align", "right")
    ledger = page.locator("#rc-table-ledger tbody tr").first.locator("td").nth(2)
    expect(ledger).to_have_text("Сделка 2")  # the deal by its title, no «#902» after it


def test_no_page_asks_for_a_resource_that_is_not_there(app, live_server, page: Page):
    """Each page asked for /favicon.ico and logged a 404 in the console; the app and the kanban name an icon."""
    sandbox, portal = make_b24(app)
    missing: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "404" in message.text:
            missing.append(f"{message.text} {message.location.get('url')}")

    page.on("console", on_console)
    with responses_sandbox(sandbox, passthru=(live_server.url,)), LiveServer(create_sandbox_app(sandbox)) as kanban:
        harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
        configure_guard(harness.install())
        page.goto(f"{kanban.url}/sandbox?user={ADMIN}&pipeline=0")
        expect(page.locator("#sb-status")).to_contain_text("Приложение установлено")
        page.wait_for_load_state("networkidle")
        for user in (ADMIN, HEAD):
            open_app(page, live_server.url, harness, user, "ru")
            expect(page.locator("h1")).to_have_text("Контроль отказов")
            page.wait_for_load_state("networkidle")
    assert missing == []


def test_every_kanban_column_is_in_sight_beside_the_notifications(app, page: Page):
    """The board is a scroll box no taller than the window (its sideways scrollbar in sight, as in Bitrix24), and
    each column, scrolled to, stands whole to the left of the notifications panel."""
    sandbox, portal = make_b24(app)
    with responses_sandbox(sandbox), LiveServer(create_sandbox_app(sandbox)) as kanban:
        harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
        harness.install()
        for number in range(8):  # a full first column, as in the demo: taller than the window
            new_deal(harness, manager=MANAGER, stage="NEW", title=f"Поставка оборудования № {number + 1}")
        page.set_viewport_size({"width": 1400, "height": 900})
        page.goto(f"{kanban.url}/sandbox?user={ADMIN}&pipeline=0")
        board = page.locator("#sb-board")
        columns = board.locator(".sb-column")
        expect(columns.filter(has=page.locator(".sb-card")).first).to_be_visible()
        assert (board.bounding_box() or {})["height"] <= 900, "the board's scrollbar is below the fold"
        panel = (page.locator(".sb-notices").bounding_box() or {})["x"]
        stages = columns.evaluate_all("nodes => nodes.map((n) => n.dataset.stage)")
        assert len(stages) >= 9 and "RC_POSTPONED" in stages
        for stage in stages:
            column = board.locator(f'.sb-column[data-stage="{stage}"]')
            column.locator("header").scroll_into_view_if_needed()
            box = column.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= panel + 1, f"{stage} is under the panel"
            expect(column.locator("header")).to_be_in_viewport(ratio=1)
