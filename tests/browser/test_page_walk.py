"""What the walk through every page (issue #20) found, in a real Chromium, in Russian and English: the settings'
fields sit under their labels instead of running on in one line («Валюта RUB По умолчанию 3000.00»), CPL amounts
read «3000» not «3000.00», the duty rota opens on the department a pipeline routes to the manager on duty with
months by name, and a report period with nothing to draw says so instead of showing empty axes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from playwright.sync_api import Locator, Page, expect

from app.core.db import db
from app.domain import exchange, reports
from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24
from tests.integration.exchange_helpers import add_people

pytestmark = pytest.mark.browser
ADMIN, HEAD = 1, 9
SALES = "2"  # «Отдел продаж», the second of the sandbox's departments
MONTHS = {
    "ru": "Январь Февраль Март Апрель Май Июнь Июль Август Сентябрь Октябрь Ноябрь Декабрь".split(),
    "en": "January February March April May June July August September October November December".split(),
}


@pytest.fixture
def installed(app, live_server) -> Iterator[B24]:
    """The app installed in a sandbox portal whose REST API the live server reaches."""
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        add_people(harness)
        harness.install()
        configure_guard(harness.our_portal())
        yield harness


def open_app(page: Page, url: str, harness: B24, user: int, language: str) -> None:
    page.set_viewport_size({"width": 1200, "height": 900})
    post_frame(page, f"{url}/b24/app?DOMAIN={harness.portal.domain}&LANG={language}", harness.frame(user))


def assert_label_above_box(label: Locator, box: Locator) -> None:
    """The field's box starts under its label's text, at the same left edge (a labelled field in a grid)."""
    expect(box).to_be_visible()
    outer = label.bounding_box()
    inner = box.bounding_box()
    assert outer and inner
    assert abs(inner["x"] - outer["x"]) < 2, f"{label.inner_text()!r}: the box is beside its label, not under it"
    assert inner["y"] >= outer["y"] + 12, f"{label.inner_text()!r}: the box is not under its label"


@pytest.mark.parametrize("language", ["ru", "en"])
def test_settings_fields_sit_under_their_labels_and_amounts_read_plainly(
    installed: B24, live_server, page: Page, language: str
):
    open_app(page, live_server.url, installed, ADMIN, language)
    cpl = page.locator("#rc-cpl")
    for name in ("currency", "default"):
        box = cpl.locator(f'input[name="{name}"]')
        assert_label_above_box(box.locator("xpath=.."), box)
    source = cpl.locator('[data-amounts="by_source"] input').first
    assert_label_above_box(source.locator("xpath=.."), source)
    cpl.locator('input[name="default"]').fill("3000")
    cpl.locator('[data-amounts="by_source"] input').first.fill("4500.50")
    cpl.get_by_role("button").click()
    expect(page.locator("#rc-cpl-result")).to_have_attribute("data-outcome", "saved")

    open_app(page, live_server.url, installed, ADMIN, language)
    expect(cpl.locator('input[name="default"]')).to_have_value("3000")  # not «3000.00»
    expect(cpl.locator('[data-amounts="by_source"] input').first).to_have_value("4500.50")

    for name in ("callback_interval_minutes", "callback_attempts"):
        box = page.locator(f'#rc-review-settings input[name="{name}"]')
        assert_label_above_box(box.locator("xpath=.."), box)
    steps = page.locator('#rc-pb-pipelines textarea[data-key="steps"]').first
    criteria = page.locator('#rc-pb-pipelines textarea[data-key="criteria"]').first
    assert_label_above_box(steps.locator("xpath=.."), steps)
    assert_label_above_box(criteria.locator("xpath=.."), criteria)
    # Both boxes of a stage start on one line: the labels no longer push them to different heights.
    assert abs((steps.bounding_box() or {})["y"] - (criteria.bounding_box() or {})["y"]) < 2


@pytest.mark.parametrize("language", ["ru", "en"])
def test_the_rota_opens_on_the_duty_department_with_months_by_name(
    installed: B24, live_server, page: Page, language: str
):
    ours = installed.our_portal()
    exchange.update_exchange_settings(
        ours, {"pipelines": {"0": {"mode": "duty", "pool_user": "12", "duty_department": SALES}}}
    )
    today = reports.today(ours)
    exchange.set_rota(ours.id, SALES, {today: "3"})
    db.session.commit()
    open_app(page, live_server.url, installed, ADMIN, language)
    rota = page.locator("#rc-rota")
    # The department being planned, with its days filled in, not the first department of the company.
    expect(rota.locator('select[name="department_id"]')).to_have_value(SALES)
    expect(rota.locator(f'select[data-day="{today.isoformat()}"]')).to_have_value("3")
    month = rota.locator('select[name="month"]')
    expect(month).to_have_value(today.strftime("%Y-%m"))
    label = f"{MONTHS[language][today.month - 1]} {today.year}"
    expect(month.locator("option:checked")).to_have_text(label)
    following = today.replace(day=28) + timedelta(days=7)  # a day of the next month
    month.select_option(following.strftime("%Y-%m"))
    expect(rota.locator(f'td[data-date="{following.replace(day=1).isoformat()}"]')).to_be_visible()


@pytest.mark.parametrize(
    ("language", "note"),
    [
        ("ru", "За период нечего показать: график появится, когда в периоде будут отказы."),
        ("en", "Nothing to show for the period: the chart appears once the period has refusals."),
    ],
)
def test_an_empty_period_says_so_instead_of_drawing_empty_charts(
    installed: B24, live_server, page: Page, language: str, note: str
):
    open_app(page, live_server.url, installed, HEAD, language)
    expect(page.locator("#tab-reports")).to_be_visible()
    empty = page.locator("#rc-report [data-empty-chart]")
    expect(empty).to_have_count(3, timeout=10_000)
    expect(empty.first.locator(".rc-note")).to_have_text(note)
    expect(empty.first.locator("strong")).to_have_text("Динамика по неделям" if language == "ru" else "Weekly trend")
    expect(page.locator("#rc-report svg.rc-chart")).to_have_count(0)  # no axes ticking 0, 0.2, 0.4 … of nothing
