"""Bitrix24-only guard cases: out-of-order events, the sweep where the plan has no offline queue, two portals,
a move in the install's second. The scenarios shared with amoCRM are in tests/scenarios/test_guard.py."""

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, DealSnapshot, InboxItem, RefusalCase
from app.domain.reconcile import reconcile_portal
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


def test_the_same_event_five_times_delivered_out_of_order_gives_one_outcome(guarded: B24):
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
    from sandbox.mount import mount_responses
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
