"""A pipeline created after install: the app adds its Conditional refusal stage when it first notices the
pipeline (the first deal event from it, or the reconciliation; neither CRM has an event for a new pipeline),
before the guard decides anything there."""

from sqlalchemy.orm.attributes import flag_modified

from app.core.db import db
from app.domain.guard import refusal_stage_for
from app.domain.reconcile import reconcile_portal
from tests.scenarios.driver import MANAGER, CrmDriver, qa_tasks
from tests.scenarios.test_guard import audit_rows, cases

REFUSAL = "Условный отказ"


def test_a_deal_closed_as_lost_in_a_new_pipeline_lands_in_its_conditional_refusal(crm: CrmDriver):
    pipeline = crm.new_pipeline()
    assert REFUSAL not in crm.stage_names(pipeline)
    crm.drop_next_delivery()  # the app first hears of this pipeline when the deal is closed
    deal_id = crm.new_deal(pipeline=pipeline, stage="working")
    crm.fill_refusal(deal_id, MANAGER, "price", "Клиент сказал, что дорого")
    crm.settle()
    crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()
    assert crm.stage_names(pipeline).count(REFUSAL) == 1
    assert (crm.pipeline_of(deal_id), crm.stage_of(deal_id)) == (pipeline, "refusal")
    assert refusal_stage_for(crm.portal(), pipeline) == crm.stage_id("refusal", pipeline)
    [case] = cases(deal_id)
    assert case.pipeline_id == pipeline and case.reason == "price"
    [task] = qa_tasks(crm, deal_id)
    assert str(task.responsible) == case.qa_user_id
    [notice] = crm.notices(MANAGER)
    assert REFUSAL in notice and "Дорого" in notice
    assert any(row.outcome == "moved to conditional refusal" for row in audit_rows(deal_id))


def test_without_a_reason_the_deal_goes_back_and_the_notice_names_a_stage_that_exists(crm: CrmDriver):
    pipeline = crm.new_pipeline()
    deal_id = crm.new_deal(pipeline=pipeline, stage="late working")
    crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()
    assert (crm.pipeline_of(deal_id), crm.stage_of(deal_id)) == (pipeline, "late working")
    assert cases(deal_id) == []
    [notice] = crm.notices(MANAGER)
    assert "нельзя закрыть" in notice and REFUSAL in notice
    assert crm.stage_names(pipeline).count(REFUSAL) == 1
    crm.fill_refusal(deal_id, MANAGER, "price", "Дорого")
    crm.move(deal_id, "refusal", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal_id) == "refusal"
    assert len(cases(deal_id)) == 1


def test_reconciliation_adds_the_stage_to_a_pipeline_nobody_used_yet(crm: CrmDriver):
    pipeline = crm.new_pipeline()
    counts = reconcile_portal(crm.portal().id)
    assert counts["pipelines"] == 1
    assert crm.stage_names(pipeline).count(REFUSAL) == 1
    assert refusal_stage_for(crm.portal(), pipeline) == crm.stage_id("refusal", pipeline)
    assert reconcile_portal(crm.portal().id)["pipelines"] == 0, "a known pipeline is left alone"


def test_a_stage_the_app_forgot_is_found_in_the_crm_not_created_twice(crm: CrmDriver):
    """Two workers noticing one pipeline: the second finds the first one's stage by the CRM's own look-up."""
    pipeline = crm.new_pipeline()
    reconcile_portal(crm.portal().id)
    stage = crm.stage_id("refusal", pipeline)
    portal = crm.portal()
    stages = dict(portal.settings["refusal_stages"])
    del stages[pipeline]
    portal.settings = {**portal.settings, "refusal_stages": stages}
    flag_modified(portal, "settings")
    db.session.commit()
    assert reconcile_portal(portal.id)["pipelines"] == 1
    assert crm.stage_names(pipeline).count(REFUSAL) == 1
    assert refusal_stage_for(crm.portal(), pipeline) == stage
