"""The reports tab in a real Chromium: charts and tables for a head of sales, and a CSV Excel can open."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from app.core.db import db
from app.core.models import CaseEvent, DealDeletion, Penalty, RefusalCase
from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24

pytestmark = pytest.mark.browser
HEAD = 9


def seed_cases(portal_id: int) -> None:
    opened = datetime.now(UTC) - timedelta(hours=3)
    for number, (manager, reason, state) in enumerate(
        [("2", "price", "confirmed"), ("2", "price", "leaked"), ("3", "no_budget", "confirmed")], start=1
    ):
        case = RefusalCase(
            portal_id=portal_id,
            deal_id=str(900 + number),
            deal_title=f"Сделка {number}",
            pipeline_id="0",
            manager_id=manager,
            reason=reason,
            source_id="WEB",
            state=state,
            opened_at=opened,
        )
        db.session.add(case)
        db.session.flush()
        db.session.add(
            CaseEvent(
                portal_id=portal_id,
                case_id=case.id,
                actor="7",
                action=state,
                state_after=state,
                created_at=opened + timedelta(hours=1),
            )
        )
        if state == "leaked":
            db.session.add(
                Penalty(
                    portal_id=portal_id,
                    manager_id=manager,
                    case_id=case.id,
                    deal_id=case.deal_id,
                    kind="penalty",
                    amount=Decimal("1500"),
                    currency="RUB",
                    rule="portal_default",
                    created_by="7",
                    created_at=opened + timedelta(hours=1),
                )
            )
    db.session.commit()


def test_a_head_sees_charts_and_tables_and_downloads_an_excel_ready_csv(app, live_server, page: Page):
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        ours = harness.install()
        configure_guard(ours)
        seed_cases(ours.id)
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=ru", harness.frame(HEAD))
        page.get_by_role("tab", name="Отчёты").click()
        expect(page.locator("#rc-table-managers")).to_be_visible(timeout=10_000)
        expect(page.locator('svg[data-chart="line"]')).to_have_count(1)
        expect(page.locator('svg[data-chart="bar"]')).to_have_count(2)
        expect(page.locator("svg .rc-bar").first).to_be_attached()
        expect(page.locator("#rc-table-managers tfoot td").nth(1)).to_have_text("3")
        expect(page.locator("#rc-analytics-headline")).to_contain_text("«Дорого»")

        with page.expect_download() as download_info:
            page.locator('[data-csv="managers"]').click()
        download = download_info.value
        assert download.suggested_filename.startswith("refusal-control-managers-")
        raw = open(download.path(), "rb").read()
        assert raw.startswith(b"\xef\xbb\xbf")
        text = raw.decode("utf-8-sig")
        assert text.splitlines()[0].startswith("Менеджер;Отказов на проверке;Подтверждено;Утечки")
        assert text.splitlines()[-1] == "Итого;3;2;1;33,3;1500,00;1,0;0;0"  # no deal deleted, no move refused

        page.locator('[data-appeal] input[name="reason"]').fill("Ошибка проверки")
        page.locator("[data-appeal] button").click()
        expect(page.locator("#rc-report-state")).to_have_text("Штраф отменён.", timeout=10_000)
        expect(page.locator('[data-kind="reversal"]')).to_have_count(1)
        expect(page.locator("[data-appeal]")).to_have_count(0)


def test_a_manager_gets_no_reports_tab(app, live_server, page: Page):
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        configure_guard(harness.install())
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=ru", harness.frame(2))
        expect(page.locator("h1")).to_have_text("Контроль отказов")
        expect(page.get_by_role("tab", name="Отчёты")).to_have_count(0)


def test_a_head_sees_the_deals_a_manager_deleted(app, live_server, page: Page):
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        ours = harness.install()
        configure_guard(ours)
        deleted_at = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)  # 12:30 in Moscow
        db.session.add(
            DealDeletion(
                portal_id=ours.id,
                deal_id="931",
                deleted_by="2",
                role="manager",
                violation=True,
                known=True,
                title="Монтаж — ООО «Меридиан»",
                amount="1200000",
                currency="RUB",
                pipeline_id="0",
                stage_id="EXECUTING",
                responsible_id="2",
                deleted_at=deleted_at,
            )
        )
        db.session.commit()
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=ru", harness.frame(HEAD))
        page.get_by_role("tab", name="Отчёты").click()
        table = page.locator("#rc-table-deletions")
        expect(page.locator('[data-table="deletions"] h2')).to_have_text("Удалённые сделки", timeout=10_000)
        expect(table).to_be_visible(timeout=10_000)
        cells = table.locator("tbody td")
        expect(cells.nth(0)).to_have_text("07.12.2026 12:30")
        expect(cells.nth(1)).to_have_text("Ольга Кузнецова")  # a name, never a user id
        expect(cells.nth(2)).to_have_text("Монтаж — ООО «Меридиан»")
        expect(cells.nth(3)).to_have_text("1 200 000\u00a0₽")
        expect(cells.nth(4)).to_have_text("да")
        # The managers table's deletions column (the one before «moves refused: fields missing»).
        expect(page.locator("#rc-table-managers tbody td").nth(-2)).to_have_text("1")


@pytest.mark.parametrize(("language", "tab"), [("ru", "Отчёты"), ("en", "Reports")])
def test_an_admin_has_the_reports_with_titled_charts_one_colour_per_meaning(
    app, live_server, page: Page, language, tab
):
    import re

    import responses

    from app.core import i18n

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        ours = harness.install()
        configure_guard(ours)
        seed_cases(ours.id)
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={language}", harness.frame(1))
        page.get_by_role("tab", name=tab).click()
        expect(page.locator("#rc-table-managers")).to_be_visible(timeout=10_000)
        for key in ("chart_trend", "chart_managers", "chart_reasons"):
            expect(page.locator(".rc-chart-title", has_text=i18n.translate(key, language))).to_be_visible()
        leaks = i18n.translate("col_leaks", language)
        colours = page.evaluate(
            """(leaks) => Array.from(document.querySelectorAll("svg.rc-chart")).flatMap((svg) =>
                 Array.from(svg.querySelectorAll("text")).filter((t) => t.textContent === leaks)
                   .map((t) => t.previousElementSibling.getAttribute("fill")))""",
            leaks,
        )
        assert len(colours) == 2 and len(set(colours)) == 1, colours
        period = page.locator("#rc-report-period-label").inner_text()
        assert re.fullmatch(r"\d\d\.\d\d\.\d{4}( – \d\d\.\d\d\.\d{4})?", period), period
        expect(page.locator("#rc-report")).not_to_contain_text("г..")
        assert all("данных нет" not in text for text in page.locator("[data-empty]").all_inner_texts())


def test_an_english_page_on_a_russian_portal_gets_its_headline_and_csv_in_english(app, live_server, page: Page):
    """The page's language (the user's, LANG=en) wins over the portal's for the headline and every download."""
    import re

    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        ours = harness.install()
        configure_guard(ours)
        seed_cases(ours.id)
        assert db.session.get(type(ours), ours.id).language == "ru"
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=en", harness.frame(HEAD))
        page.get_by_role("tab", name="Reports").click()
        expect(page.locator("#rc-table-managers")).to_be_visible(timeout=10_000)
        expect(page.locator("#rc-analytics-headline")).to_have_text(
            re.compile(r'^50 % of confirmed refusals are for the reason "(No budget|Price too high)"\.$')
        )
        expect(page.locator("#rc-table-reasons")).to_contain_text("Price too high")
        expect(page.locator("#rc-report")).not_to_contain_text("Дорого")

        for table, header in (("managers", "Manager,"), ("missing_fields", "Manager,"), ("ledger", "Date,")):
            with page.expect_download() as download_info:
                page.locator(f'[data-csv="{table}"]').click()
            text = open(download_info.value.path(), "rb").read().decode("utf-8-sig")
            assert text.splitlines()[0].startswith(header), (table, text.splitlines()[0])
            assert not any("\u0400" <= char <= "\u04ff" for char in text.splitlines()[0]), text
        with page.expect_download() as download_info:
            page.locator('[data-csv="managers"]').click()
        text = open(download_info.value.path(), "rb").read().decode("utf-8-sig")
        assert text.splitlines()[-1] == "Total,3,2,1,33.3,1500.00,1.0,0,0"
