"""«Отложено» on both CRMs: the stage and its two fields come with the install (and with a pipeline created later);
entering it without a reason or a return date, or with a date already past, comes back with a notice naming what
is missing (robots too); a complete entry stays, is audited, and is never a refusal, a case or a fine; on the
return day the manager gets the task «Вернуться к сделке …» and, with `postpone_return_stage` set for the
pipeline (CLI), the deal moves back there, once however often the job runs; the report counts postponed,
returned and won deals per manager."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from app.cli.settings import settings_cli
from app.core.db import db
from app.core.models import AuditEntry, Penalty, Postponement, RefusalCase, utcnow
from app.domain import postpone, reports
from tests.scenarios.driver import MANAGER, CrmDriver

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
    assert json.loads(result.output)["postpone_return_stage"] == {main: working}

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
