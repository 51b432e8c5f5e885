"""Stage requirements and the next-step rule on both CRMs: an admin sets the fields a stage requires (settings
page, CLI); a move forward into it without them comes back with a notice naming them by their labels, with them
filled in it stays; robots are held to it; moves back pass; refused moves are audited and counted for the
reports; with the next-step rule on, a deal without an open task cannot be won."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from app.cli.settings import settings_cli
from app.core.db import db
from app.core.models import AuditEntry, utcnow
from app.domain import requirements, taskcontrol
from tests.scenarios.driver import ADMIN, HEAD, MANAGER, CrmDriver

URL = "/api/stage-requirements"
INVOICE = "Номер счёта"


def set_requirements(crm: CrmDriver, wanted: dict[str, list[str]]) -> Any:
    """The admin saves the stage requirements on the settings page."""
    body = {"stage_requirements": {stage: {"required": codes} for stage, codes in wanted.items()}}
    return crm.client.put(URL, json=body, headers=crm.token(ADMIN, admin=True))


def refusals(deal_id: str) -> list[AuditEntry]:
    db.session.expire_all()
    query = sa.select(AuditEntry).where(AuditEntry.deal_id == deal_id, AuditEntry.attempted == requirements.ATTEMPTED)
    return list(db.session.scalars(query))


def test_a_move_without_the_required_fields_comes_back_naming_them_and_with_them_it_stays(crm: CrmDriver):
    invoice = crm.add_deal_field(INVOICE)
    late = crm.stage_id("late working")
    # The admin picks the stage's fields from the CRM's list, by their labels.
    page = crm.client.get(URL, headers=crm.token(ADMIN, admin=True))
    assert page.status_code == 200
    labels = {field["code"]: field["label"] for field in page.get_json()["fields"]}
    assert labels[invoice] == INVOICE and labels[crm.amount_field] == crm.amount_label
    main = next(p for p in page.get_json()["pipelines"] if p["id"] == crm.pipeline_id("main"))
    assert late in [stage["id"] for stage in main["stages"]]
    saved = set_requirements(crm, {late: [crm.amount_field, invoice]})
    assert saved.status_code == 200, saved.get_json()

    deal = crm.new_deal(stage="working", title="Поставка станков", amount=0)
    crm.move(deal, "late working", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal) == "working"
    [notice] = crm.notices(MANAGER)
    assert "«Поставка станков» нельзя перевести на стадию" in notice
    assert f"«{crm.amount_label}», «{INVOICE}»" in notice and crm.deal_url(deal) in notice
    [row] = refusals(deal)
    assert row.details["missing"] == [crm.amount_field, invoice] and row.details["violation"] is True

    crm.set_amount(deal, 250000, by=MANAGER)
    crm.fill_field(deal, invoice, "С-118", by=MANAGER)
    crm.settle()
    crm.move(deal, "late working", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal) == "late working"
    assert len(crm.notices(MANAGER)) == 1

    # Counted for the heads' report, per manager and stage.
    now = utcnow()
    [count] = requirements.refusal_counts(crm.portal().id, now - timedelta(hours=1), now + timedelta(hours=1))
    assert (count["manager_id"], count["stage_id"], count["count"]) == (str(MANAGER), late, 1)


def test_a_robot_is_held_to_the_rule_and_a_move_back_passes(crm: CrmDriver):
    invoice = crm.add_deal_field(INVOICE)
    ahead = crm.new_deal(stage="late working")
    deal = crm.new_deal(stage="working")
    saved = set_requirements(crm, {crm.stage_id("late working"): [invoice], crm.stage_id("working"): [invoice]})
    assert saved.status_code == 200
    crm.move(deal, "late working", by=None)
    crm.settle()
    assert crm.stage_of(deal) == "working"
    [notice] = crm.notices(MANAGER)  # the robot's refusal goes to the deal's responsible
    assert f"«{INVOICE}»" in notice
    assert [row.actor for row in refusals(deal)] == ["automation"]

    # A move back into a stage with requirements is not checked.
    crm.move(deal, "new", by=MANAGER)
    crm.settle()
    crm.move(ahead, "working", by=MANAGER)
    crm.settle()
    assert crm.stage_of(ahead) == "working" and refusals(ahead) == []


def test_a_deal_created_straight_into_the_stage_without_its_fields_starts_at_the_first_stage(crm: CrmDriver):
    invoice = crm.add_deal_field(INVOICE)
    saved = set_requirements(crm, {crm.stage_id("late working"): [invoice]})
    assert saved.status_code == 200
    imported = crm.new_deal(stage="late working", title="Импорт из 1С")
    assert crm.stage_of(imported) == "new"
    [notice] = crm.notices(MANAGER)
    assert "«Импорт из 1С» нельзя перевести на стадию" in notice and f"«{INVOICE}»" in notice
    # A deal created in the first stage, or in a stage with no requirements, is left alone.
    assert crm.stage_of(crm.new_deal(stage="working")) == "working"


def test_bad_requirements_get_a_clear_message_and_only_admins_set_them(crm: CrmDriver):
    late = crm.stage_id("late working")
    bad = set_requirements(crm, {late: ["NO_SUCH_FIELD"]})
    assert bad.status_code == 400
    assert "no deal field NO_SUCH_FIELD" in json.dumps(bad.get_json(), ensure_ascii=False)
    wrong = crm.client.put(URL, json={"stage_requirements": {late: {"required": "OPPORTUNITY"}}},
                           headers=crm.token(ADMIN, admin=True))  # fmt: skip
    assert wrong.status_code == 400 and late in wrong.get_json()["fields"]["stage_requirements"]
    assert crm.client.put(URL, json={"stage_requirements": {}}, headers=crm.token(MANAGER)).status_code == 403
    assert crm.client.get(URL, headers=crm.token(HEAD)).status_code == 403


def test_the_cli_sets_stage_requirements(crm: CrmDriver):
    invoice = crm.add_deal_field(INVOICE)
    late = crm.stage_id("late working")
    runner = crm.app.test_cli_runner()
    value = json.dumps({late: {"required": [crm.amount_field, invoice]}})
    result = runner.invoke(settings_cli, ["set", crm.portal().external_id, f"stage_requirements={value}"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stage_requirements"] == {late: {"required": [crm.amount_field, invoice]}}
    db.session.expire_all()
    assert requirements.required_for(crm.portal(), late) == [crm.amount_field, invoice]
    bad = runner.invoke(settings_cli, ["set", crm.portal().external_id, 'stage_requirements={"X": {"required": 1}}'])
    assert bad.exit_code != 0 and "required must be a list" in bad.output
    shown = runner.invoke(settings_cli, ["show", str(crm.portal().id)])
    assert json.loads(shown.output)["stage_requirements"][late]["required"] == [crm.amount_field, invoice]

    deal = crm.new_deal(stage="working")
    crm.move(deal, "late working", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal) == "working"


def test_with_the_next_step_rule_a_deal_without_a_task_cannot_be_won(crm: CrmDriver):
    taskcontrol.update_taskcontrol_settings(crm.portal(), {"require_task_to_advance": True})
    db.session.commit()
    deal = crm.new_deal(stage="late working", title="Поставка станков")
    crm.move(deal, "won", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal) == "late working"
    [notice] = crm.notices(MANAGER)
    assert "«Поставка станков» нельзя закрыть как успешную без открытой задачи" in notice

    crm.create_task(deal, MANAGER, utcnow() + timedelta(days=2), "Передать в производство", by=MANAGER)
    crm.move(deal, "won", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal) == "won"
