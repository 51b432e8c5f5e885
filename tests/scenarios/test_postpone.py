"""«Отложено» on both CRMs: the stage and its two fields come with the install (and with a pipeline created later);
entering it without a reason or a return date, or with a date already past, comes back with a notice naming what
is missing (robots too); a complete entry stays, is audited, and is never a refusal, a case or a fine; on the
return day the manager gets the task «Вернуться к сделке …» and, with `postpone_return_stage` set for the
pipeline (CLI), the deal moves back there, once however often the job runs; a return date changed in the card
while the deal waits is the new day; task control leaves a waiting deal alone; the report counts postponed,
returned and won-after-return deals per manager, the win as recorded when the deal moved to won."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from app.cli.settings import settings_cli
from app.core.db import db
from app.core.models import AuditEntry, Penalty, Postponement, RefusalCase, utcnow
from app.domain import postpone, reports, taskcontrol
from tests.scenarios.driver import HEAD, MANAGER, CrmDriver

TASK = "Вернуться к сделке «Поставка станков»"


def portal_today(crm: CrmDriver) -> date:
    return reports.today(crm.portal())


def morning_of(crm: CrmDriver, day: date) -> datetime:
    """09:00 of a day in the portal's time zone (before the return task's 10:00)."""
    return datetime.combine(day, time(9), ZoneInfo(reports.zone_name(crm.portal())))


def audit_rows(deal_id: str, attempted: str) -> list[AuditEntry]:
    db.session.expire_all()
    query = sa.select(AuditEntry).where(AuditEntry.deal_id == deal_id, AuditEntry.attempted == attempted)
    return list(db.session.scalars(query.order_by(AuditEntry.id)))


def postpone_deal(crm: CrmDriver, deal: str, day: date, reason: str = "no_money_now") -> None:
    crm.fill_postpone(deal, by=MANAGER, reason=reason, day=day)
    crm.settle()
    crm.move(deal, "postponed", by=MANAGER)
    crm.settle()


def return_tasks(crm: CrmDriver, deal: str) -> list[str]:
    """The titles of the deal's return tasks (an amoCRM task's title is the first line of its text)."""
    titles = [task.title.split("\n")[0] for task in crm.deal_tasks(deal)]
    return [title for title in titles if title.startswith("Вернуться к сделке")]


def test_the_install_adds_postponed_to_every_pipeline_after_conditional_refusal(crm: CrmDriver):
    for pipeline in ("main", "other"):
        names = crm.stage_names(pipeline)
        assert "Отложено" in names and "Условный отказ" in names
        assert names.index("Условный отказ") < names.index("Отложено")
    # A pipeline an admin creates later gets it with the first deal event from it.
    pipeline = crm.new_pipeline()
    deal = crm.new_deal(stage="working", pipeline=pipeline)
    crm.settle()
    assert crm.stage_names(pipeline).count("Отложено") == 1
    postpone_deal(crm, deal, portal_today(crm) + timedelta(days=3))
    assert crm.stage_of(deal) == "postponed"


def test_postponing_without_a_reason_or_a_date_comes_back_naming_what_is_missing(crm: CrmDriver):
    deal = crm.new_deal(stage="working", title="Поставка станков")
    crm.move(deal, "postponed", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal) == "working"
    [notice] = crm.notices(MANAGER)
    assert "«Поставка станков» нельзя перевести в «Отложено»" in notice
    assert "не указана причина переноса" in notice and "не указана дата возврата" in notice
    assert crm.deal_url(deal) in notice

    # A date already past is refused too, naming the date.
    past = portal_today(crm) - timedelta(days=2)
    crm.fill_postpone(deal, by=MANAGER, reason="no_need_now", day=past)
    crm.settle()
    crm.move(deal, "postponed", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal) == "working"
    assert f"дата возврата {past.strftime('%d.%m.%Y')} уже прошла" in crm.notices(MANAGER)[-1]
    assert "причина" not in crm.notices(MANAGER)[-1]

    # A robot is held to it as well; the notice goes to the responsible.
    crm.fill_postpone(deal, by=MANAGER, reason=None, day=portal_today(crm) + timedelta(days=5))
    crm.settle()
    crm.move(deal, "postponed", by=None)
    crm.settle()
    assert crm.stage_of(deal) == "working"
    assert "не указана причина переноса" in crm.notices(MANAGER)[-1]
    reverted = [row for row in audit_rows(deal, postpone.ATTEMPTED) if row.outcome == "reverted"]
    assert len(reverted) == 3 and all(row.details["violation"] for row in reverted)


def test_a_postponed_deal_stays_and_is_no_refusal_case_or_fine(crm: CrmDriver):
    deal = crm.new_deal(stage="working")
    day = portal_today(crm) + timedelta(days=7)
    postpone_deal(crm, deal, day)
    assert crm.stage_of(deal) == "postponed"
    assert crm.notices(MANAGER) == []
    [row] = audit_rows(deal, postpone.ATTEMPTED)
    assert (row.outcome, row.details["due_date"], row.details["reason_code"]) == (
        "postponed",
        day.isoformat(),
        "no_money_now",
    )
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(RefusalCase)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Penalty)) == 0
    [waiting] = db.session.scalars(sa.select(Postponement).where(Postponement.deal_id == deal)).all()
    assert (waiting.state, waiting.due_date, waiting.manager_id) == (Postponement.WAITING, day, str(MANAGER))


def test_on_its_day_the_deal_comes_back_to_its_manager_once_and_a_later_win_is_reported(crm: CrmDriver):
    runner = crm.app.test_cli_runner()
    main, working = crm.pipeline_id("main"), crm.stage_id("working")
    setting = json.dumps({main: working})
    result = runner.invoke(settings_cli, ["set", str(crm.portal().id), f"postpone_return_stage={setting}"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["postpone_return_stage"] == {main: working}  # stderr carries the audit log

    deal = crm.new_deal(stage="late working", title="Поставка станков", amount=320000)
    day = portal_today(crm) + timedelta(days=3)
    postpone_deal(crm, deal, day)
    assert crm.stage_of(deal) == "postponed"

    # The day before: nothing happens.
    assert postpone.return_due_all(now=morning_of(crm, day - timedelta(days=1))) == 0
    crm.settle()
    assert return_tasks(crm, deal) == [] and crm.stage_of(deal) == "postponed"

    # On the day: a task for the manager and the deal back in the chosen stage.
    assert postpone.return_due_all(now=morning_of(crm, day)) == 1
    crm.settle()
    assert crm.stage_of(deal) == "working"
    [task] = [t for t in crm.deal_tasks(deal) if t.title.split("\n")[0] == TASK]
    assert task.responsible == MANAGER and task.is_open
    [returned] = audit_rows(deal, postpone.RETURN_ATTEMPTED)
    assert (returned.outcome, returned.details["back_to"]) == ("returned", working)

    # The job again (another worker, a retry): nothing twice.
    postpone.return_due_all(now=morning_of(crm, day))
    crm.settle()
    assert return_tasks(crm, deal) == [TASK] and crm.stage_of(deal) == "working"
    assert crm.notices(MANAGER) == []

    # Won later: the report counts it under the manager with its amount.
    crm.move(deal, "won", by=MANAGER)
    crm.settle()
    now = utcnow()
    [row] = postpone.report_rows(crm.portal().id, now - timedelta(hours=1), now + timedelta(hours=1))
    assert (row["manager_id"], row["postponed"], row["returned"], row["won"], row["waiting"]) == (
        str(MANAGER), 1, 1, 1, 0,
    )  # fmt: skip
    assert row["won_amount"] == 320000


def test_without_a_return_stage_the_task_alone_and_a_deal_moved_back_by_hand_counts_as_returned(crm: CrmDriver):
    waiting = crm.new_deal(stage="working")
    by_hand = crm.new_deal(stage="working")
    day = portal_today(crm) + timedelta(days=2)
    postpone_deal(crm, waiting, day)
    postpone_deal(crm, by_hand, day)
    crm.move(by_hand, "new", by=MANAGER)
    crm.settle()
    assert crm.stage_of(by_hand) == "new"

    assert postpone.return_due_all(now=morning_of(crm, day)) == 1  # the one still waiting
    crm.settle()
    assert crm.stage_of(waiting) == "postponed"
    assert return_tasks(crm, waiting) == [TASK] and return_tasks(crm, by_hand) == []
    assert [row.outcome for row in audit_rows(by_hand, postpone.RETURN_ATTEMPTED)] == ["returned by hand"]
    now = utcnow()
    [row] = postpone.report_rows(crm.portal().id, now - timedelta(hours=1), now + timedelta(hours=1))
    assert (row["postponed"], row["returned"], row["won"]) == (2, 2, 0)


def report_now(crm: CrmDriver) -> list[dict]:
    now = utcnow()
    db.session.expire_all()
    return postpone.report_rows(crm.portal().id, now - timedelta(hours=1), now + timedelta(hours=1))


def test_task_control_does_not_chase_a_deal_waiting_in_postponed(crm: CrmDriver):
    waiting = crm.new_deal(stage="working", title="Отложенная поставка")
    crm.new_deal(stage="working", title="Сделка без шага")
    day = portal_today(crm) + timedelta(days=4)
    postpone_deal(crm, waiting, day)
    assert crm.stage_of(waiting) == "postponed" and crm.deal_tasks(waiting) == []

    taskcontrol.scan_portal(crm.portal().id)
    db.session.expire_all()
    told = "\n".join(crm.notices(MANAGER))
    assert "«Сделка без шага» без открытой задачи" in told  # the scan did run and notify
    assert "Отложенная поставка" not in told
    report = taskcontrol.overdue_report(crm.portal()) or {"managers": []}
    [row] = [row for row in report["managers"] if row["user_id"] == str(MANAGER)]
    assert waiting not in [deal["id"] for deal in row["deals"]]

    # On its day the return task is its next step; until then no notice, on any scan.
    postpone.return_due_all(now=morning_of(crm, day))
    crm.settle()
    assert return_tasks(crm, waiting) == ["Вернуться к сделке «Отложенная поставка»"]
    taskcontrol.scan_portal(crm.portal().id)
    assert "Отложенная поставка" not in "\n".join(crm.notices(MANAGER))


def test_a_return_date_moved_earlier_in_the_card_is_honoured_on_the_new_day(crm: CrmDriver):
    deal = crm.new_deal(stage="working", title="Поставка станков")
    today = portal_today(crm)
    first, earlier = today + timedelta(days=10), today + timedelta(days=2)
    postpone_deal(crm, deal, first)

    # The client called: the manager moves the return date earlier while the deal sits in «Отложено».
    crm.fill_postpone(deal, by=MANAGER, reason="no_money_now", day=earlier)
    crm.settle()
    assert crm.stage_of(deal) == "postponed"
    [moved] = audit_rows(deal, postpone.DATE_ATTEMPTED)
    assert (moved.details["before"], moved.details["due_date"]) == (first.isoformat(), earlier.isoformat())

    assert postpone.return_due_all(now=morning_of(crm, earlier - timedelta(days=1))) == 0
    assert postpone.return_due_all(now=morning_of(crm, earlier)) == 1
    crm.settle()
    assert return_tasks(crm, deal) == [TASK]
    [task] = [t for t in crm.deal_tasks(deal) if t.title.split("\n")[0] == TASK]
    zone = ZoneInfo(reports.zone_name(crm.portal()))
    assert task.deadline is not None and task.deadline.astimezone(zone).date() == earlier
    # The old day brings nothing more.
    assert postpone.return_due_all(now=morning_of(crm, first)) == 0
    crm.settle()
    assert return_tasks(crm, deal) == [TASK]


def test_won_after_return_counts_the_recorded_move_to_won_once(crm: CrmDriver):
    deal = crm.new_deal(stage="working", title="Поставка станков", amount=150000)
    today = portal_today(crm)
    # Postponed, taken back to work by hand, postponed again, returned on its day: two stays, one deal.
    postpone_deal(crm, deal, today + timedelta(days=5))
    crm.move(deal, "working", by=MANAGER)
    crm.settle()
    postpone_deal(crm, deal, today + timedelta(days=3))
    postpone.return_due_all(now=morning_of(crm, today + timedelta(days=3)))
    crm.settle()
    [row] = report_now(crm)
    assert (row["postponed"], row["returned"], row["won"]) == (2, 2, 0)

    crm.set_amount(deal, 480000, by=MANAGER)
    crm.settle()
    crm.move(deal, "won", by=MANAGER)
    crm.settle()
    [row] = report_now(crm)
    assert (row["postponed"], row["returned"], row["won"], row["won_amount"]) == (2, 2, 1, 480000)
    db.session.expire_all()
    [won] = db.session.scalars(sa.select(Postponement).where(Postponement.won_at.is_not(None))).all()
    assert won.ended_how == "on date"  # the win belongs to the stay it came back from

    # The deal deleted later: its win after the return stays in the report.
    crm.delete(deal, by=HEAD)
    crm.settle()
    [row] = report_now(crm)
    assert (row["won"], row["won_amount"]) == (1, 480000)
