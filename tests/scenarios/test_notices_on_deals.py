"""Every notice about a deal is on that deal, on both CRMs: Bitrix24's notification links the deal's card;
amoCRM, which has no notification API, gets a note on the lead (its timeline) and a task for the user linked
to the lead. The app's own notice tasks never pass for the lead's next step."""

from __future__ import annotations

from app.domain import taskcontrol
from tests.scenarios.driver import MANAGER, CrmDriver


def test_the_managers_notice_about_a_refused_close_is_on_the_deal(crm: CrmDriver):
    deal_id = crm.new_deal(title="Сделка под защитой")
    crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()

    [notice] = crm.notices(MANAGER)
    assert "нельзя закрыть" in notice
    assert crm.notice_deals(MANAGER) == [deal_id], "the notice opens the deal it is about"
    assert notice in crm.notices_on(deal_id), "the deal shows the notice"


def test_notices_of_a_group_action_are_each_on_their_own_deal(crm: CrmDriver):
    deal_ids = [crm.new_deal(title=f"Сделка {n}") for n in range(7)]
    crm.settle()
    for deal_id in deal_ids:
        crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()

    assert sorted(crm.notice_deals(MANAGER), key=int) == sorted(deal_ids, key=int)
    for deal_id in deal_ids:
        [notice] = crm.notices_on(deal_id)
        assert crm.deal_url(deal_id) in notice


def test_task_control_notices_are_on_their_deals_and_are_not_a_next_step(crm: CrmDriver):
    first = crm.new_deal(title="Первая сделка без шага")
    second = crm.new_deal(title="Вторая сделка без шага")
    taskcontrol.scan_portal(crm.portal().id)

    assert any("Первая сделка без шага" in text for text in crm.notices_on(first))
    assert any("Вторая сделка без шага" in text for text in crm.notices_on(second))
    assert crm.deal_tasks(first) == [], "the notice is not one of the deal's tasks"
    # The next scan still finds both deals without a next step: the notice did not count as one.
    report = taskcontrol.overdue_report(crm.portal()) or {"managers": []}
    row = next(row for row in report["managers"] if row["user_id"] == str(MANAGER))
    assert {first, second} <= {deal["id"] for deal in row["deals"]}
    taskcontrol.scan_portal(crm.portal().id)
    report = taskcontrol.overdue_report(crm.portal()) or {"managers": []}
    row = next(row for row in report["managers"] if row["user_id"] == str(MANAGER))
    assert {first, second} <= {deal["id"] for deal in row["deals"]}
