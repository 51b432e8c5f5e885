"""Stage playbook in a real Chromium: the admin installs the nine-status preset into a new pipeline and edits a
stage's steps on the settings page (in Russian and in English); the deal's tab shows the stage's steps, the
criteria to move on and what this deal still lacks, and for a deal in «Условный отказ» or «Отложено» what applies
there, in the Bitrix24 deal card and in the amoCRM lead card."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
import responses
from playwright.sync_api import Page, expect

from app.core.db import db
from app.core.models import Postponement
from app.domain import playbook, postpone, requirements
from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.browser.test_amo_widget import BACKEND, WIDGET_CODE, amo_installed, lead_page  # noqa: F401
from tests.browser.test_stage_requirements import invoice_field
from tests.integration.amo import Amo
from tests.integration.b24 import B24, new_deal
from tests.integration.conftest import make_b24
from tests.integration.review_helpers import case_in_review, tab_form

pytestmark = pytest.mark.browser
ADMIN, MANAGER = 1, 2


def open_deal_tab(page: Page, url: str, harness: B24, user_id: int, deal_id: int, lang: str = "ru") -> None:
    """Open the deal-card tab the way Bitrix24 does: a form POST into the frame."""
    fields = tab_form(harness, user_id, deal_id)
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
    )
    action = f"{url}/b24/placement/deal-tab?DOMAIN={harness.portal.domain}&LANG={lang}"
    page.set_content(f'<form id="f" method="post" action="{action}">{inputs}</form>')
    with page.expect_navigation():
        page.evaluate("document.getElementById('f').submit()")


def test_admin_installs_the_preset_into_a_new_pipeline_and_edits_a_stage(app, live_server, page: Page):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install()
        status, body = sandbox.call(
            portal, "crm.category.add", {"entityTypeId": 2, "fields": {"name": "Опт", "sort": 900}}, ADMIN
        )
        assert status == 200, body
        category = str(body["result"]["category"]["id"])
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=ru", harness.frame(ADMIN))
        page.get_by_role("tab", name="Настройки").click()
        form = page.locator("#rc-pb-settings")
        expect(form.locator("legend").first).to_have_text("Шаги продавца и критерии перехода")
        expect(form.locator("#rc-pb-preset-list li")).to_have_count(9, timeout=10_000)
        expect(form.locator('#rc-pb-preset-list [data-preset="RC_POSTPONED"]')).to_contain_text(
            "если в воронке есть стадия «Отложено»"
        )
        expect(form.locator('[data-preset="RC_PB_LEAD"] .rc-pb-preset-steps')).to_contain_text(
            "Взять обращение в работу в течение 15 минут"
        )
        form.get_by_label("Воронка").select_option(label="Опт")
        form.get_by_role("button", name="Установить шаблон в воронку").click()
        expect(page.locator("#rc-pb-preset-result")).to_have_text("Шаблон установлен: стадий создано — 7.")
        stage_names = [row["NAME"] for row in sandbox_stages(harness, int(category))]
        assert stage_names.index("Новое обращение") < stage_names.index("Счёт и оплата")
        offer = page.locator(f'[data-pipeline="{category}"] [data-stage-row="C{category}:RC_PB_OFFER"]')
        expect(offer.locator("h3")).to_have_text("Коммерческое предложение")
        expect(offer.get_by_label("Шаги и действия")).to_have_value(
            playbook.PRESET[3].steps.ru  # «Коммерческое предложение»
        )

        # The admin writes the steps of a stage of the main pipeline and saves.
        executing = page.locator('[data-pipeline="0"] [data-stage-row="EXECUTING"]')
        executing.get_by_label("Шаги и действия").fill("Позвонить ЛПР\nОтправить договор")
        executing.get_by_label("Критерии перехода на следующую стадию").fill("Договор подписан")
        form.get_by_role("button", name="Сохранить").click()
        expect(page.locator("#rc-pb-result")).to_have_text("Настройки сохранены.")
        db.session.expire_all()
        stored = playbook.stage_playbook(harness.our_portal())
        assert stored["EXECUTING"] == {"steps": "Позвонить ЛПР\nОтправить договор", "criteria": "Договор подписан"}
        assert stored[f"C{category}:RC_PB_OFFER"]["criteria"].startswith("КП получено ЛПР")


def sandbox_stages(harness: B24, category: int) -> list[dict]:
    with harness.sandbox.lock:
        return list(harness.portal.stages(category))


def test_the_b24_deal_tab_shows_the_steps_and_what_the_deal_lacks(app, live_server, page: Page):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        ours = harness.install()
        invoice = invoice_field(harness)
        playbook.update_stage_playbook(
            ours, {"PREPARATION": {"steps": "Выяснить бюджет\nНазначить встречу", "criteria": "Бюджет подтверждён"}}
        )
        requirements.update_stage_requirements(ours, {"PREPAYMENT_INVOICE": {"required": [invoice]}})
        db.session.commit()
        deal_id = new_deal(harness, MANAGER, stage="PREPARATION")
        open_deal_tab(page, live_server.url, harness, MANAGER, deal_id)
        tab = page.locator("#rc-playbook")
        expect(tab.locator("h2")).to_have_text("Стадия сделки: что делать")
        expect(tab.locator("#rc-pb-steps li")).to_have_text(["Выяснить бюджет", "Назначить встречу"], timeout=10_000)
        expect(tab.locator("#rc-pb-criteria")).to_have_text("Бюджет подтверждён")
        expect(tab.locator("#rc-pb-next")).not_to_be_empty()
        expect(tab.locator('[data-missing="fields"]')).to_have_text("Не заполнены поля: «Номер счёта»")
        expect(tab.locator("#rc-pb-ready")).to_be_hidden()


def test_the_amo_lead_tab_shows_the_steps_of_the_leads_status(amo_installed: Amo, live_server, page: Page, tmp_path):  # noqa: F811
    amo = amo_installed
    amo.app.config["PUBLIC_URL"] = BACKEND
    account = amo.account
    with amo.sandbox.lock:  # the widget stub opens lead 5: make it a lead of the main pipeline's first status
        pipeline = account.pipelines[account.main_pipeline()]
        first = min((s for s in pipeline["statuses"].values() if s["type"] == 0), key=lambda s: s["sort"])
    lead_id = amo.sandbox.act(account, MANAGER).create_lead("Поставка станков", status_id=first["id"])
    with amo.sandbox.lock:
        account.leads[5] = {**account.leads.pop(lead_id), "id": 5}
    portal = amo.our_portal()
    playbook.update_stage_playbook(
        portal, {str(first["id"]): {"steps": "Позвонить клиенту", "criteria": "Контакт есть"}}
    )
    db.session.commit()
    token = amo.sandbox.widget_token(account, MANAGER, "https://app.example.test")
    lead_page(page, live_server.url, [token], tmp_path)
    page.get_by_text("Проверка отказа").click()
    frame = page.frame_locator(f"#{WIDGET_CODE} iframe.rc-widget-frame")
    expect(frame.locator("#rc-pb-stage")).to_have_text(first["name"], timeout=10_000)
    expect(frame.locator("#rc-pb-steps li")).to_have_text(["Позвонить клиенту"])
    expect(frame.locator("#rc-pb-criteria")).to_have_text("Контакт есть")


def test_the_english_settings_page_shows_the_preset_in_english(app, live_server, page: Page):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install()
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=en", harness.frame(ADMIN))
        page.get_by_role("tab", name="Settings").click()
        form = page.locator("#rc-pb-settings")
        expect(form.locator("legend").first).to_have_text("Seller's steps and criteria to move on")
        expect(form.locator("#rc-pb-preset legend")).to_have_text("Preset: a B2B sale in 9 statuses")
        expect(form.locator("#rc-pb-preset .rc-note").first).to_contain_text("An example written for this app")
        items = form.locator("#rc-pb-preset-list li")
        expect(items).to_have_count(9, timeout=10_000)
        expect(items.locator(".rc-pb-preset-name")).to_have_text([item.name.en for item in playbook.PRESET])
        expect(form.locator('[data-preset="RC_PB_QUALIFY"] .rc-pb-preset-criteria')).to_have_text(
            "Criteria to move to the next stage: " + playbook.PRESET[1].criteria.en
        )
        expect(form.locator('[data-preset="RC_POSTPONED"]')).to_contain_text("if the pipeline has the Postponed stage")
        assert not re.search("[а-яё]", items.all_inner_texts().__str__(), re.IGNORECASE)  # nothing left in Russian
        form.get_by_role("button", name="Install the preset into the pipeline").click()
        expect(page.locator("#rc-pb-preset-result")).to_have_text("Preset installed: stages created: 7.")


def test_the_english_b24_deal_tab_of_a_deal_in_conditional_refusal(app, live_server, page: Page):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install()
        deal_id, _case = case_in_review(harness, manager=MANAGER)
        open_deal_tab(page, live_server.url, harness, MANAGER, deal_id, lang="en")
        tab = page.locator("#rc-playbook")
        expect(tab.locator("h2")).to_have_text("The deal's stage: what to do")
        waiting = tab.locator('#rc-pb-waiting[data-kind="refusal"]')
        expect(waiting.locator("h3").first).to_have_text("The deal is under QA review", timeout=10_000)
        expect(waiting.locator('[data-fact="state"] dd')).to_have_text("Awaiting review")
        expect(waiting.locator('[data-fact="comment"] dd')).to_have_text("Клиент сказал, что дорого")
        expect(waiting.locator("#rc-pb-waiting-next li").first).to_have_text(
            "Now: a QA officer listens to the deal's call recordings and checks the refusal reason."
        )
        expect(tab.locator("#rc-pb-state")).to_be_empty()  # not "no steps are set"
        expect(tab.locator("#rc-pb-next-row")).to_be_hidden()


def test_the_amo_lead_tab_of_a_postponed_lead(amo_installed: Amo, live_server, page: Page, tmp_path):  # noqa: F811
    amo = amo_installed
    amo.app.config["PUBLIC_URL"] = BACKEND
    account = amo.account
    portal = amo.our_portal()
    main = str(account.main_pipeline())
    postponed = postpone.known_stage(portal, main)
    assert postponed, "the installer puts «Отложено» into every pipeline"
    lead_id = amo.sandbox.act(account, MANAGER).create_lead("Поставка станков", status_id=int(postponed))
    with amo.sandbox.lock:  # the widget stub opens lead 5
        account.leads[5] = {**account.leads.pop(lead_id), "id": 5}
    day = datetime.now(UTC).date() + timedelta(days=10)
    db.session.add(
        Postponement(
            portal_id=portal.id,
            deal_id="5",
            title="Поставка станков",
            pipeline_id=main,
            manager_id=str(MANAGER),
            reason="no_need_now",
            due_date=day,
        )
    )
    db.session.commit()
    token = amo.sandbox.widget_token(account, MANAGER, "https://app.example.test")
    lead_page(page, live_server.url, [token], tmp_path)
    page.get_by_text("Проверка отказа").click()
    frame = page.frame_locator(f"#{WIDGET_CODE} iframe.rc-widget-frame")
    waiting = frame.locator('#rc-pb-waiting[data-kind="postponed"]')
    expect(waiting.locator("h3").first).to_have_text("Сделка отложена", timeout=10_000)
    expect(waiting.locator('[data-fact="reason"] dd')).to_have_text("Нет потребности сейчас")
    expect(waiting.locator('[data-fact="date"] dd')).to_have_text(day.strftime("%d.%m.%Y"))
    shown = day.strftime("%d.%m.%Y")
    expect(waiting.locator("#rc-pb-waiting-next li").first).to_have_text(
        f"{shown} ответственный за сделку получит задачу «Вернуться к сделке» — свяжитесь с клиентом."
    )
    expect(frame.locator("#rc-pb-state")).to_be_empty()
