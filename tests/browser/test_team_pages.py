"""What the team sees in a real Chromium (Bitrix24 and amoCRM): the duty rota on the main page for everyone, and on
the reports page the revenue returned from false refusals and the lead exchange per manager (Russian and English)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from app.core.db import db
from app.core.models import ExchangeClaim, ExchangeLot, Penalty, Portal, RecoveredDeal, RefusalCase
from app.crm.factory import client_for
from app.domain import directory, exchange
from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24
from tests.integration.exchange_helpers import POOL, add_people

pytestmark = pytest.mark.browser
MANAGER, OTHER, HEAD = 2, 3, 9


def names(harness: B24) -> dict[str, str]:
    portal = harness.our_portal()
    return {user.id: user.name for user in directory.users(portal.id, client_for(portal))}


@pytest.mark.parametrize(
    ("lang", "title", "today_label", "nobody"),
    [
        ("ru", "Дежурные менеджеры", "Сегодня", "никто"),
        ("en", "Managers on duty", "Today", "nobody"),
    ],
)
def test_everyone_sees_todays_and_this_weeks_manager_on_duty(
    app, live_server, page: Page, lang, title, today_label, nobody
):
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        add_people(harness)
        ours = harness.install()
        ours.language = lang  # the portal's language (Bitrix24 sets it at install)
        exchange.update_exchange_settings(
            ours, {"pipelines": {"0": {"mode": "duty", "pool_user": str(POOL), "duty_department": "2"}}}
        )
        today = exchange.portal_day(ours, datetime.now(UTC))
        monday = today - timedelta(days=today.weekday())
        other_day = monday if today != monday else monday + timedelta(days=1)
        exchange.set_rota(ours.id, "2", {today: str(MANAGER), other_day: str(OTHER)})
        db.session.commit()
        people = names(harness)

        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={lang}", harness.frame(OTHER))
        panel = page.locator("#rc-duty")
        expect(panel.get_by_role("heading", name=title)).to_be_visible(timeout=10_000)
        expect(panel.locator(".rc-duty-today")).to_contain_text(f"{today_label}, {today.strftime('%d.%m.%Y')}")
        expect(panel.locator(".rc-duty-today strong")).to_have_text(people[str(MANAGER)])
        week = panel.locator(".rc-duty-week tbody tr")
        expect(week).to_have_count(7)
        expect(panel.locator(f'tr[data-day="{today.isoformat()}"]')).to_have_attribute("aria-current", "date")
        expect(panel.locator(f'tr[data-day="{other_day.isoformat()}"] td')).to_have_text(people[str(OTHER)])
        empty = next(
            monday + timedelta(days=n) for n in range(7) if monday + timedelta(days=n) not in (today, other_day)
        )
        expect(panel.locator(f'tr[data-day="{empty.isoformat()}"] td')).to_have_text(nobody)
        # Each day of the week with its weekday: «Пн, 07.12.2026».
        monday_label = "Пн" if lang == "ru" else "Mon"
        expect(panel.locator(f'tr[data-day="{monday.isoformat()}"] th')).to_have_text(
            f"{monday_label}, {monday.strftime('%d.%m.%Y')}"
        )


def seed_results(portal_id: int) -> None:
    """Manager 2's false refusal: the deal returned to manager 3 and won for 150 000 ₽; his fine of 1 500 ₽; and
    three exchange claims (one won after waiting two hours)."""
    now = datetime.now(UTC) - timedelta(minutes=30)
    case = RefusalCase(
        portal_id=portal_id,
        deal_id="901",
        deal_title="Поставка станков",
        pipeline_id="0",
        manager_id=str(MANAGER),
        reason="price",
        state="leaked",
        opened_at=now - timedelta(hours=2),
        closed_at=now - timedelta(hours=1),
    )
    db.session.add(case)
    db.session.flush()
    db.session.add(
        Penalty(
            portal_id=portal_id,
            manager_id=str(MANAGER),
            case_id=case.id,
            deal_id="901",
            kind="penalty",
            amount=Decimal("1500"),
            currency="RUB",
            rule="portal_default",
            created_by="7",
            created_at=now,
        )
    )
    db.session.add(
        RecoveredDeal(
            portal_id=portal_id,
            case_id=case.id,
            deal_id="901",
            title="Поставка станков",
            leaker_id=str(MANAGER),
            manager_id=str(OTHER),
            returned_at=now - timedelta(hours=1),
            outcome="won",
            closed_at=now,
            amount="150000",
            currency="RUB",
        )
    )
    for number, outcome in enumerate(("won", "lost", None), start=1):
        lot = ExchangeLot(
            portal_id=portal_id,
            deal_id=str(800 + number),
            pipeline_id="0",
            title=f"Заявка {number}",
            amount="1000",
            currency="RUB",
            source_id="WEB",
            status="closed" if outcome else "taken",
            pooled_at=now - timedelta(hours=2),
            holder_id=str(OTHER),
        )
        db.session.add(lot)
        db.session.flush()
        db.session.add(
            ExchangeClaim(
                portal_id=portal_id,
                lot_id=lot.id,
                deal_id=lot.deal_id,
                manager_id=str(OTHER),
                via="app",
                claimed_at=now,
                waited_seconds=7200,
                outcome=outcome,
                ended_at=now if outcome else None,
            )
        )
    db.session.commit()


@pytest.mark.parametrize(
    ("lang", "tab", "title", "revenue", "fine", "outcome", "exchange_title"),
    [
        (
            "ru",
            "Отчёты",
            "Выручка, возвращённая из ложных отказов",
            "150\u00a0000\u00a0₽",
            "1\u00a0500\u00a0₽",
            "выиграна",
            "Биржа лидов по менеджерам",
        ),
        (
            "en",
            "Reports",
            "Revenue returned from false refusals",
            "150,000\u00a0₽",
            "1,500\u00a0₽",
            "won",
            "Lead exchange by manager",
        ),
    ],
)
def test_a_head_sees_the_money_saved_and_the_exchange_per_manager(
    app, live_server, page: Page, lang, tab, title, revenue, fine, outcome, exchange_title
):
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        ours = harness.install()
        ours.language = lang  # the portal's language (Bitrix24 sets it at install)
        configure_guard(ours)
        seed_results(ours.id)
        people = names(harness)
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={lang}", harness.frame(HEAD))
        page.get_by_role("tab", name=tab).click()
        saved = page.locator("#rc-recovered")
        expect(saved.get_by_role("heading", name=title)).to_be_visible(timeout=10_000)
        row = saved.locator(f'#rc-table-recovered tbody tr[data-manager="{MANAGER}"]')
        expect(row.locator("td").nth(0)).to_have_text(people[str(MANAGER)])
        expect(row.locator("td").nth(1)).to_have_text("1")
        expect(row.locator("td").nth(2)).to_have_text("1")
        expect(row.locator('[data-revenue="RUB"]')).to_have_text(revenue)
        expect(row.locator('[data-fines="RUB"]')).to_have_text(fine)
        expect(page.locator("#rc-recovered-headline")).to_contain_text(revenue)
        listed = page.locator('#rc-table-recovered_deals tbody tr[data-deal="901"]')
        expect(listed).to_contain_text("Поставка станков")
        expect(listed).to_contain_text(people[str(OTHER)])
        expect(listed).to_contain_text(outcome)
        expect(listed).to_contain_text(datetime.now(UTC).astimezone(harness_zone()).strftime("%d.%m.%Y"))

        stats = page.locator('[data-table="exchange"]')
        expect(stats.get_by_role("heading", name=exchange_title)).to_be_visible()
        cells = stats.locator("#rc-table-exchange tbody tr").first.locator("td")
        expect(cells.nth(0)).to_have_text(people[str(OTHER)])
        expect(cells.nth(1)).to_have_text("3")
        expect(cells.nth(2)).to_have_text("1")
        expect(cells.nth(3)).to_have_text("1")
        expect(cells.nth(6)).to_have_text("2")

        with page.expect_download() as download_info:
            saved.locator('[data-csv="recovered"]').click()
        text = open(download_info.value.path(), "rb").read().decode("utf-8-sig")
        separator = ";" if lang == "ru" else ","
        assert f"{people[str(MANAGER)]}{separator}1{separator}1{separator}" in text


def harness_zone():
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Moscow")


def test_the_admin_turns_the_repeat_client_rule_off_on_the_settings_tab(app, live_server, page: Page):
    import responses

    from app.domain.settings import guard_settings

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install()
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=ru", harness.frame(1))
        page.get_by_role("tab", name="Настройки").click()
        rule = page.get_by_label("Повторные клиенты", exact=False)
        expect(rule).to_be_checked(timeout=10_000)  # on by default
        rule.uncheck()
        page.locator("#rc-settings").get_by_role("button", name="Сохранить").click()
        expect(page.locator("#rc-settings-result")).to_have_text("Настройки сохранены.")
        assert guard_settings(harness.our_portal()).repeat_clients is False


@pytest.fixture
def amo_account(app, live_server):
    """An installed sandbox amoCRM account; the browser opens our page as the widget's iframe would."""
    import responses

    from sandbox.amocrm import mount_amo_responses
    from tests.integration.amo import Amo, make_amo

    sandbox, account = make_amo(app)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_amo_responses(sandbox, mock)
        mock.add_passthru(live_server.url)
        amo = Amo(app=app, client=app.test_client(), sandbox=sandbox, account=account)
        amo.install()
        yield amo


def open_amo_main_page(page: Page, live_url: str, portal_id: int, user_id: int, admin: bool = False) -> None:
    """The main page inside amoCRM (widget settings or the left menu): a ticket from the widget opens it."""
    from handlers.amo_verify import issue_ticket

    page.goto(f"{live_url}/amocrm/app?ticket={issue_ticket(portal_id, str(user_id), admin)}")


def test_an_amocrm_manager_sees_the_duty_rota_and_a_head_the_team_sections(amo_account, live_server, page: Page):
    ours = db.session.scalars(sa.select(Portal).where(Portal.crm == Portal.AMOCRM)).one()
    pipeline = str(amo_account.account.main_pipeline())
    exchange.update_exchange_settings(
        ours, {"pipelines": {pipeline: {"mode": "duty", "pool_user": "1", "duty_department": "1"}}}
    )
    today = exchange.portal_day(ours, datetime.now(UTC))
    exchange.set_rota(ours.id, "1", {today: str(MANAGER)})
    configure_guard(ours, heads=[str(HEAD)])
    seed_results(ours.id)

    open_amo_main_page(page, live_server.url, ours.id, OTHER)
    panel = page.locator("#rc-duty")
    expect(panel.get_by_role("heading", name="Дежурные менеджеры")).to_be_visible(timeout=10_000)
    expect(panel.locator("h3")).to_have_text("Отдел продаж")
    expect(panel.locator(".rc-duty-today strong")).to_have_text("Менеджер Иван")

    other = page.context.new_page()
    open_amo_main_page(other, live_server.url, ours.id, HEAD)
    other.get_by_role("tab", name="Отчёты").click()
    row = other.locator(f'#rc-table-recovered tbody tr[data-manager="{MANAGER}"]')
    expect(row.locator("td").nth(0)).to_have_text("Менеджер Иван", timeout=10_000)
    expect(row.locator('[data-revenue="RUB"]')).to_have_text("150\u00a0000\u00a0₽")
    expect(other.locator("#rc-table-exchange tbody tr").first.locator("td").nth(0)).to_have_text("Менеджер Пётр")
