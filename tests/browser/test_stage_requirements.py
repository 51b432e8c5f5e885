"""Stage requirements in a real Chromium: the admin picks a stage's required fields by their labels (Russian and
English pages), and a head sees the moves refused for missing fields in the reports."""

from datetime import UTC, datetime, timedelta

import pytest
import responses
from playwright.sync_api import Page, expect

from app.core.db import db
from app.core.models import AuditEntry
from app.domain import requirements
from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24

pytestmark = pytest.mark.browser
ADMIN, MANAGER, HEAD = 1, 2, 9


def invoice_field(harness: B24) -> str:
    """The portal's admin adds a deal field «Номер счёта» (crm.deal.userfield.add)."""
    fields = {"FIELD_NAME": "INVOICE_NO", "USER_TYPE_ID": "string", "EDIT_FORM_LABEL": "Номер счёта"}
    status, body = harness.sandbox.call(harness.portal, "crm.deal.userfield.add", {"fields": fields}, ADMIN)
    assert status == 200, body
    return "UF_CRM_INVOICE_NO"


@pytest.mark.parametrize(
    ("lang", "tab", "legend", "save", "saved", "count"),
    [
        ("ru", "Настройки", "Обязательные поля стадий", "Сохранить", "Настройки сохранены.", "Обязательных полей: 2"),
        ("en", "Settings", "Stage requirements", "Save", "Settings saved.", "Required fields: 2"),
    ],
)
def test_admin_picks_the_fields_a_stage_requires_by_their_labels(
    app, live_server, page: Page, lang: str, tab: str, legend: str, save: str, saved: str, count: str
):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install().language = lang  # the language the admin installed the app in
        db.session.commit()
        invoice = invoice_field(harness)
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={lang}", harness.frame(ADMIN))
        page.get_by_role("tab", name=tab).click()
        form = page.locator("#rc-req-settings")
        expect(form.locator("legend").first).to_have_text(legend)
        stage = form.locator('.rc-req-picker[data-stage="EXECUTING"]')
        expect(stage).to_be_visible(timeout=10_000)
        stage.locator("summary").click()
        expect(stage.get_by_label("Номер счёта")).to_have_count(1)
        stage.get_by_label("Сумма", exact=True).check()
        stage.get_by_label("Номер счёта").check()
        expect(form.locator('[data-count="EXECUTING"]')).to_have_text(count)
        expect(stage.locator("summary")).to_have_text("Сумма, Номер счёта")
        form.get_by_role("button", name=save).click()
        expect(page.locator("#rc-req-result")).to_have_text(saved)
        db.session.expire_all()
        stored = requirements.stage_requirements(harness.our_portal())
        assert stored == {"EXECUTING": {"required": ["OPPORTUNITY", invoice]}}

        # Reopened, the page shows what is stored; clearing the stage removes its requirements.
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={lang}", harness.frame(ADMIN))
        page.get_by_role("tab", name=tab).click()
        stage = page.locator('#rc-req-settings .rc-req-picker[data-stage="EXECUTING"]')
        expect(stage.locator("input:checked")).to_have_count(2, timeout=10_000)
        stage.locator("summary").click()
        stage.get_by_label("Сумма", exact=True).uncheck()
        stage.get_by_label("Номер счёта").uncheck()
        page.locator("#rc-req-settings").get_by_role("button", name=save).click()
        expect(page.locator("#rc-req-result")).to_have_text(saved)
        db.session.expire_all()
        assert requirements.stage_requirements(harness.our_portal()) == {}


def test_a_head_sees_the_moves_refused_for_missing_fields(app, live_server, page: Page):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        ours = harness.install()
        configure_guard(ours)
        moment = datetime.now(UTC) - timedelta(minutes=5)
        for deal_id in ("501", "502"):
            db.session.add(
                AuditEntry(
                    portal_id=ours.id, deal_id=deal_id, actor=str(MANAGER), attempted=requirements.ATTEMPTED,
                    outcome=requirements.OUTCOME, reason="required fields are not filled in", created_at=moment,
                    details={"manager_id": str(MANAGER), "stage_id": "EXECUTING", "pipeline_id": "0",
                             "missing": ["UF_CRM_INVOICE_NO"], "missing_labels": ["Номер счёта"], "violation": True},
                )
            )  # fmt: skip
        db.session.commit()
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=ru", harness.frame(HEAD))
        page.get_by_role("tab", name="Отчёты").click()
        section = page.locator('[data-table="missing_fields"]')
        expect(section.locator("h2")).to_have_text("Переходы, отклонённые из-за незаполненных полей", timeout=10_000)
        cells = section.locator("tbody td")
        expect(cells.nth(0)).to_have_text("Ольга Кузнецова")  # a name, never a user id
        expect(cells.nth(1)).to_contain_text("В работе")
        expect(cells.nth(2)).to_have_text("2")
        expect(cells.nth(3)).to_have_text("Номер счёта (2)")
        with page.expect_download() as download:
            section.get_by_role("button", name="Скачать CSV").click()
        content = download.value.path().read_bytes().decode("utf-8-sig")
        assert "Ольга Кузнецова;" in content and ";2;Номер счёта (2)" in content
