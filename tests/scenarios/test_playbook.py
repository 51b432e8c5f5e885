"""Stage playbook on both CRMs: the admin installs the nine-status preset into a new pipeline (its working stages
are created in the CRM, in order, before the app's Conditional refusal and «Отложено» stages, «Отложено» filled in
but never duplicated; a second install creates nothing), edits the steps and criteria per stage, and the deal's
tab shows, for the deal's current stage, the steps, the criteria and what this deal still lacks for the next
stage; for a deal in «Условный отказ» or «Отложено», what applies there. The tab's token names its deal: the
playbook of any other deal is refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, utcnow
from app.core.security import Identity, issue_token
from app.crm.port import client_for
from app.domain import playbook, postpone, reports, stages, taskcontrol
from tests.scenarios.driver import ADMIN, MANAGER, OTHER_MANAGER, QA, B24Driver, CrmDriver
from tests.scenarios.steps import Reviewer, case_in_review

URL = "/api/stage-playbook"
PRESET_URL = "/api/stage-playbook/preset"
WORKING = [item.name.ru for item in playbook.PRESET if not item.won and not item.postponed]
REFUSAL = "Условный отказ"
POSTPONED = "Отложено"
INVOICE = "Номер счёта"


def tab(crm: CrmDriver, user: int, deal: str, admin: bool = False) -> dict[str, str]:
    """The token of the deal card's tab the CRM opened for `user` on `deal`."""
    return {"X-RC-Token": issue_token(Identity(crm.portal().id, str(user), is_admin=admin, deal_id=deal))}


def playbook_of(crm: CrmDriver, deal: str, user: int = MANAGER, lang: str = "ru") -> Any:
    return crm.client.get(f"/api/deals/{deal}/playbook", headers={**tab(crm, user, deal), "X-RC-Lang": lang})


def install_preset(crm: CrmDriver, pipeline: str, user: int = ADMIN, admin: bool = True) -> Any:
    return crm.client.post(PRESET_URL, json={"pipeline_id": pipeline}, headers=crm.token(user, admin=admin))


def ref(crm: CrmDriver, stage_id: str) -> str:
    """How the driver names a stage of a new pipeline: its code on Bitrix24, its id on amoCRM."""
    return stage_id.split(":")[-1] if isinstance(crm, B24Driver) else stage_id


def new_pipeline_with_refusal_stage(crm: CrmDriver) -> str:
    """A pipeline the admin added after install, already noticed by the app (it has «Условный отказ»)."""
    pipeline = crm.new_pipeline()
    stages.ensure_refusal_stage(crm.portal(), client_for(crm.portal()), pipeline)
    return pipeline


def test_the_preset_creates_its_stages_in_a_new_pipeline_in_order_once(crm: CrmDriver):
    pipeline = new_pipeline_with_refusal_stage(crm)
    assert not set(WORKING) & set(crm.stage_names(pipeline))

    answer = install_preset(crm, pipeline)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()["settings"]
    assert len(body["created"]) == 7
    names = crm.stage_names(pipeline)
    placed = [names.index(name) for name in WORKING]
    assert placed == sorted(placed), names  # in the preset's order
    assert names.index(REFUSAL) > placed[-1], names  # the app's own stages after them
    assert names.index("Отложено") > names.index(REFUSAL), names
    assert names.count(REFUSAL) == 1 and names.count("Отложено") == 1  # «Отложено» is the app's, not a copy

    # Every preset stage, and the pipeline's won stage, has its steps and criteria.
    texts = playbook.stage_playbook(crm.portal())
    ids = body["stage_ids"]
    assert set(ids) == {item.code for item in playbook.PRESET}
    assert ids["RC_POSTPONED"] == postpone.known_stage(crm.portal(), pipeline)
    assert texts[ids["RC_PB_OFFER"]]["criteria"].startswith("КП получено ЛПР")
    assert "дату, когда вернуться" in texts[ids["RC_POSTPONED"]]["steps"]
    assert "Попросить отзыв" in texts[ids["WON"]]["steps"]
    audit = db.session.scalars(
        sa.select(AuditEntry).where(AuditEntry.attempted == "install stage playbook preset")
    ).one()
    assert audit.actor == str(ADMIN) and audit.details["pipeline_id"] == pipeline

    again = install_preset(crm, pipeline)
    assert again.status_code == 200 and again.get_json()["settings"]["created"] == []
    assert [crm.stage_names(pipeline).count(name) for name in [*WORKING, "Отложено"]] == [1] * 8


def test_only_an_admin_installs_the_preset_into_a_pipeline_that_exists(crm: CrmDriver):
    pipeline = crm.new_pipeline()
    assert install_preset(crm, pipeline, user=MANAGER, admin=False).status_code == 403
    missing = install_preset(crm, "987654")
    assert missing.status_code == 400 and "pipeline_id" in missing.get_json()["fields"]
    assert not set(WORKING) & set(crm.stage_names(pipeline))


def test_the_admin_edits_steps_and_criteria_per_stage(crm: CrmDriver):
    late = crm.stage_id("late working")
    admin = crm.token(ADMIN, admin=True)
    page = crm.client.get(URL, headers=admin)
    assert page.status_code == 200
    main = next(p for p in page.get_json()["pipelines"] if p["id"] == crm.pipeline_id("main"))
    assert late in [stage["id"] for stage in main["stages"]]
    assert [item["name"] for item in page.get_json()["preset"]][:2] == ["Новое обращение", "Квалификация"]

    wanted = {late: {"steps": "Позвонить ЛПР\nОтправить КП", "criteria": "КП согласовано"}}
    saved = crm.client.put(URL, json={"stage_playbook": wanted}, headers=admin)
    assert saved.status_code == 200, saved.get_json()
    db.session.expire_all()
    assert playbook.stage_playbook(crm.portal()) == wanted
    row = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.attempted == "change stage playbook")).one()
    assert row.details["changed"][f"stage_playbook.{late}"]["to"] == wanted[late]

    bad = crm.client.put(URL, json={"stage_playbook": {late: {"steps": 5}, "NO_SUCH": {"steps": "x"}}}, headers=admin)
    assert bad.status_code == 400
    assert late in bad.get_json()["fields"]["stage_playbook"]
    unknown = crm.client.put(URL, json={"stage_playbook": {"NO_SUCH_STAGE": {"steps": "x"}}}, headers=admin)
    assert unknown.status_code == 400 and "NO_SUCH_STAGE" in unknown.get_json()["fields"]["stage_playbook"]
    assert crm.client.put(URL, json={"stage_playbook": {}}, headers=crm.token(MANAGER)).status_code == 403
    db.session.expire_all()
    assert playbook.stage_playbook(crm.portal()) == wanted


def test_the_deal_tab_shows_the_stage_steps_and_what_this_deal_still_lacks(crm: CrmDriver):
    pipeline = new_pipeline_with_refusal_stage(crm)
    ids = install_preset(crm, pipeline).get_json()["settings"]["stage_ids"]
    invoice = crm.add_deal_field(INVOICE)
    required = {"stage_requirements": {ids["RC_PB_CONTRACT"]: {"required": [invoice]}}}
    admin = crm.token(ADMIN, admin=True)
    assert crm.client.put("/api/stage-requirements", json=required, headers=admin).status_code == 200
    deal = crm.new_deal(pipeline=pipeline, stage=ref(crm, ids["RC_PB_NEGOTIATE"]), title="Поставка станков")
    taskcontrol.update_taskcontrol_settings(crm.portal(), {"require_task_to_advance": True})
    db.session.commit()

    view = playbook_of(crm, deal)
    assert view.status_code == 200, view.get_json()
    body = view.get_json()
    assert body["stage"]["name"] == "Переговоры и согласование"
    assert body["steps"].startswith("Согласовать цену, объём, сроки")
    assert body["criteria"].startswith("Условия согласованы с ЛПР")
    assert body["waiting"] is None
    assert body["next_stage"] == {"id": ids["RC_PB_CONTRACT"], "name": "Договор"}
    assert body["missing_fields"] == [{"code": invoice, "label": INVOICE}]
    assert (body["needs_task"], body["has_open_task"], body["ready"]) == (True, False, False)

    crm.fill_field(deal, invoice, "С-118", by=MANAGER)
    crm.create_task(deal, MANAGER, utcnow() + timedelta(days=2), "Отправить договор", by=MANAGER)
    crm.settle()
    body = playbook_of(crm, deal).get_json()
    assert (body["missing_fields"], body["has_open_task"], body["ready"]) == ([], True, True)

    # The last working stage leads to won (never to «Отложено»); a deal the CRM does not have is a 404.
    last = crm.new_deal(pipeline=pipeline, stage=ref(crm, ids["RC_PB_INVOICE"]))
    body = playbook_of(crm, last).get_json()
    assert body["next_stage"]["id"] == ids["WON"]
    assert playbook_of(crm, "99999999").status_code == 404
    assert crm.client.get(f"/api/deals/{deal}/playbook").status_code == 401


def test_a_token_reads_only_the_playbook_of_the_deal_whose_tab_it_was_issued_for(crm: CrmDriver):
    mine = crm.new_deal(manager=MANAGER, stage="working", title="Своя сделка")
    other = crm.new_deal(manager=OTHER_MANAGER, stage="working", title="Чужая сделка")
    assert playbook_of(crm, mine).status_code == 200
    # The tab of his own deal, asked about another deal: refused, nothing of that deal in the answer.
    crafted = crm.client.get(f"/api/deals/{other}/playbook", headers=tab(crm, MANAGER, mine))
    assert crafted.status_code == 403
    assert "Чужая" not in crafted.get_data(as_text=True)
    # A token of the main page (no deal) and an admin's main-page token are refused too.
    assert crm.client.get(f"/api/deals/{other}/playbook", headers=crm.token(MANAGER)).status_code == 403
    assert crm.client.get(f"/api/deals/{other}/playbook", headers=crm.token(ADMIN, admin=True)).status_code == 403


def test_a_deal_in_conditional_refusal_shows_the_review_and_what_happens_next(crm: CrmDriver):
    deal, _case = case_in_review(crm)
    body = playbook_of(crm, deal).get_json()
    assert body["stage"]["name"] == REFUSAL
    assert body["next_stage"] is None and body["ready"] is False
    waiting = body["waiting"]
    assert waiting["kind"] == "refusal" and waiting["title"] == "Сделка на проверке ОКК"
    facts = {fact["key"]: fact["value"] for fact in waiting["facts"]}
    assert facts["state"] == "Ожидает проверки"
    assert facts["reason"] == "Дорого"
    assert facts["comment"] == "Клиент сказал, что дорого"
    assert waiting["next"][0].startswith("Сейчас: сотрудник ОКК прослушивает записи")
    assert any("штраф в размере стоимости лида" in line for line in waiting["next"])
    assert any("проверка будет отозвана" in line for line in waiting["next"])

    english = playbook_of(crm, deal, lang="en").get_json()["waiting"]
    assert english["title"] == "The deal is under QA review"
    assert {fact["key"]: fact["value"] for fact in english["facts"]}["state"] == "Awaiting review"

    # QA sees the facts; another manager who got this deal's tab sees what happens, not the client's words.
    assert playbook_of(crm, deal, user=QA).get_json()["waiting"]["facts"]
    stranger = playbook_of(crm, deal, user=OTHER_MANAGER).get_json()["waiting"]
    assert stranger["facts"] == [] and stranger["next"] == waiting["next"]


def test_after_the_recordings_fail_the_reason_the_waiting_block_says_a_call_is_needed_like_the_review(
    crm: CrmDriver,
):
    """Walk with data (#20): after step 1 the review's header said «нужен звонок клиенту» while the block below
    still said «Ожидает проверки» and «ОКК прослушивает записи»."""
    deal, _case = case_in_review(crm)
    Reviewer(crm, QA, deal).act("recordings_not_confirmed")
    waiting = playbook_of(crm, deal).get_json()["waiting"]
    facts = {fact["key"]: fact["value"] for fact in waiting["facts"]}
    assert facts["state"] == "Записи не подтвердили причину — нужен звонок клиенту"
    assert waiting["next"][0].startswith("Сейчас: записи причину не подтвердили — ОКК звонит клиенту")
    english = playbook_of(crm, deal, lang="en").get_json()["waiting"]
    assert {fact["key"]: fact["value"] for fact in english["facts"]}["state"].startswith("Recordings did not confirm")


def test_a_postponed_deal_shows_the_reason_the_return_date_and_what_happens_on_it(crm: CrmDriver):
    deal = crm.new_deal(manager=MANAGER, stage="working", title="Поставка станков")
    day = reports.today(crm.portal()) + timedelta(days=4)
    crm.fill_postpone(deal, by=MANAGER, reason="no_money_now", day=day)
    crm.settle()
    crm.move(deal, "postponed", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal) == "postponed"
    shown = day.strftime("%d.%m.%Y")

    waiting = playbook_of(crm, deal).get_json()["waiting"]
    assert waiting["kind"] == "postponed" and waiting["title"] == "Сделка отложена"
    facts = {fact["key"]: fact["value"] for fact in waiting["facts"]}
    assert (facts["reason"], facts["date"]) == ("Нет денег сейчас", shown)
    assert waiting["next"][0].startswith(f"{shown} ответственный за сделку получит задачу «Вернуться к сделке»")
    assert waiting["next"][1].startswith("Сделка останется в «Отложено»")

    # With a return stage set for the pipeline, the tab names it.
    portal = crm.portal()
    back = crm.stage_id("late working")
    postpone.update_return_stages(portal, {crm.pipeline_id("main"): back})
    db.session.commit()
    waiting = playbook_of(crm, deal).get_json()["waiting"]
    assert waiting["next"][1] == f"В тот же день сделка вернётся на стадию «{stage_name(crm, back)}»."
    english = playbook_of(crm, deal, lang="en").get_json()["waiting"]
    assert english["next"][0].startswith(f'{shown}: the deal\'s responsible gets the task "Return to the deal"')


def stage_name(crm: CrmDriver, stage_id: str) -> str:
    pipeline = next(p for p in client_for(crm.portal()).list_pipelines() if p.id == crm.pipeline_id("main"))
    return next(stage.name for stage in pipeline.stages if stage.id == stage_id)


def test_the_preset_keeps_postponed_with_conditional_refusal_after_the_working_stages(crm: CrmDriver):
    # A pipeline the app noticed after install has both of the app's stages: «Условный отказ», then «Отложено».
    pipeline = new_pipeline_with_refusal_stage(crm)
    assert crm.stage_names(pipeline).index(REFUSAL) < crm.stage_names(pipeline).index(POSTPONED)

    answer = install_preset(crm, pipeline)
    assert answer.status_code == 200, answer.get_json()
    names = crm.stage_names(pipeline)
    last_working = max(names.index(name) for name in WORKING)
    assert last_working < names.index(REFUSAL) < names.index(POSTPONED), names
    assert names.count(POSTPONED) == 1

    # In the deal's tab the last working stage leads on to won, never to «Отложено».
    ids = answer.get_json()["settings"]["stage_ids"]
    deal = crm.new_deal(manager=MANAGER, stage=ref(crm, ids["RC_PB_INVOICE"]), pipeline=pipeline)
    crm.settle()
    view = crm.client.get(f"/api/deals/{deal}/playbook", headers=tab(crm, MANAGER, deal))
    assert view.status_code == 200, view.get_json()
    assert view.get_json()["next_stage"]["id"] == ids["WON"]
