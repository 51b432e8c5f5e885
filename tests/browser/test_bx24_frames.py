"""The app's pages inside the sandbox portal, as Bitrix24 shows them, in a real Chromium: the kanban opens the
app's main page and the deal card's tab as the chosen person (a signed frame POST), the pages load the BX24
library the sandbox serves (B24_JS_URL), fit their frame to the content through the frame protocol, and a deal
link opens the deal card's slider (BX24.openPath) instead of leaving the frame. Screenshots of each page, in
Russian and English, go to test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import responses
from flask import Flask
from playwright.sync_api import FrameLocator, Page, expect

from app.core.db import db
from app.web import sandbox_proxy
from sandbox import create_sandbox_app
from sandbox.mount import mount_responses
from tests.browser.conftest import LiveServer
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24
from tests.integration.review_helpers import QA, case_in_review

pytestmark = pytest.mark.browser
ADMIN, HEAD = 1, 9
DIGITS = re.compile(r"^\d+$")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


@pytest.fixture
def demo(app: Flask) -> Iterator[tuple[B24, str]]:
    """The demo's shape: the app on a live address that also serves the sandbox kanban (/sandbox, proxied),
    the sandbox's BX24 library as B24_JS_URL, and the app installed in the sandbox portal."""
    sandbox, portal = make_b24(app)
    kanban = LiveServer(create_sandbox_app(sandbox))
    server = LiveServer(app)
    app.config.update(
        SANDBOX_ENABLED=True,
        SANDBOX_URL=kanban.url,
        PUBLIC_URL=server.url,
        B24_JS_URL=f"{server.url}/sandbox/api/v1/",
    )
    app.register_blueprint(sandbox_proxy.bp)
    portal.app_url = server.url
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with kanban, server, responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(server.url, kanban.url))
        harness.install()
        configure_guard(harness.our_portal())
        yield harness, server.url


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def frame_shot(page: Page, selector: str, path: Path) -> None:
    """The whole fitted frame: the window is made tall enough to show it all (Chromium paints no frame content
    outside the window)."""
    frame = page.locator(selector)
    height = int(frame.get_attribute("data-height") or 0)
    page.set_viewport_size({"width": 1400, "height": max(900, height + 200)})
    frame.screenshot(path=str(path))
    page.set_viewport_size({"width": 1400, "height": 900})


def frame_of(page: Page, slider: str) -> FrameLocator:
    return page.frame_locator(f"#{slider} iframe")


def fitted_height(page: Page, app_frame: FrameLocator) -> int:
    """The frame's height once it has settled on its content's (the page fills in after its data arrives)."""
    iframe = page.locator("#sb-app iframe")
    for _ in range(50):
        height = int(iframe.get_attribute("data-height") or 0)
        content = app_frame.locator("html").evaluate("node => node.scrollHeight")
        if height == content:
            return height
        page.wait_for_timeout(100)
    raise AssertionError(f"the frame stayed {height}px high for {content}px of content")


def open_kanban(page: Page, url: str, user: int, lang: str = "ru") -> None:
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{url}/sandbox?user={user}&pipeline=0&lang={lang}")
    expect(page.locator("#sb-status")).to_have_attribute("data-installed", "yes")


def test_the_app_page_opens_from_the_kanban_loads_bx24_and_fits_its_frame(demo, page: Page):
    _b24, url = demo
    open_kanban(page, url, ADMIN)
    page.get_by_role("button", name="Контроль отказов").click()
    app_frame = frame_of(page, "sb-app")
    expect(app_frame.locator("h1")).to_have_text("Контроль отказов")
    expect(app_frame.locator("body")).to_have_attribute("data-bx24", "ready")
    expect(app_frame.locator("body")).to_have_class("rc-crm-bitrix24")
    iframe = page.locator("#sb-app iframe")
    expect(iframe).to_have_attribute("data-height", DIGITS)
    app_frame.get_by_role("tab", name="Состояние").click()  # an admin starts on settings; the status tab is short
    expect(app_frame.locator("#rc-health")).not_to_be_empty()
    first = fitted_height(page, app_frame)
    shot(page, "app-main-ru")

    app_frame.get_by_role("tab", name="Настройки").click()  # the admin's long settings form
    expect(iframe).not_to_have_attribute("data-height", str(first))  # the frame follows the content ...
    assert int(iframe.get_attribute("data-height") or 0) > first
    app_frame.get_by_role("tab", name="Состояние").click()
    expect(iframe).to_have_attribute("data-height", str(first))  # ... both ways


def test_a_deal_link_in_the_queue_opens_the_deal_slider_with_the_review_tab(demo, page: Page):
    b24, url = demo
    deal_id, _case = case_in_review(b24)
    title = b24.sandbox.deal(b24.portal, deal_id)["TITLE"]
    open_kanban(page, url, QA)
    page.get_by_role("button", name="Контроль отказов").click()
    app_frame = frame_of(page, "sb-app")
    app_frame.get_by_role("tab", name="Очередь ОКК").click()
    link = app_frame.get_by_role("link", name=title)
    expect(link).to_be_visible()
    assert link.get_attribute("target") is None  # the slider, not a new window or the whole page
    shot(page, "app-queue-ru")

    link.click()
    card = page.locator("#sb-editor")
    expect(card).to_be_visible()
    expect(page.locator("#sb-editor-title")).to_contain_text(f"#{deal_id}: {title}")
    card.get_by_role("tab", name="Проверка отказа").click()
    tab = frame_of(page, "sb-editor")
    expect(tab.locator("h1")).to_have_text("Проверка отказа")
    expect(tab.locator("body")).to_have_attribute("data-bx24", "ready")
    expect(page.locator("#sb-editor iframe")).to_have_attribute("data-height", DIGITS)
    shot(page, "deal-review-tab-ru")

    # The app's own page from the deal's tab: BX24.openApplication opens it over the card.
    tab.get_by_role("button", name="Открыть приложение: очередь ОКК, биржа, отчёты, настройки").click()
    expect(page.locator("#sb-app")).to_be_visible()
    expect(frame_of(page, "sb-app").locator("h1")).to_have_text("Контроль отказов")


def test_the_pages_in_english(demo, page: Page):
    b24, url = demo
    deal_id, _case = case_in_review(b24)
    portal = b24.our_portal()
    portal.language = "en"
    db.session.commit()
    open_kanban(page, url, QA, lang="en")
    page.get_by_role("button", name="Refusal Control").click()
    app_frame = frame_of(page, "sb-app")
    expect(app_frame.locator("h1")).to_have_text("Refusal Control")
    expect(page.locator("#sb-app iframe")).to_have_attribute("data-height", DIGITS)
    shot(page, "app-main-en")
    page.get_by_role("button", name="Close").first.click()
    page.locator(f'.sb-card[data-deal-id="{deal_id}"] .sb-open').click()
    page.locator("#sb-editor").get_by_role("tab", name="Refusal review").click()
    expect(frame_of(page, "sb-editor").locator("body")).to_have_attribute("data-bx24", "ready")
    shot(page, "deal-review-tab-en")


@pytest.mark.parametrize("lang", ["ru", "en"])
def test_every_page_in_its_frame_for_the_screenshots(demo, page: Page, lang: str):
    """Each tab of the app's page (the admin's, and the head of sales' reports) and the review tab, fitted to
    their frames, saved to test-artifacts/browser/pages-<lang>/ to be looked at."""
    b24, url = demo
    deal_id, _case = case_in_review(b24)
    portal = b24.our_portal()
    portal.language = lang
    db.session.commit()
    folder = ARTIFACTS / f"pages-{lang}"
    folder.mkdir(parents=True, exist_ok=True)
    for user in (ADMIN, HEAD):
        open_kanban(page, url, user, lang)
        page.locator("#sb-open-app").click()
        app_frame = frame_of(page, "sb-app")
        expect(app_frame.locator("body")).to_have_attribute("data-bx24", "ready")
        tabs = app_frame.locator('[role="tab"]')
        for index in range(tabs.count()):
            tab = tabs.nth(index)
            name = tab.get_attribute("data-tab")
            tab.click()
            expect(tab).to_have_attribute("aria-selected", "true")
            page.wait_for_timeout(1_000)  # the tab's data, then the frame's fit
            expect(page.locator("#sb-app iframe")).to_have_attribute("data-height", DIGITS)
            frame_shot(page, "#sb-app iframe", folder / f"app-{user}-{name}.png")
        page.locator("#sb-app-close").click()
    open_kanban(page, url, QA, lang)
    page.locator(f'.sb-card[data-deal-id="{deal_id}"] .sb-open').click()
    page.locator('#sb-deal-tabs [data-tab="app"]').click()
    expect(frame_of(page, "sb-editor").locator("body")).to_have_attribute("data-bx24", "ready")
    page.wait_for_timeout(1_000)
    frame_shot(page, "#sb-editor iframe", folder / "deal-tab-qa.png")


def test_open_application_opens_the_tab_it_asks_for(demo, page: Page):
    """BX24.openApplication({tab}) reaches the app frame as PLACEMENT_OPTIONS: the portal admin's «Открыть в
    отчётах» on the deal's tab opens the main page on the reports (he would start on the settings); a tab the user
    does not have is ignored."""
    b24, url = demo
    deal_id, _case = case_in_review(b24)
    open_kanban(page, url, ADMIN)
    page.locator(f'.sb-card[data-deal-id="{deal_id}"] .sb-open').click()
    page.locator('#sb-deal-tabs [data-tab="app"]').click()
    tab = frame_of(page, "sb-editor")
    expect(tab.locator("body")).to_have_attribute("data-bx24", "ready")
    tab.get_by_role("button", name="Открыть в отчётах").click()
    app_frame = frame_of(page, "sb-app")
    expect(app_frame.get_by_role("tab", name="Отчёты")).to_have_attribute("aria-selected", "true")
    expect(app_frame.locator("#tab-reports")).to_be_visible()
    expect(app_frame.locator("#rc-table-managers, [data-empty='managers']").first).to_be_visible(timeout=10_000)
    expect(app_frame.locator("#tab-settings")).to_be_hidden()
    page.locator("#sb-app-close").click()
    page.locator("#sb-editor-close").click()

    # QA has no reports tab: the button is not offered, and a request for a tab he lacks opens his own first tab.
    open_kanban(page, url, QA)
    page.locator(f'.sb-card[data-deal-id="{deal_id}"] .sb-open').click()
    page.locator('#sb-deal-tabs [data-tab="app"]').click()
    tab = frame_of(page, "sb-editor")
    expect(tab.locator("body")).to_have_attribute("data-bx24", "ready")
    expect(tab.get_by_role("button", name="Открыть приложение: очередь ОКК, биржа, отчёты, настройки")).to_be_visible()
    expect(tab.get_by_role("button", name="Открыть в отчётах")).to_have_count(0)
    tab.locator("body").evaluate("() => window.BX24.openApplication({tab: 'settings'})")
    app_frame = frame_of(page, "sb-app")
    expect(app_frame.get_by_role("tab", name="Очередь ОКК")).to_have_attribute("aria-selected", "true")
    expect(app_frame.locator("#tab-queue")).to_be_visible()
    expect(app_frame.locator("#tab-settings")).to_have_count(0)
