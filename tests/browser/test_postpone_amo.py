"""«Отложено» on the amoCRM page in a real Chromium, in Russian and English: the admin, in the widget's lead tab
frame or on the widget's page, picks the status a postponed lead of each pipeline comes back to; a head sees the
report section "postponed deals" (postponed, came back, won after the return with its amount, waiting) and its
CSV."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import FrameLocator, Page, expect

from app.core.db import db
from app.core.models import Postponement
from app.domain import postpone
from handlers.amo_verify import issue_ticket
from sandbox.amocrm import mount_amo_responses
from tests.browser.test_amo_widget import BACKEND, WIDGET_CODE, lead_page
from tests.integration.amo import Amo, make_amo
from tests.integration.b24 import configure_guard

pytestmark = pytest.mark.browser
ADMIN, MANAGER, HEAD = 1, 2, 9

SETTINGS = {
    "ru": {
        "tab": "Настройки",
        "legend": "Отложенные сделки",
        "stay": "Оставить в «Отложено»",
        "save": "Сохранить",
        "saved": "Настройки сохранены.",
    },
    "en": {
        "tab": "Settings",
        "legend": "Postponed deals",
        "stay": "Keep in Postponed",
        "save": "Save",
        "saved": "Settings saved.",
    },
}
REPORT = {
    "ru": {
        "tab": "Отчёты",
        "title": "Отложенные сделки",
        "columns": ["Менеджер", "Отложено", "Вернулись в работу", "Выиграны после возврата", "Сумма выигранных",
                    "Ждут даты"],
        "money": r"^1\s200\s000\s₽$",
        "csv": "Скачать CSV",
        "row": "Менеджер Иван;3;2;1;1200000;RUB;1",
    },
    "en": {
        "tab": "Reports",
        "title": "Postponed deals",
        "columns": ["Manager", "Postponed", "Came back", "Won after return", "Won amount", "Waiting"],
        "money": r"^1,200,000\s₽$",
        "csv": "Download CSV",
        "row": "Менеджер Иван,3,2,1,1200000,RUB,1",  # an English CSV is comma-separated
    },
}  # fmt: skip


@pytest.fixture
def amo(app, live_server) -> Iterator[Amo]:
    """An installed sandbox account; the browser reaches the live server directly."""
    import responses

    sandbox, account = make_amo(app)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_amo_responses(sandbox, mock)
        mock.add_passthru(live_server.url)
        harness = Amo(app=app, client=app.test_client(), sandbox=sandbox, account=account)
        harness.install()
        yield harness


def set_language(amo: Amo, language: str) -> None:
    """The account's language (a .amocrm.com / kommo.com account is English): the page follows it."""
    portal = amo.our_portal()
    portal.language = language
    db.session.commit()


def open_by_ticket(page: Page, live_url: str, amo: Amo, user_id: int, admin: bool = False) -> Page:
    """The widget's page (settings or the left menu) opens our page with a ticket from the widget."""
    page.goto(f"{live_url}/amocrm/app?ticket={issue_ticket(amo.our_portal().id, str(user_id), admin)}")
    return page


def open_from_lead_tab(page: Page, live_url: str, amo: Amo, user_id: int, tmp_path) -> FrameLocator:
    """The lead card's tab of the widget, then its button on to the main page, inside the tab's frame."""
    amo.app.config["PUBLIC_URL"] = BACKEND
    token = amo.sandbox.widget_token(amo.account, user_id, "https://app.example.test")
    lead_page(page, live_url, [token], tmp_path)
    page.locator(f'.card-tabs__item[data-id="{WIDGET_CODE}"]').click()
    frame = page.frame_locator(f"#{WIDGET_CODE} iframe.rc-widget-frame")
    frame.locator("#rc-open-app").click()
    return frame


def check_settings(root: Page | FrameLocator, amo: Amo, language: str) -> None:
    text = SETTINGS[language]
    root.get_by_role("tab", name=text["tab"]).click()
    form = root.locator("#rc-postpone-settings")
    expect(form.locator("legend").first).to_have_text(text["legend"], timeout=10_000)
    pipeline = str(amo.account.main_pipeline())
    main = form.locator(f'select[data-pipeline="{pipeline}"]')
    expect(main).to_be_visible(timeout=10_000)
    expect(main.locator("option:checked")).to_have_text(text["stay"])
    # Only working statuses: not «Условный отказ», not «Отложено», not won or lost.
    offered = main.locator("option").all_text_contents()
    assert "Переговоры" in offered, offered
    assert not {"Условный отказ", "Отложено", "Успешно реализовано", "Закрыто и не реализовано"} & set(offered)
    main.select_option(label="Переговоры")
    form.get_by_role("button", name=text["save"]).click()
    expect(root.locator("#rc-postpone-result")).to_have_text(text["saved"])
    db.session.expire_all()
    [(stored_pipeline, stage)] = postpone.return_stages(amo.our_portal()).items()
    assert stored_pipeline == pipeline
    assert amo.account.pipelines[int(pipeline)]["statuses"][int(stage)]["name"] == "Переговоры"


def test_an_admin_in_the_lead_tab_frame_picks_where_postponed_leads_come_back(
    amo: Amo, live_server, page: Page, tmp_path
):
    frame = open_from_lead_tab(page, live_server.url, amo, ADMIN, tmp_path)
    check_settings(frame, amo, "ru")


def test_an_admin_on_an_english_account_picks_where_postponed_leads_come_back(amo: Amo, live_server, page: Page):
    set_language(amo, "en")
    open_by_ticket(page, live_server.url, amo, ADMIN, admin=True)
    check_settings(page, amo, "en")


def seed_postponements(amo: Amo) -> None:
    """Three leads of the manager postponed five minutes ago: two came back (one won after that), one waits."""
    ours = amo.our_portal()
    configure_guard(ours, heads=[str(HEAD)])
    moment = datetime.now(UTC) - timedelta(minutes=5)
    for deal_id, state, won in (("701", "returned", True), ("702", "returned", False), ("703", "waiting", False)):
        db.session.add(
            Postponement(
                portal_id=ours.id, deal_id=deal_id, title=f"Сделка {deal_id}", pipeline_id="1",
                manager_id=str(MANAGER), postponed_by=str(MANAGER), reason="no_money_now",
                due_date=moment.date() + timedelta(days=3), postponed_at=moment, state=state,
                ended_how="on date" if state == "returned" else "", ended_at=moment if state == "returned" else None,
                amount="900000", currency="RUB", won_at=moment + timedelta(minutes=1) if won else None,
                won_amount="1200000" if won else "",
            )
        )  # fmt: skip
    db.session.commit()


@pytest.mark.parametrize("language", ["ru", "en"])
def test_a_head_sees_the_postponed_report_on_the_amocrm_page(amo: Amo, live_server, page: Page, language):
    seed_postponements(amo)
    set_language(amo, language)
    text = REPORT[language]
    open_by_ticket(page, live_server.url, amo, HEAD)
    page.get_by_role("tab", name=text["tab"]).click()
    section = page.locator('[data-table="postponed"]')
    expect(section.locator("h2")).to_have_text(text["title"], timeout=10_000)
    expect(section.locator("thead th")).to_have_text(text["columns"])
    cells = section.locator("tbody td")
    expect(cells.nth(0)).to_have_text("Менеджер Иван")  # the CRM's name, never a user id
    expect(cells.nth(1)).to_have_text("3")
    expect(cells.nth(2)).to_have_text("2")
    expect(cells.nth(3)).to_have_text("1")
    expect(cells.nth(4)).to_have_text(re.compile(text["money"]))  # the amount it was won for
    expect(cells.nth(5)).to_have_text("1")
    with page.expect_download() as download:
        section.get_by_role("button", name=text["csv"]).click()
    content = download.value.path().read_bytes().decode("utf-8-sig")
    assert text["row"] in content
    assert text["columns"][3] in content.splitlines()[0]
