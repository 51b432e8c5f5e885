"""«Отложено» in a real Chromium: the admin picks, per pipeline, the stage a postponed deal comes back to (Russian
and English pages); a head sees the postponed deals of the period, how many came back and were won (with the
amount), per manager, on the page and in the CSV."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import responses
from playwright.sync_api import Page, expect

from app.core.db import db
from app.core.models import Postponement
from app.domain import postpone
from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24

pytestmark = pytest.mark.browser
ADMIN, MANAGER, HEAD = 1, 2, 9


@pytest.mark.parametrize(
    ("lang", "tab", "legend", "stay", "save", "saved"),
    [
        ("ru", "Настройки", "Отложенные сделки", "Оставить в «Отложено»", "Сохранить", "Настройки сохранены."),
        ("en", "Settings", "Postponed deals", "Keep in Postponed", "Save", "Settings saved."),
    ],
)
def test_admin_picks_where_postponed_deals_come_back(
    app, live_server, page: Page, lang: str, tab: str, legend: str, stay: str, save: str, saved: str
):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install().language = lang
        db.session.commit()
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={lang}", harness.frame(ADMIN))
        page.get_by_role("tab", name=tab).click()
        form = page.locator("#rc-postpone-settings")
        expect(form.locator("legend").first).to_have_text(legend)
        main = form.locator('select[data-pipeline="0"]')
        expect(main).to_be_visible(timeout=10_000)
        expect(main.locator("option:checked")).to_have_text(stay)
        # Only working stages are offered: not «Условный отказ», not «Отложено», not won or lost.
        offered = main.locator("option").all_text_contents()
        assert "В работе" in offered and "Условный отказ" not in offered and "Отложено" not in offered
        main.select_option(label="В работе")
        form.get_by_role("button", name=save).click()
        expect(page.locator("#rc-postpone-result")).to_have_text(saved)
        db.session.expire_all()
        assert postpone.return_stages(harness.our_portal()) == {"0": "EXECUTING"}

        # Reopened, the page shows what is stored; «keep» removes the pipeline's stage.
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={lang}", harness.frame(ADMIN))
        page.get_by_role("tab", name=tab).click()
        main = page.locator('#rc-postpone-settings select[data-pipeline="0"]')
        expect(main.locator("option:checked")).to_have_text("В работе", timeout=10_000)
        main.select_option(label=stay)
        page.locator("#rc-postpone-settings").get_by_role("button", name=save).click()
        expect(page.locator("#rc-postpone-result")).to_have_text(saved)
        db.session.expire_all()
        assert postpone.return_stages(harness.our_portal()) == {}


def test_a_head_sees_postponed_returned_and_won_deals(app, live_server, page: Page):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        ours = harness.install()
        configure_guard(ours)
        moment = datetime.now(UTC) - timedelta(minutes=5)
        for deal_id, state, won in (("601", "returned", True), ("602", "returned", False), ("603", "waiting", False)):
            db.session.add(
                Postponement(
                    portal_id=ours.id, deal_id=deal_id, title=f"Сделка {deal_id}", pipeline_id="0",
                    manager_id=str(MANAGER), postponed_by=str(MANAGER), reason="no_money_now",
                    due_date=moment.date() + timedelta(days=3), postponed_at=moment, state=state,
                    ended_how="on date" if state == "returned" else "", amount="900000", currency="RUB",
                    won_at=moment + timedelta(minutes=1) if won else None, won_amount="1200000" if won else "",
                )
            )  # fmt: skip
        db.session.commit()
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=ru", harness.frame(HEAD))
        page.get_by_role("tab", name="Отчёты").click()
        section = page.locator('[data-table="postponed"]')
        expect(section.locator("h2")).to_have_text("Отложенные сделки", timeout=10_000)
        expect(section.locator("thead th")).to_have_text(
            ["Менеджер", "Отложено", "Вернулись в работу", "Выиграны после возврата", "Сумма выигранных", "Ждут даты"]
        )
        cells = section.locator("tbody td")
        expect(cells.nth(0)).to_have_text("Ольга Кузнецова")  # a name, never a user id
        expect(cells.nth(1)).to_have_text("3")
        expect(cells.nth(2)).to_have_text("2")
        expect(cells.nth(3)).to_have_text("1")
        expect(cells.nth(4)).to_have_text(re.compile(r"^1\s200\s000\s₽$"))
        expect(cells.nth(5)).to_have_text("1")
        with page.expect_download() as download:
            section.get_by_role("button", name="Скачать CSV").click()
        content = download.value.path().read_bytes().decode("utf-8-sig")
        assert "Ольга Кузнецова;3;2;1;1200000;RUB;1" in content
