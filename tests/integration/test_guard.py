"""The stage guard through the real handlers, a real worker and the sandbox portal."""

import pytest
import sqlalchemy as sa

from app.db import db
from app.models import AuditEntry, DealSnapshot, InboxItem, RefusalCase
from app.reconcile import reconcile_portal
from tests.integration.b24 import B24, configure_guard, fill_refusal, new_deal

MANAGER, OTHER_MANAGER, QA, HEAD = 2, 3, 7, 9


@pytest.fixture
def guarded(installed: B24) -> B24:
    configure_guard(installed.our_portal())
    return installed


def cases(deal_id: int) -> list[RefusalCase]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(RefusalCase).where(RefusalCase.deal_id == str(deal_id))))


def our_tasks(b24: B24, deal_id: int) -> list[dict]:
    status, body = b24.sandbox.call(
        b24.portal,
        "tasks.task.list",
        {"filter": {"UF_CRM_TASK": f"D_{deal_id}"}, "select": ["ID", "RESPONSIBLE_ID", "TITLE"]},
    )
    assert status == 200
    return body["result"]["tasks"]


def notices(b24: B24, user_id: int) -> list:
    return b24.sandbox.notifications(b24.portal, user_id)


def audit_rows(deal_id: int) -> list[AuditEntry]:
    return list(
        db.session.scalars(sa.select(AuditEntry).where(AuditEntry.deal_id == str(deal_id)).order_by(AuditEntry.id))
    )


def test_manager_closing_as_lost_with_reason_lands_in_conditional_refusal(guarded: B24):
    deal_id = new_deal(guarded)
    fill_refusal(guarded, deal_id, MANAGER, "price", "Клиент сказал, что дорого")
    guarded.settle()
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "LOSE")
    guarded.settle()
    assert guarded.stage(deal_id) == "RC_REFUSAL"
    [case] = cases(deal_id)
    assert case.state == RefusalCase.AWAITING_REVIEW
    assert case.manager_id == str(MANAGER)
    assert case.reason == "price"
    assert case.previous_stage_id == "PREPARATION"
    assert case.qa_user_id in ("7", "8")
    [task] = our_tasks(guarded, deal_id)
    assert str(task["responsibleId"]) == case.qa_user_id
    [notice] = notices(guarded, MANAGER)
    assert "Условный отказ" in notice.message and "Дорого" in notice.message
    assert any(row.outcome == "moved to conditional refusal" for row in audit_rows(deal_id))


def test_manager_closing_as_lost_without_reason_goes_back_with_a_notice(guarded: B24):
    deal_id = new_deal(guarded, stage="EXECUTING")
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "LOSE")
    guarded.settle()
    assert guarded.stage(deal_id) == "EXECUTING"
    assert cases(deal_id) == []
    [notice] = notices(guarded, MANAGER)
    assert "нельзя закрыть" in notice.message
    assert audit_rows(deal_id)[-1].outcome == "reverted"


def test_entering_conditional_refusal_without_comment_goes_back(guarded: B24):
    deal_id = new_deal(guarded)
    fill_refusal(guarded, deal_id, MANAGER, "price", comment="")
    guarded.settle()
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "RC_REFUSAL")
    guarded.settle()
    assert guarded.stage(deal_id) == "PREPARATION"
    assert cases(deal_id) == []
    assert "причина отказа и комментарий" in notices(guarded, MANAGER)[0].message


def test_entering_conditional_refusal_with_reason_and_comment_opens_a_case(guarded: B24):
    deal_id = new_deal(guarded)
    fill_refusal(guarded, deal_id, MANAGER, "no_budget", "Бюджет урезали")
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "RC_REFUSAL")
    guarded.settle()
    assert guarded.stage(deal_id) == "RC_REFUSAL"
    assert [c.state for c in cases(deal_id)] == [RefusalCase.AWAITING_REVIEW]
    assert len(our_tasks(guarded, deal_id)) == 1


@pytest.mark.parametrize("reviewer", [QA, HEAD])
def test_qa_and_heads_may_close_as_lost(guarded: B24, reviewer: int):
    deal_id = new_deal(guarded)
    guarded.sandbox.act(guarded.portal, reviewer).move_deal(deal_id, "LOSE")
    guarded.settle()
    assert guarded.stage(deal_id) == "LOSE"
    assert notices(guarded, reviewer) == []
    assert audit_rows(deal_id)[-1].outcome == "closed without review"


def test_a_manager_leaving_conditional_refusal_withdraws_the_case(guarded: B24):
    deal_id = new_deal(guarded)
    fill_refusal(guarded, deal_id, MANAGER, "price", "Дорого")
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "RC_REFUSAL")
    guarded.settle()
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "EXECUTING")
    guarded.settle()
    assert guarded.stage(deal_id) == "EXECUTING"
    [case] = cases(deal_id)
    assert case.state == RefusalCase.WITHDRAWN and case.closed_at is not None


def test_our_own_revert_fires_an_event_but_causes_no_further_write(guarded: B24):
    deal_id = new_deal(guarded)
    updates_before = guarded.sandbox.rest_calls(guarded.portal, "crm.deal.update")
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "LOSE")
    guarded.deliver()
    guarded.work()
    assert guarded.sandbox.pending_events(), "the revert must fire ONCRMDEALUPDATE back, like Bitrix24"
    reads_before_echo = guarded.sandbox.rest_calls(guarded.portal, "crm.deal.get")
    guarded.settle()
    assert guarded.sandbox.rest_calls(guarded.portal, "crm.deal.update") - updates_before == 1
    assert guarded.sandbox.rest_calls(guarded.portal, "crm.deal.get") - reads_before_echo == 1  # one re-read, no write
    assert guarded.stage(deal_id) == "PREPARATION"


def test_the_same_event_five_times_and_out_of_order_give_one_outcome(guarded: B24):
    deal_id = new_deal(guarded)
    fill_refusal(guarded, deal_id, MANAGER, "price", "Дорого")
    guarded.settle()
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "LOSE")
    [event] = guarded.sandbox.pending_events()
    guarded.sandbox.out_of_order = True
    for _ in range(5):
        guarded.client.post("/b24/events", data=event.body, content_type="application/x-www-form-urlencoded")
    guarded.settle()
    guarded.client.post("/b24/events", data=event.body, content_type="application/x-www-form-urlencoded")
    guarded.settle()
    assert guarded.stage(deal_id) == "RC_REFUSAL"
    assert len(cases(deal_id)) == 1
    assert len(our_tasks(guarded, deal_id)) == 1
    assert len(notices(guarded, MANAGER)) == 1


def test_non_default_pipeline_is_guarded(guarded: B24):
    deal_id = new_deal(guarded, stage="C2:PREPARATION")
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "C2:LOSE")
    guarded.settle()
    assert guarded.stage(deal_id) == "C2:PREPARATION"


def test_moving_to_the_lost_stage_of_another_pipeline_goes_back_to_the_first(guarded: B24):
    deal_id = new_deal(guarded, stage="EXECUTING")
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "C1:LOSE")
    guarded.settle()
    _status, body = guarded.sandbox.call(guarded.portal, "crm.deal.get", {"id": deal_id})
    assert (body["result"]["CATEGORY_ID"], body["result"]["STAGE_ID"]) == ("0", "EXECUTING")


def test_robot_made_close_is_not_allowed_unless_exempted(guarded: B24):
    deal_id = new_deal(guarded, stage="EXECUTING")
    guarded.sandbox.act_as_automation(guarded.portal).move_deal(deal_id, "LOSE")
    guarded.settle()
    assert guarded.stage(deal_id) == "EXECUTING"
    assert audit_rows(deal_id)[-1].actor == "automation"
    configure_guard(guarded.our_portal(), exempt_automation=True)
    guarded.sandbox.act_as_automation(guarded.portal).move_deal(deal_id, "LOSE")
    guarded.settle()
    assert guarded.stage(deal_id) == "LOSE"


def test_unguarded_pipeline_is_left_alone(guarded: B24):
    configure_guard(guarded.our_portal(), guarded_pipelines=["1", "2"])
    deal_id = new_deal(guarded)
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "LOSE")
    guarded.settle()
    assert guarded.stage(deal_id) == "LOSE"


def test_a_dropped_event_is_caught_from_the_offline_queue(guarded: B24):
    assert guarded.our_portal().settings["offline_events"] is True
    deal_id = new_deal(guarded, stage="EXECUTING")
    guarded.sandbox.drop_next(1)
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "LOSE")
    guarded.settle()
    assert guarded.stage(deal_id) == "LOSE", "the event was lost, nothing happened yet"
    counts = reconcile_portal(guarded.our_portal().id)
    guarded.settle()
    assert counts["offline_events"] >= 1 and counts["decided"] == 1
    assert guarded.stage(deal_id) == "EXECUTING"
    assert len(notices(guarded, MANAGER)) == 1
    again = reconcile_portal(guarded.our_portal().id)
    assert again["decided"] == 0, "the queue was acknowledged"


def test_a_dropped_event_is_caught_by_the_sweep_where_the_plan_has_no_offline_events(b24: B24):
    b24.portal.offline_extended = False
    b24.install()
    configure_guard(b24.our_portal())
    guarded = b24
    assert guarded.our_portal().settings["offline_events"] is False
    deal_id = new_deal(guarded, stage="EXECUTING")
    guarded.sandbox.drop_next(1)
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "LOSE")
    guarded.settle()
    assert guarded.stage(deal_id) == "LOSE", "the event was lost, nothing happened yet"
    portal = guarded.our_portal()
    counts = reconcile_portal(portal.id)
    guarded.settle()
    assert counts["decided"] >= 1
    assert guarded.stage(deal_id) == "EXECUTING"
    assert len(notices(guarded, MANAGER)) == 1


def test_events_of_portal_a_never_touch_portal_b(guarded: B24, app):
    from app.sandbox.mount import mount_responses
    from tests.integration.b24 import B24 as Harness
    from tests.integration.conftest import make_b24

    sandbox_b, portal_b = make_b24(app, domain="b.bitrix24.test", seed=7)
    import responses as responses_lib

    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox_b, mock)
        mount_responses(guarded.sandbox, mock)
        b = Harness(app=app, client=app.test_client(), sandbox=sandbox_b, portal=portal_b)
        our_b = b.install()
        configure_guard(our_b)
        deal_id = new_deal(guarded)
        guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "LOSE")
        guarded.settle()
        b.settle()
    assert guarded.stage(deal_id) == "PREPARATION"
    rows_b = db.session.scalars(sa.select(InboxItem).where(InboxItem.portal_id == our_b.id)).all()
    assert all(row.kind == "ONAPPINSTALL" or "ONCRMDEAL" not in row.kind for row in rows_b)
    assert sandbox_b.rest_calls(portal_b, "crm.deal.update") == 0
    assert (
        db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.portal_id == our_b.id))
        >= 1
    )


def test_cases_go_round_robin_to_active_qa_staff_only(guarded: B24):
    configure_guard(guarded.our_portal(), qa_users=["7", "10", "8"])  # 10 is an inactive user
    assigned = []
    for title in ("Первая", "Вторая", "Третья"):
        deal_id = new_deal(guarded, title=title)
        fill_refusal(guarded, deal_id, MANAGER, "price", "Дорого")
        guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "RC_REFUSAL")
        guarded.settle()
        [case] = cases(deal_id)
        assigned.append(case.qa_user_id)
        [task] = our_tasks(guarded, deal_id)
        assert str(task["responsibleId"]) == case.qa_user_id
    assert assigned == ["7", "8", "7"]


def test_a_move_in_the_same_second_the_install_finished_is_guarded(guarded: B24):
    """CRM timestamps have whole seconds; the install time has microseconds."""
    from datetime import timedelta

    deal_id = new_deal(guarded, stage="EXECUTING")
    portal = guarded.our_portal()
    status, body = guarded.sandbox.call(guarded.portal, "crm.deal.get", {"id": deal_id})
    db.session.execute(sa.delete(DealSnapshot).where(DealSnapshot.deal_id == str(deal_id)))
    guarded.sandbox.act(guarded.portal, MANAGER).move_deal(deal_id, "LOSE")
    moved = guarded.sandbox.call(guarded.portal, "crm.deal.get", {"id": deal_id})[1]["result"]["MOVED_TIME"]
    from datetime import datetime

    portal.installed_at = datetime.fromisoformat(moved) + timedelta(microseconds=600_000)
    db.session.commit()
    guarded.settle()
    assert status == 200 and body["result"]["STAGE_ID"] == "EXECUTING"
    assert guarded.stage(deal_id) != "LOSE"
