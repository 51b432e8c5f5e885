"""The company's refusal reasons in a real Chromium (issue #19): the admin's reason editor on the settings tab and
the reason analytics on the reports tab, in Russian and in English."""

from datetime import UTC, datetime, timedelta

import pytest
import responses
from playwright.sync_api import Page, expect

from app.core.db import db
from app.core.models import CaseEvent, RefusalCase
from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24

pytestmark = pytest.mark.browser
ADMIN, HEAD = 1, 9


def crm_items(harness: B24) -> list[str]:
    field = harness.portal.userfield_by_name("UF_CRM_RC_REASON")
    assert field is not None
    return [str(item["VALUE"]) for item in field.items]


def open_settings(page: Page, url: str, harness: B24, lang: str) -> None:
    post_frame(page, f"{url}/b24/app?DOMAIN={harness.portal.domain}&LANG={lang}", harness.frame(ADMIN))
    page.get_by_role("tab", name="Настройки" if lang == "ru" else "Settings").click()
    expect(page.locator("#rc-reasons-table tbody tr")).to_have_count(7, timeout=10_000)


def test_an_admin_renames_adds_reorders_and_retires_reasons_in_russian(app, live_server, page: Page):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install()
        open_settings(page, live_server.url, harness, "ru")
        result = page.locator("#rc-reasons-result")

        price = page.locator('#rc-reasons-table tr[data-code="price"]')
        price.get_by_label("Название (рус.)").fill("Слишком дорого")
        price.get_by_role("button", name="Сохранить").click()
        expect(result).to_have_text("Причины сохранены и записаны в CRM.")
        assert "Слишком дорого" in crm_items(harness) and "Дорого" not in crm_items(harness)

        add = page.locator("#rc-reasons-add")
        add.get_by_role("button", name="Добавить причину").click()
        expect(result).to_have_text("Укажите название причины.")
        add.get_by_label("Название (рус.)").fill("Слишком дорого")
        add.get_by_role("button", name="Добавить причину").click()
        expect(result).to_have_text("Причина «Слишком дорого» уже есть.")
        add.get_by_label("Название (рус.)").fill("Выбрал конкурента")
        add.get_by_label("Название (англ.)").fill("Chose a competitor")
        add.get_by_role("button", name="Добавить причину").click()
        expect(page.locator("#rc-reasons-table tbody tr")).to_have_count(8)
        added = page.locator("#rc-reasons-table tbody tr").nth(7)
        expect(added.get_by_label("Название (рус.)")).to_have_value("Выбрал конкурента")
        assert "Выбрал конкурента" in crm_items(harness)

        added.get_by_role("button", name="Выше").click()
        expect(page.locator("#rc-reasons-table tbody tr").nth(6).get_by_label("Название (рус.)")).to_have_value(
            "Выбрал конкурента"
        )

        other = page.locator('#rc-reasons-table tr[data-code="other"]')
        other.get_by_role("button", name="В архив").click()
        retired = page.locator('#rc-reasons-table tr[data-code="other"]')
        expect(retired.locator('[data-badge="retired"]')).to_have_text("в архиве")
        expect(page.locator("#rc-reasons-table tbody tr").last).to_have_attribute("data-code", "other")
        expect(retired.get_by_role("button", name="Вернуть")).to_be_visible()
        assert "Другое" in crm_items(harness), "a retired reason stays in the CRM field"


def test_the_reason_editor_speaks_english(app, live_server, page: Page):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        ours = harness.install()
        ours.language = "en"
        db.session.commit()
        open_settings(page, live_server.url, harness, "en")
        expect(page.locator("#rc-reasons-title")).to_have_text("Refusal reasons")
        add = page.locator("#rc-reasons-add")
        add.get_by_label("Name (English)").fill("price too high")
        add.get_by_role("button", name="Add a reason").click()
        expect(page.locator("#rc-reasons-result")).to_have_text('The reason "price too high" already exists.')
        row = page.locator('#rc-reasons-table tr[data-code="no_budget"]')
        row.get_by_role("button", name="Retire").click()
        expect(page.locator('#rc-reasons-table tr[data-code="no_budget"] [data-badge="retired"]')).to_have_text(
            "retired"
        )
        expect(page.locator("#rc-reasons-result")).to_have_text("Reasons saved and written to the CRM.")


def seed_commented_cases(portal_id: int) -> None:
    opened = datetime.now(UTC) - timedelta(hours=3)
    rows = [
        ("2", "price", "confirmed", "PREPARATION", "Нужна подземная парковка, дорого"),
        ("2", "price", "leaked", "PREPARATION", "Дорого, хочет подземную парковку"),
        ("3", "no_budget", "confirmed", "NEW", "Бюджет закончился"),
    ]
    for number, (manager, reason, state, stage, comment) in enumerate(rows, start=1):
        case = RefusalCase(
            portal_id=portal_id,
            deal_id=str(900 + number),
            deal_title=f"Сделка {number}",
            pipeline_id="0",
            manager_id=manager,
            reason=reason,
            comment=comment,
            previous_stage_id=stage,
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
    db.session.commit()


@pytest.mark.parametrize("lang", ["ru", "en"])
def test_a_head_reads_comments_and_stages_and_filters_the_comments(app, live_server, page: Page, lang: str):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        ours = harness.install()
        ours.language = lang
        configure_guard(ours)
        seed_commented_cases(ours.id)
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={lang}", harness.frame(HEAD))
        page.get_by_role("tab", name="Отчёты" if lang == "ru" else "Reports").click()
        terms = page.locator("#rc-table-comment_terms")
        expect(terms).to_be_visible(timeout=10_000)
        price = "Дорого" if lang == "ru" else "Price too high"
        expect(page.locator('[data-table="comment_terms"] h2')).to_have_text(
            "Комментарии: что пишут менеджеры" if lang == "ru" else "Comments: what managers write"
        )
        expect(terms.locator("tbody tr").first.locator("td").nth(0)).to_have_text(price)
        expect(terms.locator("tbody tr").first.locator("td").nth(2)).to_contain_text("подземная парковка (2)")

        comments = page.locator("#rc-table-comments tbody tr")
        expect(comments).to_have_count(3)
        expect(comments.first.get_by_role("link", name="Сделка 1")).to_have_attribute(
            "href", f"https://{portal.domain}/crm/deal/details/901/"
        )
        page.locator('[data-comments-filter="reason"]').select_option(label=price)
        expect(page.locator("#rc-table-comments tbody tr:visible")).to_have_count(2)
        page.locator('[data-comments-filter="reason"]').select_option(index=0)
        page.locator('[data-comments-filter="manager"]').select_option(value="3")
        expect(page.locator("#rc-table-comments tbody tr:visible")).to_have_count(1)

        stages = page.locator("#rc-table-stages tbody tr")
        expect(stages).to_have_count(2)
        expect(stages.first.locator("td").nth(2)).to_have_text("2")
        # Its share is of all the refusals in the table (it read «of confirmed» over 100 with none confirmed).
        share = "Доля среди всех отказов, %" if lang == "ru" else "Share of all refusals, %"
        expect(page.locator("#rc-table-stages thead th").nth(4)).to_have_text(share)
        expect(page.locator('[data-table="stages"] h2')).to_contain_text(
            "Отказы по стадии" if lang == "ru" else "Refusals by the stage"
        )
