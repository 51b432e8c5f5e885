"""QA review of refusal cases: the two-step check, scheduled client callbacks and the outcomes.

CRM-agnostic: it talks to the CRM only through the port. Every action runs under the deal lock,
re-reads the deal first and refuses when the deal or the case changed since the page was loaded;
CRM writes are planned as keyed effects (a retry never repeats one) after the snapshot already
holds what we are about to write, so the echo event is recognised by the guard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from babel.dates import format_timedelta
from marshmallow import RAISE, Schema, fields, validate
from rq import Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy.orm.attributes import flag_modified

from app.core import i18n
from app.core.db import db
from app.core.models import CaseEvent, DealSnapshot, Effect, Penalty, Portal, RefusalCase, ReviewCallback, utcnow
from app.core.queue import enqueue, get_queue, get_redis, replace_scheduled
from app.core.timezones import portal_zone, zone_name
from app.crm.errors import CrmError
from app.crm.port import CrmClient, Deal, NewTodo, Stage, client_for
from app.domain import audit, directory, reasons, recovery, review_text
from app.domain.catalog import VERDICTS, Label
from app.domain.effects import deal_lock, plan_effect, run_pending_effects
from app.domain.guard import add_case_event, end_case_work, refusal_stage_for, remember
from app.domain.penalties import issue_penalty, resolve_cpl
from app.domain.settings import guard_settings

log = logging.getLogger(__name__)

SECTION = "review"
CALLBACK_QUEUE = "callbacks"
MAX_CALLBACK_DAYS_AHEAD = 90
EFFECT_RETRY_SECONDS = [10, 30, 60, 300, 900]

STEP1 = ("recordings_confirm", "recordings_not_confirmed", "recordings_none")
STEP2 = ("client_confirms", "client_denies", "no_answer")
OUTCOMES = ("close_lost", "offer_again", "return_to_sales")
ACTIONS = (*STEP1, "schedule_callback", "cancel_callback", *STEP2, *OUTCOMES)
REVIEWER_ROLES = ("qa", "head")

MESSAGES: dict[str, Label] = {
    "callback_todo_title": Label("Перезвонить клиенту по сделке «{title}»", 'Call the client back: "{title}"'),
    "callback_todo_description": Label(
        "Проверка отказа (попытка {attempt} из {attempts}). Причина менеджера: {reason}. "
        "Результат звонка отметьте во вкладке «Проверка отказа».",
        "Refusal review (attempt {attempt} of {attempts}). The manager's reason: {reason}. "
        'Record the result in the "Refusal review" tab.',
    ),
    "callback_due": Label(
        "Пора перезвонить клиенту по сделке «{title}» (попытка {attempt} из {attempts}). {link}",
        'Time to call the client back about "{title}" (attempt {attempt} of {attempts}). {link}',
    ),
    "unreachable": Label(
        "Клиент по сделке «{title}» не ответил после {attempts} попыток. Решите судьбу сделки "
        "во вкладке «Проверка отказа». {link}",
        'The client of "{title}" did not answer after {attempts} attempts. Decide the outcome in the '
        '"Refusal review" tab. {link}',
    ),
    "leaked": Label(
        # The fine itself is told once, in the ledger's wording (ledger.TEMPLATES), with its amount.
        "Отказ по сделке «{title}» не подтвердился: клиент не отказывался. Сделка передана другому менеджеру. {link}",
        'The refusal of "{title}" was not confirmed: the client did not refuse. The deal went to another '
        "manager. {link}",
    ),
    "assigned": Label(
        "Вам передана сделка «{title}»: клиент готов продолжить работу. {link}",
        'The deal "{title}" is now yours: the client wants to go on. {link}',
    ),
    "offered_again": Label(
        "Отказ по сделке «{title}» проверен: предложите клиенту снова. Сделка возвращена на стадию «{stage}». {link}",
        'The refusal of "{title}" was reviewed: offer again. The deal is back at "{stage}". {link}',
    ),
}


def message(key: str, language: str, **values: Any) -> str:
    """One of this module's messages in the portal's language."""
    return MESSAGES[key].in_language(language).format(**values)


# ---------------------------------------------------------------- settings


class ReviewSettingsSchema(Schema):
    """Callback settings of a portal."""

    class Meta:
        unknown = RAISE

    callback_interval_minutes = fields.Integer(load_default=120, validate=validate.Range(min=5, max=7 * 24 * 60))
    callback_attempts = fields.Integer(load_default=3, validate=validate.Range(min=1, max=10))


@dataclass(frozen=True)
class ReviewSettings:
    """How often and how many times QA calls a client back before the case is unreachable."""

    callback_interval_minutes: int
    callback_attempts: int


def review_settings(portal: Portal) -> ReviewSettings:
    """The stored settings with defaults."""
    loaded = ReviewSettingsSchema().load(dict((portal.settings or {}).get(SECTION, {})))
    return ReviewSettings(**loaded)


def update_review_settings(portal: Portal, changes: dict[str, Any]) -> ReviewSettings:
    """Validate and store; raises ValidationError naming the wrong fields."""
    current = review_settings(portal)
    merged = {
        "callback_interval_minutes": current.callback_interval_minutes,
        "callback_attempts": current.callback_attempts,
        **changes,
    }
    loaded = ReviewSettingsSchema().load(merged)
    stored = dict(portal.settings or {})
    stored[SECTION] = dict(loaded)
    portal.settings = stored
    flag_modified(portal, "settings")
    return ReviewSettings(**loaded)


# ---------------------------------------------------------------- errors and requests


class ReviewError(Exception):
    """An action that cannot be carried out; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message_text: str, code: str = "refused") -> None:
        super().__init__(message_text)
        self.status = status
        self.message = message_text
        self.code = code


@dataclass(frozen=True)
class ActionRequest:
    """What the page sends: the action, its parameters and what the page showed when it was loaded."""

    action: str
    version: int
    expected_stage_id: str
    expected_responsible_id: str
    note: str = ""
    params: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- reading


def latest_case_for(portal_id: int, deal_id: str) -> RefusalCase | None:
    """The deal's open case, else its most recent closed one."""
    return db.session.scalar(
        sa.select(RefusalCase)
        .where(RefusalCase.portal_id == portal_id, RefusalCase.deal_id == deal_id)
        .order_by(RefusalCase.closed_at.is_not(None), RefusalCase.id.desc())
        .limit(1)
    )


def timeline(case: RefusalCase) -> list[CaseEvent]:
    """The case's steps, oldest first."""
    return list(
        db.session.scalars(
            sa.select(CaseEvent)
            .where(CaseEvent.portal_id == case.portal_id, CaseEvent.case_id == case.id)
            .order_by(CaseEvent.id)
        )
    )


def version_of(case: RefusalCase) -> int:
    """The id of the case's latest step: a page acting on an older version is stale."""
    latest = db.session.scalar(
        sa.select(sa.func.max(CaseEvent.id)).where(CaseEvent.portal_id == case.portal_id, CaseEvent.case_id == case.id)
    )
    return int(latest or 0)


def recordings_verdict(case: RefusalCase) -> str | None:
    """The step-1 result recorded for the case, if any."""
    return db.session.scalar(
        sa.select(CaseEvent.action)
        .where(CaseEvent.portal_id == case.portal_id, CaseEvent.case_id == case.id, CaseEvent.action.in_(STEP1))
        .order_by(CaseEvent.id.desc())
        .limit(1)
    )


def active_callback(case: RefusalCase) -> ReviewCallback | None:
    """The callback waiting for its time or for its answer."""
    return db.session.scalar(
        sa.select(ReviewCallback)
        .where(
            ReviewCallback.portal_id == case.portal_id,
            ReviewCallback.case_id == case.id,
            ReviewCallback.status.in_(ReviewCallback.ACTIVE_STATES),
        )
        .order_by(ReviewCallback.id.desc())
        .limit(1)
    )


def callbacks_of(case: RefusalCase) -> list[ReviewCallback]:
    """Every callback of the case, oldest first."""
    return list(
        db.session.scalars(
            sa.select(ReviewCallback)
            .where(ReviewCallback.portal_id == case.portal_id, ReviewCallback.case_id == case.id)
            .order_by(ReviewCallback.id)
        )
    )


def unanswered_attempts(case: RefusalCase) -> int:
    """How many callbacks the client did not answer."""
    return int(
        db.session.scalar(
            sa.select(sa.func.count(ReviewCallback.id)).where(
                ReviewCallback.portal_id == case.portal_id,
                ReviewCallback.case_id == case.id,
                ReviewCallback.status == ReviewCallback.NO_ANSWER,
            )
        )
        or 0
    )


def allowed_actions(case: RefusalCase, role: str) -> list[str]:
    """What this user may do with the case now (empty for managers and closed cases)."""
    if role not in REVIEWER_ROLES or case.closed_at is not None:
        return []
    if case.state == RefusalCase.AWAITING_REVIEW:
        verdict = recordings_verdict(case)
        return list(STEP1) if verdict in (None, "recordings_confirm") else ["schedule_callback"]
    if case.state == RefusalCase.CALLBACK_SCHEDULED:
        return [*STEP2, "schedule_callback", "cancel_callback"]
    if case.state == RefusalCase.CONFIRMED:
        return ["close_lost", "offer_again"]
    if case.state == RefusalCase.UNREACHABLE:
        return list(OUTCOMES) if role == "head" else []
    return []


def sales_stages(portal: Portal, crm: CrmClient, pipeline_id: str) -> list[Stage]:
    """In-progress stages of a pipeline a deal may go back to (not Conditional refusal)."""
    refusal = refusal_stage_for(portal, pipeline_id)
    for pipeline in directory.pipelines(portal.id, crm):
        if pipeline.id == pipeline_id:
            return sorted(
                (s for s in pipeline.stages if s.semantics == "process" and s.id != refusal), key=lambda s: s.sort
            )
    return []


def lost_stage(portal: Portal, crm: CrmClient, pipeline_id: str) -> Stage | None:
    """The pipeline's first lost (failure) stage."""
    for pipeline in directory.pipelines(portal.id, crm):
        if pipeline.id == pipeline_id:
            failures = sorted((s for s in pipeline.stages if s.semantics == "failure"), key=lambda s: s.sort)
            return failures[0] if failures else None
    return None


def sales_candidates(portal: Portal, crm: CrmClient, leaker_id: str) -> list[str]:
    """Managers a leaked deal may go to: active colleagues of the leaker who are not QA, heads or exempt."""
    settings = guard_settings(portal)
    everyone = [user for user in directory.users(portal.id, crm) if user.active and user.id != leaker_id]
    not_reviewers = [user for user in everyone if directory.role_of(portal.id, crm, settings, user.id) == "manager"]
    leaker = next((user for user in directory.users(portal.id, crm) if user.id == leaker_id), None)
    departments = set(leaker.department_ids) if leaker else set()
    colleagues = [user.id for user in not_reviewers if departments & set(user.department_ids)]
    chosen = colleagues or [user.id for user in not_reviewers]
    return sorted(chosen, key=lambda value: (len(value), value))


def callback_assignees(portal: Portal, crm: CrmClient) -> list[str]:
    """Who may be given a callback: QA staff (heads when there are none)."""
    settings = guard_settings(portal)
    return directory.qa_staff(portal.id, crm, settings) or directory.heads(portal.id, crm, settings)


def callback_job_id(portal_id: int, case_id: int) -> str:
    """One scheduled callback job per case: rescheduling replaces it."""
    return f"review-callback-{portal_id}-{case_id}"


def scheduled_callback_jobs(portal_id: int, case_id: int) -> list[str]:
    """The case's callback jobs waiting in the scheduler (for tests and diagnostics)."""
    job_id = callback_job_id(portal_id, case_id)
    return [j for j in get_queue(CALLBACK_QUEUE).scheduled_job_registry.get_job_ids() if j == job_id]


# ---------------------------------------------------------------- acting


def parse_local_time(value: str, timezone: str) -> datetime:
    """'2026-11-25T15:30' in the portal's time zone → aware UTC datetime; ReviewError 400 if malformed."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except (ValueError, AttributeError) as error:
        raise ReviewError(400, "date and time are required (YYYY-MM-DDTHH:MM)", "bad_request") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone))
    return moment.astimezone(ZoneInfo("UTC"))


class Review:
    """Carries out one user's actions on one portal's cases."""

    def __init__(self, portal: Portal, crm: CrmClient, user_id: str) -> None:
        self.portal = portal
        self.crm = crm
        self.user_id = user_id
        self.language = portal.language
        self.settings = guard_settings(portal)
        self.review = review_settings(portal)

    def role(self) -> str:
        """The user's role under the portal's settings."""
        return directory.role_of(self.portal.id, self.crm, self.settings, self.user_id)

    def perform(self, case_id: int, request: ActionRequest) -> RefusalCase:
        """Carry out an action: lock, re-read, check, write the case and plan effects, commit, run effects."""
        if request.action not in ACTIONS:
            raise ReviewError(404, f"no action {request.action!r}", "not_found")
        role = self.role()
        if role not in REVIEWER_ROLES:
            raise ReviewError(403, "only QA staff and heads of sales can act on a refusal case", "forbidden")
        # Warm the caches before taking the lock: no CRM listing happens while the case is written.
        directory.pipelines(self.portal.id, self.crm)
        directory.users(self.portal.id, self.crm)
        case = self._case(case_id)
        with deal_lock(self.portal.id, case.deal_id):
            db.session.expire_all()
            case = self._case(case_id)
            run_pending_effects(self.portal.id, case.deal_id, self.crm)
            deal = self.crm.get_deal(case.deal_id)
            self._check(case, deal, role, request)
            after_commit = self._apply(case, deal, request)
            db.session.commit()
            carry_out_or_retry_later(self.portal.id, case.deal_id, self.crm)
        after_commit()
        log.info("review action", extra={"case_id": case.id, "action": request.action, "state": case.state})
        return case

    def _case(self, case_id: int) -> RefusalCase:
        case = db.session.scalar(
            sa.select(RefusalCase).where(RefusalCase.id == case_id, RefusalCase.portal_id == self.portal.id)
        )
        if case is None:
            raise ReviewError(404, "not found", "not_found")
        return case

    def _check(self, case: RefusalCase, deal: Deal, role: str, request: ActionRequest) -> None:
        if request.version != version_of(case):
            raise ReviewError(
                409,
                "The case has changed since the page was loaded (someone has already acted on it). "
                "Nothing was done; reload the tab.",
                "stale_case",
            )
        allowed = allowed_actions(case, role)
        if request.action not in allowed:
            if case.state == RefusalCase.UNREACHABLE and role != "head" and request.action in OUTCOMES:
                raise ReviewError(403, "only a head of sales decides an unreachable case", "forbidden")
            raise ReviewError(409, f"this action is not possible while the case is {case.state}", "wrong_state")
        if (deal.stage_id, deal.responsible_id) != (request.expected_stage_id, request.expected_responsible_id):
            raise ReviewError(
                409,
                "The deal was changed in the CRM since the page was loaded (stage or responsible). "
                "Nothing was written; reload the tab and check again.",
                "stale_deal",
            )

    def _apply(self, case: RefusalCase, deal: Deal, request: ActionRequest) -> Any:
        """Write the case and plan the effects; returns what to do once the transaction is committed."""
        action = request.action
        note = request.note.strip()[:4000]
        if action in STEP1:
            if action == "recordings_confirm":
                case.state = RefusalCase.CONFIRMED
            add_case_event(case, self.user_id, action, note)
            audit.record(self.portal.id, self.user_id, "review recordings", action, note, deal_id=deal.id)
            return _nothing
        if action == "schedule_callback":
            return self._schedule(case, deal, request.params, note)
        if action == "cancel_callback":
            self._close_callback(case, ReviewCallback.CANCELLED, note)
            case.state = RefusalCase.AWAITING_REVIEW
            add_case_event(case, self.user_id, action, note)
            return self._unschedule(case)
        if action == "client_confirms":
            self._close_callback(case, ReviewCallback.ANSWERED, note)
            case.state = RefusalCase.CONFIRMED
            add_case_event(case, self.user_id, action, note)
            return self._unschedule(case)
        if action == "no_answer":
            return self._no_answer(case, deal, note)
        if action == "client_denies":
            stage, manager = self._return_params(case, deal, request.params)
            self._close_callback(case, ReviewCallback.ANSWERED, note)
            add_case_event(case, self.user_id, action, note)
            self._return_to_sales(case, deal, stage, manager, note)
            return self._unschedule(case)
        if action == "close_lost":
            self._close_lost(case, deal, request.params, note)
            return _nothing
        if action == "offer_again":
            self._offer_again(case, deal, request.params, note)
            return _nothing
        stage, manager = self._return_params(case, deal, request.params)
        self._return_to_sales(case, deal, stage, manager, note)
        return _nothing

    # -- callbacks ---------------------------------------------------------------------------
    def _schedule(self, case: RefusalCase, deal: Deal, params: dict[str, str], note: str) -> Any:
        due = parse_local_time(params.get("at", ""), zone_name(self.portal))
        now = utcnow()
        if due <= now:
            raise ReviewError(400, "the callback time must be in the future", "bad_request")
        if due > now + timedelta(days=MAX_CALLBACK_DAYS_AHEAD):
            raise ReviewError(400, f"the callback must be within {MAX_CALLBACK_DAYS_AHEAD} days", "bad_request")
        assignee = params.get("assignee", "").strip()
        if assignee not in callback_assignees(self.portal, self.crm):
            raise ReviewError(400, "the callback must be assigned to a QA staff member", "bad_request")
        previous = active_callback(case)
        attempt = previous.attempt if previous is not None else unanswered_attempts(case) + 1
        self._close_callback(case, ReviewCallback.CANCELLED, "rescheduled")
        callback = self._new_callback(case, deal, assignee, due, attempt, note)
        case.state = RefusalCase.CALLBACK_SCHEDULED
        when = i18n.when(due, self.language, zone_name(self.portal))
        add_case_event(case, self.user_id, "schedule_callback", f"{when}; {assignee}" + (f"; {note}" if note else ""))
        audit.record(self.portal.id, self.user_id, "schedule callback", "scheduled", when, deal_id=deal.id)
        return lambda: _schedule_job(self.portal.id, case.id, callback.id, due)

    def _new_callback(
        self, case: RefusalCase, deal: Deal, assignee: str, due: datetime, attempt: int, note: str
    ) -> ReviewCallback:
        callback = ReviewCallback(
            portal_id=self.portal.id,
            case_id=case.id,
            deal_id=deal.id,
            assignee_id=assignee,
            due_at=due,
            attempt=attempt,
            status=ReviewCallback.SCHEDULED,
            note=note,
            created_by=self.user_id,
        )
        db.session.add(callback)
        db.session.flush()
        return callback

    def _close_callback(self, case: RefusalCase, status: str, note: str) -> ReviewCallback | None:
        callback = active_callback(case)
        if callback is not None:
            callback.status = status
            if note:
                callback.note = note
        return callback

    def _unschedule(self, case: RefusalCase) -> Any:
        return lambda: cancel_callback_job(self.portal.id, case.id)

    def _no_answer(self, case: RefusalCase, deal: Deal, note: str) -> Any:
        current = self._close_callback(case, ReviewCallback.NO_ANSWER, note)
        db.session.flush()
        attempts = unanswered_attempts(case)
        limit = self.review.callback_attempts
        if attempts >= limit:
            case.state = RefusalCase.UNREACHABLE
            add_case_event(case, self.user_id, "no_answer", f"{attempts}/{limit}" + (f"; {note}" if note else ""))
            add_case_event(case, self.user_id, "unreachable", "")
            self._write(case, deal, "unreachable", {"qa_verdict": "unreachable"})
            link = self.crm.deal_url(deal.id)
            for head in directory.heads(self.portal.id, self.crm, self.settings):
                plan_effect(
                    self.portal.id,
                    deal.id,
                    f"case:{case.id}:unreachable:notice:{head}",
                    "notify",
                    {
                        "user_id": head,
                        "message": message("unreachable", self.language, title=deal.title, attempts=limit, link=link),
                    },
                )
            audit.record(self.portal.id, self.user_id, "callback", "client unreachable", f"{attempts}", deal_id=deal.id)
            return self._unschedule(case)
        assignee = current.assignee_id if current is not None else (case.qa_user_id or self.user_id)
        due = utcnow() + timedelta(minutes=self.review.callback_interval_minutes)
        callback = self._new_callback(case, deal, assignee, due, attempts + 1, "")
        when = i18n.when(due, self.language, zone_name(self.portal))
        add_case_event(case, self.user_id, "no_answer", f"{attempts}/{limit}; {when}" + (f"; {note}" if note else ""))
        return lambda: _schedule_job(self.portal.id, case.id, callback.id, due)

    # -- outcomes ----------------------------------------------------------------------------
    def _write(self, case: RefusalCase, deal: Deal, step: str, change: dict[str, Any]) -> None:
        """Plan one keyed deal write; the snapshot first holds what we write so the echo is recognised."""
        stage_id = change.get("stage_id")
        remember(self.portal.id, deal, stage_id=stage_id)
        snapshot = db.session.scalar(
            sa.select(DealSnapshot).where(DealSnapshot.portal_id == self.portal.id, DealSnapshot.deal_id == deal.id)
        )
        if snapshot is not None:
            if stage_id is not None:
                known = directory.stage(self.portal.id, self.crm, stage_id)
                snapshot.stage_semantics = known.semantics if known else "process"
            if change.get("responsible_id"):
                snapshot.responsible_id = change["responsible_id"]
            if change.get("refusal_reason"):
                snapshot.refusal_reason = change["refusal_reason"]
        plan_effect(self.portal.id, deal.id, f"case:{case.id}:{step}", "update", change)

    def _close(self, case: RefusalCase, state: str, action: str, note: str) -> None:
        case.state = state
        case.closed_at = utcnow()
        add_case_event(case, self.user_id, action, note)
        end_case_work(self.portal, case)

    def _close_lost(self, case: RefusalCase, deal: Deal, params: dict[str, str], note: str) -> None:
        reason = params.get("reason") or case.reason
        known = reasons.find(self.portal.id, reason)
        if known is None or (known.retired and reason != case.reason):
            raise ReviewError(400, f"unknown reason {reason!r}", "bad_request")
        target = lost_stage(self.portal, self.crm, deal.pipeline_id)
        if target is None:
            raise ReviewError(409, "the deal's pipeline has no lost stage", "no_lost_stage")
        change: dict[str, Any] = {"stage_id": target.id, "qa_verdict": "confirmed"}
        if reason != deal.refusal_reason:
            change["refusal_reason"] = reason
        self._write(case, deal, "outcome", change)
        if reason != case.reason:
            note = f"{case.reason} → {reason}" + (f"; {note}" if note else "")
            case.reason = reason
        self._close(case, RefusalCase.CLOSED_LOST, "close_lost", note)
        audit.record(self.portal.id, self.user_id, "close as lost", "closed lost", reason, deal_id=deal.id)

    def _stage_param(self, deal: Deal, value: str) -> Stage:
        for stage in sales_stages(self.portal, self.crm, deal.pipeline_id):
            if stage.id == value:
                return stage
        raise ReviewError(400, "choose a sales stage of the deal's pipeline", "bad_request")

    def _offer_again(self, case: RefusalCase, deal: Deal, params: dict[str, str], note: str) -> None:
        stage = self._stage_param(deal, params.get("stage_id") or case.previous_stage_id)
        self._write(case, deal, "outcome", {"stage_id": stage.id, "qa_verdict": "win_back"})
        self._close(case, RefusalCase.WIN_BACK, "offer_again", f"{stage.name}" + (f"; {note}" if note else ""))
        link = self.crm.deal_url(deal.id)
        plan_effect(
            self.portal.id,
            deal.id,
            f"case:{case.id}:outcome:notice",
            "notify",
            {
                "user_id": deal.responsible_id,
                "message": message("offered_again", self.language, title=deal.title, stage=stage.name, link=link),
            },
        )
        audit.record(self.portal.id, self.user_id, "offer again", "back to sales", stage.id, deal_id=deal.id)

    def _return_params(self, case: RefusalCase, deal: Deal, params: dict[str, str]) -> tuple[Stage, str]:
        stage = self._stage_param(deal, params.get("stage_id") or case.previous_stage_id)
        candidates = sales_candidates(self.portal, self.crm, case.manager_id)
        manager = (params.get("manager_id") or "").strip()
        if manager:
            if manager == case.manager_id:
                raise ReviewError(400, "the deal cannot go back to the manager who leaked it", "bad_request")
            if manager not in candidates:
                raise ReviewError(400, "choose an active sales manager", "bad_request")
            return stage, manager
        if not candidates:
            raise ReviewError(409, "there is no other active sales manager to give the deal to", "no_manager")
        turn = int(get_redis().incr(f"rc:rr:sales:{self.portal.id}")) - 1
        return stage, candidates[turn % len(candidates)]

    def _return_to_sales(self, case: RefusalCase, deal: Deal, stage: Stage, manager: str, note: str) -> None:
        self._write(case, deal, "outcome", {"stage_id": stage.id, "responsible_id": manager, "qa_verdict": "leaked"})
        self._close(
            case, RefusalCase.LEAKED, "return_to_sales", f"{stage.name}; {manager}" + (f"; {note}" if note else "")
        )
        penalty = issue_penalty(self.portal, case, deal, created_by=self.user_id)
        recovery.returned(self.portal.id, case, deal, manager)
        link = self.crm.deal_url(deal.id)
        amount = i18n.money(penalty.amount, penalty.currency, self.language)
        plan_effect(
            self.portal.id,
            deal.id,
            f"case:{case.id}:leaked:notice",
            "notify",
            {
                "user_id": case.manager_id,
                "message": message(
                    "leaked", self.language, title=deal.title, amount=amount, currency=penalty.currency, link=link
                ),
            },
        )
        plan_effect(
            self.portal.id,
            deal.id,
            f"case:{case.id}:assigned:notice",
            "notify",
            {"user_id": manager, "message": message("assigned", self.language, title=deal.title, link=link)},
        )
        audit.record(
            self.portal.id,
            self.user_id,
            "return to sales",
            "leaked",
            f"to {manager}, fine {penalty.amount} {penalty.currency}",
            deal_id=deal.id,
        )


def _nothing() -> None:
    return None


def _schedule_job(portal_id: int, case_id: int, callback_id: int, due: datetime) -> None:
    job_id = callback_job_id(portal_id, case_id)
    replace_scheduled(CALLBACK_QUEUE, "app.jobs.fire_callback", callback_id, job_id=job_id, at=due)


def cancel_callback_job(portal_id: int, case_id: int) -> None:
    """Drop the case's scheduled callback job, if any."""
    queue = get_queue(CALLBACK_QUEUE)
    job_id = callback_job_id(portal_id, case_id)
    try:
        job = Job.fetch(job_id, connection=queue.connection)
    except NoSuchJobError:
        return
    job.cancel()
    job.delete()


# ---------------------------------------------------------------- the callback job


def fire_callback(callback_id: int) -> str:
    """RQ job at the callback's time: a call to-do for the assignee in the CRM and a notification."""
    callback = db.session.get(ReviewCallback, callback_id)
    if callback is None or callback.status != ReviewCallback.SCHEDULED:
        return "skipped"
    portal = db.session.get(Portal, callback.portal_id)
    if portal is None or portal.status == "uninstalled":
        return "skipped"
    crm = client_for(portal)
    with deal_lock(portal.id, callback.deal_id):
        db.session.expire_all()
        callback = db.session.get(ReviewCallback, callback_id)
        case = db.session.get(RefusalCase, callback.case_id) if callback is not None else None
        if callback is None or case is None or callback.status != ReviewCallback.SCHEDULED:
            return "skipped"
        if case.state != RefusalCase.CALLBACK_SCHEDULED:
            return "skipped"
        language = portal.language
        attempts = review_settings(portal).callback_attempts
        reason = reasons.name_of(portal.id, case.reason, language)
        title = case.deal_title or f"#{case.deal_id}"
        plan_effect(
            portal.id,
            case.deal_id,
            f"callback:{callback.id}:todo",
            "todo",
            {
                "callback_id": callback.id,
                "title": message("callback_todo_title", language, title=title),
                "description": message(
                    "callback_todo_description", language, attempt=callback.attempt, attempts=attempts, reason=reason
                ),
                "responsible_id": callback.assignee_id,
                "deadline": callback.due_at.isoformat(),
            },
        )
        plan_effect(
            portal.id,
            case.deal_id,
            f"callback:{callback.id}:notice",
            "notify",
            {
                "user_id": callback.assignee_id,
                "message": message(
                    "callback_due",
                    language,
                    title=title,
                    attempt=callback.attempt,
                    attempts=attempts,
                    link=crm.deal_url(case.deal_id),
                ),
            },
        )
        callback.status = ReviewCallback.DUE
        db.session.commit()
        carry_out_or_retry_later(portal.id, case.deal_id, crm)
    return "fired"


def carry_out_or_retry_later(portal_id: int, deal_id: str, crm: CrmClient) -> None:
    """Run the deal's pending effects now; if the CRM fails, a job retries them with back-off.

    The decision is already committed (the case moved on), so the user's action succeeded; the CRM
    catches up as soon as it answers again, and each keyed effect still happens exactly once.
    """
    try:
        run_pending_effects(portal_id, deal_id, crm)
    except CrmError as error:
        db.session.rollback()
        log.warning("review effects postponed", extra={"deal_id": deal_id, "error": str(error)})
        retry = Retry(max=5, interval=EFFECT_RETRY_SECONDS)
        enqueue("default", "app.jobs.retry_effects", portal_id, deal_id, retry=retry)


def retry_effects(portal_id: int, deal_id: str) -> int:
    """RQ job: carry out a deal's pending effects under its lock; raises (so RQ retries) while the CRM fails."""
    portal = db.session.get(Portal, portal_id)
    if portal is None:
        return 0
    with deal_lock(portal_id, deal_id):
        return run_pending_effects(portal_id, deal_id, client_for(portal))


def carry_out_todo(effect: Effect, crm: CrmClient) -> str:
    """The `todo` effect: create the call to-do and remember its id on the callback."""
    payload = effect.payload
    todo_id = crm.create_todo(
        NewTodo(
            title=payload["title"],
            responsible_id=payload["responsible_id"],
            deal_id=effect.deal_id,
            deadline=datetime.fromisoformat(payload["deadline"]),
            description=payload.get("description", ""),
        )
    )
    callback = db.session.get(ReviewCallback, payload["callback_id"])
    if callback is not None:
        callback.todo_id = todo_id
    return todo_id


# ---------------------------------------------------------------- views for the pages


def duration_text(delta: timedelta, language: str) -> str:
    """'3 часа' / '3 hours'."""
    return format_timedelta(delta, granularity="minute", locale="en" if language == "en" else "ru")


def _source_names(portal: Portal) -> dict[str, str]:
    """The portal's lead sources by id (empty when the CRM cannot say: the ids are shown then)."""
    from app.domain.reports import lead_sources

    try:
        return {source.id: source.name for source in lead_sources(portal)}
    except CrmError:
        return {}


def _names(portal: Portal, crm: CrmClient) -> dict[str, str]:
    return {user.id: user.name for user in directory.users(portal.id, crm)}


def state_label(case: RefusalCase, language: str) -> str:
    """The case's status as the tab shows it: after «не подтверждают» / «записей нет» it says a call is needed."""
    if case.state == RefusalCase.AWAITING_REVIEW and recordings_verdict(case) in STEP1[1:]:
        return i18n.translate("review_state_needs_callback", language)
    return i18n.translate(f"review_state_{case.state}", language)


def next_step(case: RefusalCase, role: str, names: dict[str, str], language: str, timezone: str) -> str:
    """What happens next on an open case (matching the status and the buttons shown); "" once it is closed."""
    t = lambda key, **values: i18n.translate(key, language).format(**values)  # noqa: E731
    if case.closed_at is not None:
        return ""
    if case.state == RefusalCase.UNREACHABLE:
        return t("next_head_decides")
    if role not in REVIEWER_ROLES:
        return ""
    if case.state == RefusalCase.AWAITING_REVIEW:
        return t("next_schedule") if recordings_verdict(case) in STEP1[1:] else t("next_listen")
    if case.state == RefusalCase.CALLBACK_SCHEDULED:
        callback = active_callback(case)
        if callback is not None:
            when = i18n.when(callback.due_at, language, timezone)
            return t("next_call", when=when, name=names.get(callback.assignee_id, callback.assignee_id))
        return t("next_schedule")
    if case.state == RefusalCase.CONFIRMED:
        return t("next_decide")
    return ""


def _last_event(case: RefusalCase, *actions: str) -> CaseEvent | None:
    return next((event for event in reversed(timeline(case)) if event.action in actions), None)


def summary(portal: Portal, case: RefusalCase, names: dict[str, str], language: str) -> str:
    """The outcome of a finished review in one or two sentences: what happened, the new manager, the fine."""
    t = lambda key, **values: i18n.translate(key, language).format(**values)  # noqa: E731
    if case.closed_at is None:
        return ""
    reason = reasons.name_of(portal.id, case.reason, language)
    if case.state == RefusalCase.CLOSED_LOST:
        in_crm = _last_event(case, "closed_lost_in_crm", "close_lost")
        if in_crm is not None and in_crm.action == "closed_lost_in_crm":
            return t("summary_in_crm", who=review_text.actor_name(in_crm.actor, names, language))
        return t("summary_closed_lost", reason=reason)
    if case.state == RefusalCase.WIN_BACK:
        event = _last_event(case, "offer_again", "returned_in_crm")
        if event is not None and event.action == "returned_in_crm":
            return t("summary_returned_in_crm", who=review_text.actor_name(event.actor, names, language))
        stage = (event.note.split("; ", 1)[0] if event is not None else "") or "—"
        return t("summary_win_back", stage=stage, manager=names.get(case.manager_id, case.manager_id))
    if case.state == RefusalCase.LEAKED:
        event = _last_event(case, "return_to_sales")
        parts = event.note.split("; ", 2) if event is not None else []
        stage = parts[0] if parts else "—"
        manager = names.get(parts[1], parts[1]) if len(parts) > 1 else "—"
        said = t("summary_leaked", stage=stage, manager=manager)
        fines = list(
            db.session.scalars(
                sa.select(Penalty)
                .where(Penalty.portal_id == portal.id, Penalty.case_id == case.id)
                .order_by(Penalty.id)
            )
        )
        fine = next((row for row in fines if row.kind == Penalty.PENALTY), None)
        if fine is not None:
            amount = i18n.money(fine.amount, fine.currency, language)
            leaker = names.get(fine.manager_id, fine.manager_id)
            cancelled = any(row.kind == Penalty.REVERSAL for row in fines)
            said += " " + t("summary_fine_cancelled" if cancelled else "summary_fine", leaker=leaker, amount=amount)
        return said
    if case.state == RefusalCase.WITHDRAWN:
        event = _last_event(case, "withdrawn")
        return t("summary_deleted" if event is not None and event.note == "deleted" else "summary_withdrawn")
    return ""


def action_text(portal: Portal, crm: CrmClient, case: RefusalCase, action: str, language: str) -> str:
    """What an action just did, said to the user who pressed the button."""
    t = lambda key, **values: i18n.translate(key, language).format(**values)  # noqa: E731
    names = _names(portal, crm)
    if case.closed_at is not None:
        return summary(portal, case, names, language)
    callback = active_callback(case)
    if action == "schedule_callback" and callback is not None:
        when = i18n.when(callback.due_at, language, zone_name(portal))
        return t("did_schedule_callback", when=when, name=names.get(callback.assignee_id, callback.assignee_id))
    if action == "no_answer":
        attempts = review_settings(portal).callback_attempts
        if case.state == RefusalCase.UNREACHABLE or callback is None:
            return t("did_unreachable", attempts=attempts)
        when = i18n.when(callback.due_at, language, zone_name(portal))
        name = names.get(callback.assignee_id, callback.assignee_id)
        return t("did_no_answer", attempt=callback.attempt - 1, attempts=attempts, when=when, name=name)
    key = f"did_{action}"
    return t(key) if key in i18n.STRINGS else ""


def case_view(
    portal: Portal, crm: CrmClient, case: RefusalCase, user_id: str, is_admin: bool, language: str | None = None
) -> dict[str, Any]:
    """Everything the review tab shows for a case, and what this user may do (in `language`, default the portal's)."""
    language = language or portal.language
    settings = guard_settings(portal)
    role = directory.role_of(portal.id, crm, settings, user_id)
    deal = crm.get_deal(case.deal_id)
    calls = crm.list_deal_calls(case.deal_id)
    names = _names(portal, crm)
    cpl = resolve_cpl(portal, deal)
    now = utcnow()
    in_refusal = (case.closed_at or now) - case.opened_at
    callback = active_callback(case)
    review = review_settings(portal)

    def person(user: str | None) -> dict[str, str]:
        return {"id": user or "", "name": names.get(user or "", user or "—")}

    def label(table: dict[str, Label], code: str | None) -> str:
        return table[code].in_language(language) if code and code in table else (code or "—")

    can_listen = role in REVIEWER_ROLES or is_admin or user_id == case.manager_id
    sources = _source_names(portal)
    pipelines = {p.id: p.name for p in directory.pipelines(portal.id, crm)}
    return {
        "case": {
            "id": case.id,
            "state": case.state,
            "state_label": state_label(case, language),
            "next_step": next_step(case, role, names, language, zone_name(portal)),
            "summary": summary(portal, case, names, language),
            "open": case.closed_at is None,
            "manager": person(case.manager_id),
            "qa_user": person(case.qa_user_id),
            "reason": case.reason,
            "reason_label": reasons.name_of(portal.id, case.reason, language),
            "comment": case.comment,
            "opened_at": i18n.when(case.opened_at, language, zone_name(portal)),
            "due_at": i18n.when(case.review_due_at, language, zone_name(portal)),
            "overdue": case.closed_at is None and case.review_due_at is not None and case.review_due_at < now,
            "in_refusal": duration_text(in_refusal, language),
            # amoCRM's leads carry no currency of their own: the amount is in the account's, the one CPL uses.
            "amount": i18n.money(deal.amount, deal.currency or cpl.currency, language),
            "source": sources.get(deal.source_id, deal.source_id) if deal.source_id else "—",
            "cpl": i18n.money(cpl.amount, cpl.currency, language),
            "cpl_rule": review_text.cpl_rule_text(cpl.rule, language, sources, pipelines),
            "verdict": label(VERDICTS, deal.qa_verdict) if deal.qa_verdict else "",
            "recordings_verdict": recordings_verdict(case),
            "unanswered": unanswered_attempts(case),
            "attempts": review.callback_attempts,
        },
        "deal": {
            "id": deal.id,
            "title": deal.title,
            "stage_id": deal.stage_id,
            "responsible": person(deal.responsible_id),
            "url": crm.deal_url(deal.id),
        },
        "expected": {"stage_id": deal.stage_id, "responsible_id": deal.responsible_id},
        "version": version_of(case),
        "role": role,
        "actions": allowed_actions(case, role),
        "calls": [
            {
                "id": call.id,
                "direction": call.direction,
                "user": person(call.user_id),
                "started_at": i18n.when(call.started_at, language, zone_name(portal)),
                "duration": duration_text(timedelta(seconds=call.duration_seconds), language),
                "phone": call.phone,
                "has_recording": bool(call.recording_url),
                "playable": bool(call.recording_url) and can_listen,
            }
            for call in calls
        ],
        "timeline": [
            {
                "at": i18n.when(event.created_at, language, zone_name(portal)),
                "actor": review_text.actor_name(event.actor, names, language),
                "action": event.action,
                "action_label": i18n.translate(f"review_event_{event.action}", language)
                if f"review_event_{event.action}" in i18n.STRINGS
                else event.action,
                "note": review_text.timeline_note(event.action, event.note, names, language),
            }
            for event in timeline(case)
        ],
        "callback": None
        if callback is None
        else {
            "id": callback.id,
            "at": i18n.when(callback.due_at, language, zone_name(portal)),
            "assignee": person(callback.assignee_id),
            "attempt": callback.attempt,
            "status": callback.status,
        },
        "choices": {
            "stages": [{"id": s.id, "name": s.name} for s in sales_stages(portal, crm, deal.pipeline_id)],
            "default_stage": case.previous_stage_id,
            "assignees": [person(user) for user in callback_assignees(portal, crm)],
            "default_assignee": case.qa_user_id or user_id,
            "managers": [person(user) for user in sales_candidates(portal, crm, case.manager_id)],
            "reasons": reasons.choices(portal.id, language),
            "now_local": now.astimezone(portal_zone(portal)).strftime("%Y-%m-%dT%H:%M"),
        },
    }


def queue_view(portal: Portal, crm: CrmClient, filters: dict[str, str], language: str | None = None) -> dict[str, Any]:
    """Open cases, overdue first (earliest deadline first), with the filter choices (in `language`)."""
    language = language or portal.language
    query = sa.select(RefusalCase).where(
        RefusalCase.portal_id == portal.id,
        RefusalCase.state.in_(RefusalCase.OPEN_STATES),
        RefusalCase.closed_at.is_(None),
    )
    columns = {
        "pipeline": RefusalCase.pipeline_id,
        "manager": RefusalCase.manager_id,
        "qa": RefusalCase.qa_user_id,
        "state": RefusalCase.state,
    }
    for key, column in columns.items():
        if filters.get(key):
            query = query.where(column == filters[key])
    query = query.order_by(RefusalCase.review_due_at.is_(None), RefusalCase.review_due_at, RefusalCase.id)
    names = _names(portal, crm)
    pipelines = {p.id: p.name for p in directory.pipelines(portal.id, crm)}
    reason_names = reasons.names(portal.id, language)
    now = utcnow()
    rows = []
    for case in db.session.scalars(query):
        left = (case.review_due_at - now) if case.review_due_at else None
        callback = active_callback(case)
        rows.append(
            {
                "id": case.id,
                "deal_id": case.deal_id,
                "title": case.deal_title or f"#{case.deal_id}",
                "url": crm.deal_url(case.deal_id),
                "pipeline": pipelines.get(case.pipeline_id, case.pipeline_id),
                "manager": names.get(case.manager_id, case.manager_id),
                "qa_user": names.get(case.qa_user_id or "", case.qa_user_id or "—"),
                "state": case.state,
                "state_label": state_label(case, language),
                "reason": reason_names.get(case.reason, case.reason),
                "due_at": i18n.when(case.review_due_at, language, zone_name(portal)),
                "seconds_left": int(left.total_seconds()) if left is not None else None,
                "overdue": left is not None and left.total_seconds() < 0,
                "sla": duration_text(abs(left), language) if left is not None else "—",
                "callback_at": i18n.when(callback.due_at, language, zone_name(portal)) if callback else "",
            }
        )
    open_cases = sa.select(RefusalCase).where(RefusalCase.portal_id == portal.id, RefusalCase.closed_at.is_(None))
    every = list(db.session.scalars(open_cases))
    return {
        "cases": rows,
        "filters": {
            "pipeline": [{"id": pid, "name": name} for pid, name in pipelines.items()],
            "manager": _people(sorted({c.manager_id for c in every}), names),
            "qa": _people(sorted({c.qa_user_id for c in every if c.qa_user_id}), names),
            "state": [
                {"id": state, "name": i18n.translate(f"review_state_{state}", language)}
                for state in RefusalCase.OPEN_STATES
            ],
        },
    }


def _people(ids: list[str], names: dict[str, str]) -> list[dict[str, str]]:
    return [{"id": user, "name": names.get(user, user)} for user in ids]
