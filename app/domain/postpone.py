"""«Отложено» (Postponed): a deal put off for a reason until a day, returned to its manager on that day.

CRM-agnostic: only the CrmClient port and the database.

* The stage: «Отложено» in every pipeline, an in-progress stage right before the final ones, added by the
  installer's `postpone` step (`ensure_stages`) and, for a pipeline created later, when the app first notices
  that pipeline (`adopt_pipeline`, a hook of app.domain.stages). Known stages are kept in
  ``portal.settings["postpone_stages"]`` ({pipeline id: stage id}).
* Two deal fields (installed with the others): the reason (`Deal.postpone_reason`, one of
  catalog.POSTPONE_REASONS) and the return day (`Deal.postpone_date`, a day of the portal's calendar).
* `postpone_rule` (a guard rule): entering «Отложено» without a reason, without a return day or with a day
  already past goes back where it came from, with a notice to the mover (the responsible for a robot) naming
  what is missing; exempt users are let through. A complete entry opens a `Postponement` (audited
  "postpone"). A postponed deal stays an open deal: it is never a refusal, a leak or a fine.
* `return_due_all` (periodic): on the return day (the portal's calendar) each waiting deal gets one job
  (`return_postponed`, job id ``postpone-return-<portal>-<deal>-<day>``): the deal's manager gets the task
  «Вернуться к сделке …» and, when the portal setting `postpone_return_stage` names a stage for the deal's
  pipeline ({pipeline id: stage id}), the deal moves back there. Audited "postpone return". A deal moved back
  to work by a person before its day counts as returned ("by hand"); one that left for won, lost or refusal,
  or is gone, ends without a return.
* `deal_seen` (a hook of guard.remember, on every deal as read): a return date changed in the CRM while the deal
  waits moves its return to the new day (audited "postpone date"); a returned deal's move to won is recorded on
  its row (`won_at`, `won_amount`), and undone if the deal is reopened or lost.
* `report_rows`: per manager, the deals postponed in a period, how many came back and how many of those were won
  after their return (the recorded win, not the deal's last state), with their amounts.
* Task control (app.domain.taskcontrol) never counts a deal in «Отложено» as a deal without an open task.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from marshmallow import ValidationError
from sqlalchemy.orm.attributes import flag_modified

from app.core import i18n
from app.core.db import db
from app.core.models import Portal, Postponement, utcnow
from app.core.queue import enqueue
from app.crm.errors import CrmError, NotFound, PortalNeedsReinstall
from app.crm.port import AUTOMATION, CrmClient, Deal, StageSpec, client_for
from app.domain import audit, directory, effects, guard, reports, stages
from app.domain.catalog import POSTPONE_REASONS, POSTPONE_STAGE, POSTPONE_STAGE_CODE, POSTPONE_STAGE_COLOR

log = logging.getLogger(__name__)

STAGES = "postpone_stages"  # {pipeline id: stage id}
RETURN_STAGE = "postpone_return_stage"  # {pipeline id: stage id}
ATTEMPTED = "postpone"
RETURN_ATTEMPTED = "postpone return"
DATE_ATTEMPTED = "postpone date"
TASK_HOUR = 10  # the return task is due at 10:00 of the return day (portal time), or an hour from now if later
MAX_PIPELINES = 200

i18n.register(
    {
        "step_postpone": ("Стадия «Отложено» во всех воронках", "Postponed stage in every pipeline"),
        "postpone_blocked": (
            "Сделку «{title}» нельзя перевести в «Отложено»: {missing}. Она возвращена на прежнюю стадию: "
            "заполните поля и переведите сделку снова. {link}",
            'The deal "{title}" cannot be postponed: {missing}. It was returned to its previous stage: fill in the '
            "fields and move it again. {link}",
        ),
        "postpone_missing_reason": ("не указана причина переноса", "no postpone reason"),
        "postpone_missing_date": ("не указана дата возврата", "no return date"),
        "postpone_past_date": ("дата возврата {day} уже прошла", "the return date {day} has passed"),
        "postpone_task_title": ("Вернуться к сделке «{title}»", 'Return to the deal "{title}"'),
        "postpone_task_description": (
            "Сделка была отложена {since} до {day}. Причина: {reason}. Свяжитесь с клиентом. {link}",
            "The deal was postponed on {since} until {day}. Reason: {reason}. Get back to the client. {link}",
        ),
        "postpone_settings": ("Отложенные сделки", "Postponed deals"),
        "postpone_settings_hint": (
            "В день возврата ответственный получает задачу «Вернуться к сделке». Если для воронки выбрана стадия, "
            "сделка в этот день возвращается на неё из «Отложено».",
            'On the return date the responsible gets the task "Return to the deal". If a stage is chosen for the '
            "pipeline, the deal moves back to it from Postponed on that day.",
        ),
        "postpone_settings_stay": ("Оставить в «Отложено»", "Keep in Postponed"),
        "postpone_report_title": ("Отложенные сделки", "Postponed deals"),
        "postpone_report_manager": ("Менеджер", "Manager"),
        "postpone_report_postponed": ("Отложено", "Postponed"),
        "postpone_report_returned": ("Вернулись в работу", "Came back"),
        "postpone_report_won": ("Выиграны после возврата", "Won after return"),
        "postpone_report_won_amount": ("Сумма выигранных", "Won amount"),
        "postpone_report_waiting": ("Ждут даты", "Waiting"),
        "reports_empty_postponed": ("За период сделки не откладывались.", "No deals were postponed in the period."),
    }
)


# ------------------------------------------------------------------------------------------ the stage


def stage_spec(language: str) -> StageSpec:
    """«Отложено» as the CRMs are asked for it (named in the portal's language, found by either name)."""
    return StageSpec(
        code=POSTPONE_STAGE_CODE,
        name=POSTPONE_STAGE.in_language(language),
        names=(POSTPONE_STAGE.ru, POSTPONE_STAGE.en),
        color=POSTPONE_STAGE_COLOR,
    )


def known_stage(portal: Portal, pipeline_id: str) -> str | None:
    """The «Отложено» stage the app knows in this pipeline."""
    return ((portal.settings or {}).get(STAGES) or {}).get(pipeline_id)


def installed(portal: Portal) -> bool:
    """Whether the installer has put «Отложено» into this portal (an install or repair since the feature)."""
    return STAGES in (portal.settings or {})


def ensure_stages(portal: Portal, crm: CrmClient) -> str:
    """The installer's step: «Отложено» in every pipeline (after Conditional refusal, before the final stages)."""
    pipeline_ids = [pipeline.id for pipeline in crm.list_pipelines()]
    spec = stage_spec(portal.language)
    with stages.stages_lock(portal.id):
        found = {pipeline_id: crm.ensure_stage(pipeline_id, spec) for pipeline_id in pipeline_ids}
    created = sum(1 for pipeline_id, stage in found.items() if known_stage(portal, pipeline_id) != stage)
    settings = dict(portal.settings or {})
    settings[STAGES] = found
    portal.settings = settings
    flag_modified(portal, "settings")
    directory.forget_pipelines(portal.id)
    return f"{len(found)} pipelines, {created} new to the app"


def adopt_pipeline(portal: Portal, crm: CrmClient, pipeline_id: str) -> None:
    """A pipeline the app has just noticed (app.domain.stages hook): add its «Отложено» stage, once, on a portal
    where the installer put it into the others. Commits."""
    if not installed(portal) or known_stage(portal, pipeline_id):
        return
    with stages.stages_lock(portal.id):
        db.session.commit()
        db.session.refresh(portal)
        if known_stage(portal, pipeline_id):
            return
        db.session.commit()
        stage_id = crm.ensure_stage(pipeline_id, stage_spec(portal.language))
        locked = db.session.scalars(
            sa.select(Portal).where(Portal.id == portal.id).with_for_update().execution_options(populate_existing=True)
        ).one()
        settings = dict(locked.settings or {})
        settings[STAGES] = {**(settings.get(STAGES) or {}), pipeline_id: stage_id}
        locked.settings = settings
        flag_modified(locked, "settings")
        audit.record(portal.id, "app", "new pipeline", "postponed stage added", f"pipeline {pipeline_id}: {stage_id}")
        db.session.commit()
    directory.forget_pipelines(portal.id)


# ------------------------------------------------------------------------------------------ settings


def validate_return_stages(value: Any) -> dict[str, str]:
    """`postpone_return_stage` in its stored form ({pipeline id: stage id}; an empty stage id removes the
    pipeline), or a ValidationError."""
    if not isinstance(value, Mapping):
        raise ValidationError({RETURN_STAGE: ['a JSON object keyed by pipeline id: {"PIPELINE": "STAGE"}']})
    if len(value) > MAX_PIPELINES:
        raise ValidationError({RETURN_STAGE: [f"at most {MAX_PIPELINES} pipelines"]})
    cleaned: dict[str, str] = {}
    errors: dict[str, list[str]] = {}
    for pipeline_id, stage_id in value.items():
        key = str(pipeline_id)[:100]
        if not isinstance(pipeline_id, str) or not pipeline_id.strip() or "\x00" in pipeline_id:
            errors[key or "(empty)"] = ["a pipeline id must be a non-empty string"]
        elif stage_id is None or stage_id == "":
            continue
        elif not isinstance(stage_id, str) or "\x00" in stage_id or len(stage_id) > 100:
            errors[key] = ["a stage id must be a string of at most 100 characters"]
        else:
            cleaned[pipeline_id.strip()] = stage_id.strip()
    if errors:
        raise ValidationError({RETURN_STAGE: errors})
    return cleaned


def return_stages(portal: Portal) -> dict[str, str]:
    """The stored setting (empty when none or no longer valid)."""
    try:
        return validate_return_stages((portal.settings or {}).get(RETURN_STAGE) or {})
    except ValidationError:
        return {}


def returnable_stages(portal: Portal, crm: CrmClient) -> dict[str, list[tuple[str, str]]]:
    """Per pipeline, the stages a deal may come back to: its working stages but Conditional refusal and
    «Отложено», in order, as (id, name)."""
    skip = set(((portal.settings or {}).get("refusal_stages") or {}).values())
    skip |= set(((portal.settings or {}).get(STAGES) or {}).values())
    return {
        pipeline.id: [
            (stage.id, stage.name)
            for stage in sorted(pipeline.stages, key=lambda stage: stage.sort)
            if stage.semantics == "process" and stage.id not in skip
        ]
        for pipeline in directory.pipelines(portal.id, crm)
    }


def update_return_stages(portal: Portal, value: Any, crm: CrmClient | None = None) -> dict[str, str]:
    """Validate (against the CRM's pipelines when `crm` is given) and store the whole setting; the caller
    commits. Raises ValidationError naming each pipeline whose stage is not a working stage of it."""
    cleaned = validate_return_stages(value)
    if crm is not None:
        allowed = returnable_stages(portal, crm)
        if not set(cleaned) <= set(allowed) or any(
            stage not in {s for s, _ in allowed.get(p, [])} for p, stage in cleaned.items()
        ):
            directory.forget_pipelines(portal.id)
            allowed = returnable_stages(portal, crm)
        errors = {
            pipeline_id: [
                f"no pipeline {pipeline_id!r} in this CRM"
                if pipeline_id not in allowed
                else f"{stage_id!r} is not a working stage of this pipeline"
            ]
            for pipeline_id, stage_id in cleaned.items()
            if stage_id not in {s for s, _ in allowed.get(pipeline_id, [])}
        }
        if errors:
            raise ValidationError({RETURN_STAGE: errors})
    settings = dict(portal.settings or {})
    settings[RETURN_STAGE] = cleaned
    portal.settings = settings
    flag_modified(portal, "settings")
    return cleaned


# ------------------------------------------------------------------------------------------ the rule


def reason_name(code: str | None, language: str) -> str:
    """A postpone reason's name in the language ("—" for none)."""
    label = POSTPONE_REASONS.get(code or "")
    return label.in_language(language) if label else (code or "—")


def missing(portal: Portal, deal: Deal, today: date) -> list[str]:
    """What keeps a deal from entering «Отложено», in the portal's language (empty when nothing does)."""
    language = portal.language
    problems = []
    if not deal.postpone_reason:
        problems.append(i18n.translate("postpone_missing_reason", language))
    if deal.postpone_date is None:
        problems.append(i18n.translate("postpone_missing_date", language))
    elif deal.postpone_date < today:
        day = deal.postpone_date.strftime("%d.%m.%Y")
        problems.append(i18n.translate("postpone_past_date", language).format(day=day))
    return problems


def open_postponement(portal_id: int, deal_id: str) -> Postponement | None:
    """The deal's waiting postponement, if any."""
    return db.session.scalar(
        sa.select(Postponement)
        .where(
            Postponement.portal_id == portal_id,
            Postponement.deal_id == deal_id,
            Postponement.state == Postponement.WAITING,
        )
        .order_by(Postponement.id.desc())
    )


def postpone_rule(
    deal_guard: guard.Guard, deal: Deal, previous_stage: str, previous_pipeline: str, mover: str, role: str
) -> guard.Decision | None:
    """Entering «Отложено» needs a reason and a return day that has not passed; leaving it ends the wait."""
    portal = deal_guard.portal
    stage = known_stage(portal, deal.pipeline_id)
    if stage and deal.stage_id == stage:
        return _entered(deal_guard, deal, previous_stage, previous_pipeline, mover, role)
    if previous_stage and previous_stage == known_stage(portal, previous_pipeline):
        _left(portal, deal, mover)
    return None


def first_seen_rule(deal_guard: guard.Guard, deal: Deal, mover: str, role: str) -> guard.Decision | None:
    """A deal first seen in «Отложено» (created or imported there after install) is judged as an entry from the
    stage before it in the CRM's history, else from its pipeline's first stage."""
    portal, crm = deal_guard.portal, deal_guard.crm
    stage = known_stage(portal, deal.pipeline_id)
    if not stage or deal.stage_id != stage:
        return None
    previous = crm.stage_before(deal.id, deal.stage_id) or ""
    known = directory.stage(portal.id, crm, previous) if previous else None
    if known is None or known.pipeline_id != deal.pipeline_id or known.semantics != "process":
        first = directory.first_stage(portal.id, crm, deal.pipeline_id)
        previous = first.id if first is not None else ""
    return _entered(deal_guard, deal, previous, deal.pipeline_id, mover, role)


def _entered(
    deal_guard: guard.Guard, deal: Deal, previous_stage: str, previous_pipeline: str, mover: str, role: str
) -> guard.Decision:
    portal = deal_guard.portal
    problems = missing(portal, deal, reports.today(portal))
    actor = mover or AUTOMATION
    if not problems:
        row = _record(portal, deal, actor)
        guard.remember(portal.id, deal)
        audit.record(
            portal.id,
            actor,
            ATTEMPTED,
            "postponed",
            f"until {row.due_date.isoformat()}",
            deal_id=deal.id,
            reason_code=row.reason,
            due_date=row.due_date.isoformat(),
            manager_id=row.manager_id,
            postponement_id=row.id,
        )
        return guard.Decision("postponed")
    if role == "exempt":
        guard.remember(portal.id, deal)
        audit.record(portal.id, actor, ATTEMPTED, "allowed", "exempt", deal_id=deal.id, missing=problems)
        return guard.Decision("allowed", "exempt")
    target, pipeline = deal_guard._way_back(deal, previous_stage or None, previous_pipeline or None)
    # The CRM's stamps have whole seconds: two refused entries within one second differ by mover or by what
    # was missing, and a retried decision makes the same key.
    key = f"postpone:{deal.id}:{guard._stamp(deal)}:{actor}:{len(problems)}:{deal.postpone_date}:{deal.postpone_reason}"
    guard.remember(portal.id, deal, stage_id=target, pipeline_id=pipeline)
    payload: dict[str, Any] = {"stage_id": target}
    if pipeline != deal.pipeline_id:
        payload["pipeline_id"] = pipeline
    effects.plan_effect(portal.id, deal.id, f"{key}:move", "move", payload)
    recipient = deal.responsible_id if mover in ("", AUTOMATION) else mover
    message = i18n.translate("postpone_blocked", portal.language).format(
        title=deal.title, missing="; ".join(problems), link=deal_guard.crm.deal_url(deal.id)
    )
    effects.plan_effect(portal.id, deal.id, f"{key}:notice", "notify", {"user_id": recipient, "message": message})
    audit.record(
        portal.id,
        actor,
        ATTEMPTED,
        "reverted",
        "a postpone reason and a return date that has not passed are required",
        deal_id=deal.id,
        violation=True,
        back_to=target,
        missing=problems,
        manager_id=recipient,
    )
    return guard.Decision("reverted", "postpone incomplete")


def _record(portal: Portal, deal: Deal, actor: str) -> Postponement:
    """The deal's postponement, opened (or brought up to date when it re-enters before its return)."""
    assert deal.postpone_date is not None
    row = open_postponement(portal.id, deal.id) or Postponement(
        portal_id=portal.id, deal_id=deal.id, postponed_at=utcnow(), state=Postponement.WAITING
    )
    row.title = deal.title[:255]
    row.pipeline_id = deal.pipeline_id
    row.manager_id = deal.responsible_id
    row.postponed_by = actor[:64]
    row.reason = (deal.postpone_reason or "")[:64]
    row.due_date = deal.postpone_date
    row.amount = str(deal.amount)
    row.currency = deal.currency[:8]
    db.session.add(row)
    db.session.flush()
    return row


def _left(portal: Portal, deal: Deal, mover: str) -> None:
    """The deal left «Отложено» for a working stage or won before its day: back to work by hand."""
    row = open_postponement(portal.id, deal.id)
    if row is None:
        return
    _end(row, Postponement.RETURNED, "won" if deal.stage_semantics == "success" else "by hand")
    audit.record(
        portal.id,
        mover or AUTOMATION,
        RETURN_ATTEMPTED,
        "returned by hand",
        f"before {row.due_date.isoformat()}",
        deal_id=deal.id,
        postponement_id=row.id,
        manager_id=row.manager_id,
        stage_id=deal.stage_id,
    )


def _end(row: Postponement, state: str, how: str) -> None:
    row.state = state
    row.ended_at = utcnow()
    row.ended_how = how


# ------------------------------------------------------------------------------------------ the return


def job_id(row: Postponement) -> str:
    """One return job per deal and day."""
    return f"postpone-return-{row.portal_id}-{row.deal_id}-{row.due_date.isoformat()}"


def return_due_all(now: datetime | None = None) -> int:
    """Queue the return of every waiting deal whose day has come in its portal's calendar; how many were queued
    (a deal already queued for that day is not queued again)."""
    queued = 0
    portals = db.session.scalars(
        sa.select(Portal).where(
            Portal.status == "installed",
            Portal.id.in_(sa.select(Postponement.portal_id).where(Postponement.state == Postponement.WAITING)),
        )
    ).all()
    for portal in portals:
        today = reports.today(portal, now)
        rows = db.session.scalars(
            sa.select(Postponement)
            .where(
                Postponement.portal_id == portal.id,
                Postponement.state == Postponement.WAITING,
                Postponement.due_date <= today,
            )
            .order_by(Postponement.id)
        ).all()
        for row in rows:
            if enqueue("default", "app.jobs.return_postponed", row.id, job_id=job_id(row), unique=True) is not None:
                queued += 1
    return queued


def _deadline(portal: Portal, day: date) -> datetime:
    zone = ZoneInfo(reports.zone_name(portal))
    planned = datetime.combine(day, time(TASK_HOUR), tzinfo=zone)
    return max(planned, utcnow() + timedelta(hours=1))


def return_postponed(postponement_id: int) -> str:
    """Return one postponed deal on its day: the task for its manager, the move to the pipeline's return stage
    (when one is set), the audit row. Re-reads the deal first: a deal no longer in «Отложено» ends the wait, a
    return day moved later in the CRM waits for it. Idempotent: a retried job finds the row returned and the
    effects keyed by row and day."""
    row = db.session.get(Postponement, postponement_id)
    if row is None or row.state != Postponement.WAITING:
        return "not waiting"
    portal = db.session.get(Portal, row.portal_id)
    if portal is None or portal.status != "installed":
        return "portal not installed"
    crm = client_for(portal)
    with effects.deal_lock(portal.id, row.deal_id):
        effects.run_pending_effects(portal.id, row.deal_id, crm)
        db.session.refresh(row)
        if row.state != Postponement.WAITING:
            return "not waiting"
        try:
            deal = crm.get_deal(row.deal_id)
        except NotFound:
            _end(row, Postponement.ENDED, "gone")
            db.session.commit()
            return "deal gone"
        outcome = _return(portal, crm, row, deal)
        db.session.commit()
        effects.run_pending_effects(portal.id, row.deal_id, crm)
    return outcome


def _return(portal: Portal, crm: CrmClient, row: Postponement, deal: Deal) -> str:
    stage = known_stage(portal, deal.pipeline_id)
    if deal.stage_id != stage:
        how = {"success": "won", "failure": "lost"}.get(deal.stage_semantics, "moved")
        _end(row, Postponement.RETURNED if how == "moved" else Postponement.ENDED, how)
        return f"left postponed: {how}"
    if deal.postpone_date is not None and deal.postpone_date > row.due_date:
        row.due_date = deal.postpone_date
        return "return date moved"
    language = portal.language
    day = row.due_date
    link = crm.deal_url(deal.id)
    effects.plan_effect(
        portal.id,
        deal.id,
        f"postpone:{row.id}:{day.isoformat()}:task",
        "callback_task",
        {
            "title": i18n.translate("postpone_task_title", language).format(title=deal.title),
            "description": i18n.translate("postpone_task_description", language).format(
                since=i18n.when(row.postponed_at, language, portal.timezone).split(" ")[0],
                day=day.strftime("%d.%m.%Y"),
                reason=reason_name(row.reason, language),
                link=link,
            ),
            "responsible_id": deal.responsible_id,
            "deadline": _deadline(portal, day).isoformat(),
        },
    )
    target = return_stages(portal).get(deal.pipeline_id)
    if target and directory.stage(portal.id, crm, target) is None:
        target = None  # the stage was deleted in the CRM since it was chosen: the task alone
    if target:
        guard.remember(portal.id, deal, stage_id=target)
        key = f"postpone:{row.id}:{day.isoformat()}:move"
        effects.plan_effect(portal.id, deal.id, key, "move", {"stage_id": target})
    _end(row, Postponement.RETURNED, "on date")
    audit.record(
        portal.id,
        "app",
        RETURN_ATTEMPTED,
        "returned" if target else "task set",
        f"return date {day.isoformat()}",
        deal_id=deal.id,
        postponement_id=row.id,
        manager_id=deal.responsible_id,
        back_to=target or "",
    )
    return "returned"


def deal_seen(portal_id: int, deal: Deal) -> None:
    """guard.remember's hook for a deal as just read from the CRM (every webhook and reconciliation): a return
    date changed in the CRM while the deal waits in «Отложено» is the new day of its return (earlier or later);
    a deal back from «Отложено» that is won records the win (when, and for how much), a win undone (reopened or
    lost) clears it."""
    row = db.session.scalar(
        sa.select(Postponement)
        .where(
            Postponement.portal_id == portal_id,
            Postponement.deal_id == deal.id,
            Postponement.state.in_((Postponement.WAITING, Postponement.RETURNED)),
        )
        .order_by(Postponement.id.desc())
        .limit(1)
    )
    if row is None:
        return
    if row.state == Postponement.WAITING:
        portal = db.session.get(Portal, portal_id)
        moved = deal.postpone_date is not None and deal.postpone_date != row.due_date
        if portal is not None and moved and deal.stage_id == known_stage(portal, deal.pipeline_id):
            assert deal.postpone_date is not None
            before, row.due_date = row.due_date, deal.postpone_date
            audit.record(
                portal_id,
                deal.modified_by_id or AUTOMATION,
                DATE_ATTEMPTED,
                "return date moved",
                f"{before.isoformat()} -> {row.due_date.isoformat()}",
                deal_id=deal.id,
                postponement_id=row.id,
                before=before.isoformat(),
                due_date=row.due_date.isoformat(),
            )
        return
    if deal.stage_semantics == "success":
        if row.won_at is None:
            ended = row.ended_at or row.postponed_at
            row.won_at = deal.moved_at if deal.moved_at is not None and deal.moved_at >= ended else utcnow()
        row.won_amount = str(deal.amount)
        row.currency = deal.currency[:8] or row.currency
    elif row.won_at is not None:
        row.won_at = None
        row.won_amount = ""


def adopt_hook(portal: Portal, crm: CrmClient, pipeline_id: str) -> None:
    """app.domain.stages' hook for a pipeline the app has just noticed; a CRM refusal is logged and tried again
    by the next event or reconciliation."""
    try:
        adopt_pipeline(portal, crm, pipeline_id)
    except PortalNeedsReinstall:
        raise
    except CrmError as error:
        log.warning(
            "postponed stage not added", extra={"portal_id": portal.id, "pipeline_id": pipeline_id, "code": error.code}
        )


# ------------------------------------------------------------------------------------------ reports


def _amount(text: str | None) -> Decimal:
    try:
        return Decimal(text or "0")
    except InvalidOperation:
        return Decimal("0")


def report_rows(portal_id: int, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Deals postponed in [start, end), per manager (the most first): how many, how many came back to work, how
    many of those were won after their return (the recorded move to won, see `deal_seen`) and for how much, how
    many still wait."""
    rows = db.session.scalars(
        sa.select(Postponement).where(
            Postponement.portal_id == portal_id,
            Postponement.postponed_at >= start,
            Postponement.postponed_at < end,
        )
    ).all()
    grouped: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = grouped.setdefault(
            row.manager_id,
            {"manager_id": row.manager_id, "postponed": 0, "returned": 0, "won": 0, "won_amount": Decimal("0"),
             "currency": "", "waiting": 0},
        )  # fmt: skip
        entry["postponed"] += 1
        if row.state == Postponement.WAITING:
            entry["waiting"] += 1
        if row.state == Postponement.RETURNED:
            entry["returned"] += 1
            if row.won_at is not None:
                entry["won"] += 1
                entry["won_amount"] += _amount(row.won_amount)
                entry["currency"] = entry["currency"] or row.currency
    return sorted(grouped.values(), key=lambda item: (-item["postponed"], item["manager_id"]))
