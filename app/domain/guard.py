"""The stage guard and the refusal-case state machine (CRM-agnostic: only the port and the database)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from app.core import i18n
from app.core.db import db
from app.core.models import CaseEvent, DealSnapshot, Effect, Portal, RefusalCase, ReviewCallback, utcnow
from app.core.queue import get_redis
from app.crm.errors import CrmError, PortalNeedsReinstall
from app.crm.port import AUTOMATION, CrmClient, Deal, NewTask, TaskCompletion
from app.domain import (  # noqa: F401 - review_text registers the strings
    audit,
    directory,
    notices,
    reasons,
    recovery,
    review_text,
    stages,
)
from app.domain.effects import deal_lock, plan_effect, run_pending_effects
from app.domain.settings import GuardSettings, guard_settings

log = logging.getLogger(__name__)
# Rules for in-progress moves (fn(guard, deal, previous stage, previous pipeline, mover, role) -> Decision,
# or None to let it pass), filled by create_app.
PROCESS_MOVE_RULES: list[Callable[[Guard, Deal, str, str, str, str], Decision | None]] = []
# Rules for a deal the app sees for the first time in an in-progress or won stage after install (created
# there, imported, or moved while its events were lost): fn(guard, deal, mover, role) -> Decision or None.
FIRST_SEEN_RULES: list[Callable[[Guard, Deal, str, str], Decision | None]] = []
# Followers of a deal as read from the CRM (fn(portal id, deal)), called by `remember` like recovery.deal_seen;
# filled by create_app.
SEEN_HOOKS: list[Callable[[int, Deal], None]] = []


@dataclass(frozen=True)
class Decision:
    """What the guard decided about one deal, for logs and tests."""

    outcome: str
    reason: str = ""


def refusal_stage_for(portal: Portal, pipeline_id: str) -> str | None:
    """The Conditional refusal stage of this pipeline (created by the installer, or when the app first noticed
    a pipeline created after install)."""
    return stages.known_stage(portal, pipeline_id)


def open_case_for(portal_id: int, deal_id: str) -> RefusalCase | None:
    """The deal's open case, if any."""
    return db.session.scalar(
        sa.select(RefusalCase).where(
            RefusalCase.portal_id == portal_id, RefusalCase.deal_id == deal_id, RefusalCase.closed_at.is_(None)
        )
    )


def _snapshot(portal_id: int, deal_id: str) -> DealSnapshot | None:
    return db.session.scalar(
        sa.select(DealSnapshot).where(DealSnapshot.portal_id == portal_id, DealSnapshot.deal_id == deal_id)
    )


def remember(portal_id: int, deal: Deal, stage_id: str | None = None, pipeline_id: str | None = None) -> None:
    """Store what the deal looks like now, or will look like once our own write lands."""
    snapshot = _snapshot(portal_id, deal.id) or DealSnapshot(portal_id=portal_id, deal_id=deal.id)
    snapshot.pipeline_id = pipeline_id or deal.pipeline_id
    snapshot.stage_id = stage_id or deal.stage_id
    snapshot.stage_semantics = deal.stage_semantics if stage_id is None else "process"
    snapshot.responsible_id = deal.responsible_id
    snapshot.refusal_reason = deal.refusal_reason
    snapshot.refusal_comment = deal.refusal_comment or ""
    snapshot.modified_at = deal.modified_at
    snapshot.title = deal.title[:255]
    snapshot.amount = str(deal.amount)
    snapshot.currency = deal.currency[:8]
    snapshot.source_id = deal.source_id[:64]
    snapshot.cpl = None if deal.cpl is None else str(deal.cpl)
    db.session.add(snapshot)
    if stage_id is None:  # the deal as it is (not as our write will leave it): a recovered deal won or lost
        recovery.deal_seen(portal_id, deal)
        for hook in SEEN_HOOKS:
            hook(portal_id, deal)


def snapshot_of(portal_id: int, deal_id: str) -> DealSnapshot | None:
    """What we last saw (or wrote) of the deal."""
    return _snapshot(portal_id, deal_id)


def forget_deal(portal_id: int, deal_id: str) -> None:
    """A deleted deal: drop its snapshot; its cases stay as history."""
    db.session.execute(
        sa.delete(DealSnapshot).where(DealSnapshot.portal_id == portal_id, DealSnapshot.deal_id == deal_id)
    )
    db.session.commit()


def create_qa_task(effect: Effect, crm: CrmClient) -> str:
    """The QA review task of a new case (one task even when an earlier attempt's answer was lost)."""
    task_id = _task_from_earlier_attempt(effect, crm) if effect.attempts > 1 else None
    if task_id is None:
        task_id = crm.create_task(_qa_task(effect))
    _note_qa_task(effect, task_id)
    return task_id


def create_qa_tasks(effects: Sequence[Effect], crm: CrmClient) -> list[str | Exception]:
    """The `qa_task` effects of many deals (first attempts) in one packed call: one task per case."""
    outcomes = crm.create_tasks([_qa_task(effect) for effect in effects])
    for effect, outcome in zip(effects, outcomes, strict=True):
        if isinstance(outcome, str):
            _note_qa_task(effect, outcome)
    return outcomes


def _qa_task(effect: Effect) -> NewTask:
    payload = effect.payload
    return NewTask(
        title=payload["title"],
        responsible_id=payload["responsible_id"],
        deal_id=effect.deal_id,
        deadline=datetime.fromisoformat(payload["deadline"]),
        description=payload["description"],
    )


def _note_qa_task(effect: Effect, task_id: str) -> None:
    case = db.session.get(RefusalCase, effect.payload["case_id"])
    if case is not None:
        case.qa_task_id = task_id


def _task_from_earlier_attempt(effect: Effect, crm: CrmClient) -> str | None:
    """The task an earlier attempt created although its answer never arrived (timeout, proxy error)."""
    payload = effect.payload
    for task in crm.list_deal_tasks(effect.deal_id):
        if task.title == payload["title"] and task.responsible_id == payload["responsible_id"]:
            return task.id
    return None


def end_case_work(portal: Portal, case: RefusalCase) -> None:
    """A case has ended (any outcome, withdrawal, deletion of its deal): plan the completion of its QA task
    and of its callbacks' to-dos in the CRM, keyed by case and callback so a retried job completes each once.

    The ids are read when the effect runs, not now: a task or to-do whose creation is still pending (an
    effect planned earlier for the same deal) is created first and then completed. A callback still
    waiting for its time is cancelled (its job finds it so and does nothing)."""
    language = portal.language
    outcome = i18n.translate(f"review_state_{case.state}", language)
    result = notices.render("case_ended_result", language, outcome=outcome)
    plan_effect(
        case.portal_id,
        case.deal_id,
        f"case:{case.id}:qa_task:complete",
        "complete_task",
        {"case_id": case.id, "result": result},
    )
    callbacks = db.session.scalars(
        sa.select(ReviewCallback)
        .where(ReviewCallback.portal_id == case.portal_id, ReviewCallback.case_id == case.id)
        .order_by(ReviewCallback.id)
    ).all()
    for callback in callbacks:
        if callback.status == ReviewCallback.SCHEDULED:
            callback.status = ReviewCallback.CANCELLED
        plan_effect(
            case.portal_id,
            case.deal_id,
            f"callback:{callback.id}:todo:complete",
            "complete_todo",
            {"callback_id": callback.id, "result": result},
        )


def complete_qa_task(effect: Effect, crm: CrmClient) -> str:
    """The `complete_task` effect: complete the case's QA task, if one was created."""
    case = db.session.get(RefusalCase, effect.payload["case_id"])
    task_id = case.qa_task_id if case is not None else None
    if not task_id:
        return "none"
    crm.complete_task(task_id, str(effect.payload.get("result") or ""))
    return task_id


def complete_callback_todo(effect: Effect, crm: CrmClient) -> str:
    """The `complete_todo` effect: complete the callback's to-do, if one was created."""
    callback = db.session.get(ReviewCallback, effect.payload["callback_id"])
    todo_id = callback.todo_id if callback is not None else None
    if not todo_id:
        return "none"
    crm.complete_todo(todo_id, str(effect.payload.get("result") or ""))
    return todo_id


def complete_qa_tasks(effects: Sequence[Effect], crm: CrmClient) -> list[str | Exception]:
    """The `complete_task` effects of many deals in one packed call (as `complete_qa_task` each)."""
    task_ids = []
    for effect in effects:
        case = db.session.get(RefusalCase, effect.payload["case_id"])
        task_ids.append(case.qa_task_id if case is not None else None)
    return _complete_many(effects, task_ids, "task", crm)


def complete_callback_todos(effects: Sequence[Effect], crm: CrmClient) -> list[str | Exception]:
    """The `complete_todo` effects of many deals in one packed call (as `complete_callback_todo` each)."""
    todo_ids = []
    for effect in effects:
        callback = db.session.get(ReviewCallback, effect.payload["callback_id"])
        todo_ids.append(callback.todo_id if callback is not None else None)
    return _complete_many(effects, todo_ids, "todo", crm)


def _complete_many(
    effects: Sequence[Effect], ids: Sequence[str | None], kind: Literal["task", "todo"], crm: CrmClient
) -> list[str | Exception]:
    """Complete the tasks (or to-dos) that exist in one call; "none" for an effect whose task was never made."""
    wanted = [
        (index, TaskCompletion(task_id, str(effect.payload.get("result") or ""), kind))
        for index, (effect, task_id) in enumerate(zip(effects, ids, strict=True))
        if task_id
    ]
    outcomes: list[str | Exception] = ["none"] * len(effects)
    answers = crm.complete_tasks([completion for _, completion in wanted]) if wanted else []
    for (index, completion), error in zip(wanted, answers, strict=True):
        outcomes[index] = error if error is not None else completion.task_id
    return outcomes


def add_case_event(case: RefusalCase, actor: str, action: str, note: str = "") -> None:
    """Append a step to the case's timeline."""
    db.session.add(
        CaseEvent(
            portal_id=case.portal_id, case_id=case.id, actor=actor, action=action, state_after=case.state, note=note
        )
    )


class Guard:
    """Applies the portal's guard rules to one deal's current state."""

    def __init__(self, portal: Portal, crm: CrmClient) -> None:
        self.portal = portal
        self.crm = crm
        self.settings: GuardSettings = guard_settings(portal)
        self._reason: reasons.Verdict | None = None

    # -- entry point -------------------------------------------------------------------------
    def decide(self, deal_id: str, automation: bool = False) -> Decision:
        """Re-read the deal, compare it with the snapshot, apply the rules, carry out the effects."""
        with deal_lock(self.portal.id, deal_id):
            run_pending_effects(self.portal.id, deal_id, self.crm)
            decision = self.decide_deal(self.crm.get_deal(deal_id), automation)
            db.session.commit()
            run_pending_effects(self.portal.id, deal_id, self.crm)
        return decision

    def decide_deal(self, deal: Deal, automation: bool = False) -> Decision:
        """The rules on a deal its caller read under the deal's lock; the caller commits and carries out."""
        decision = self._decide(deal, automation)
        log.info("guard decision", extra={"deal_id": deal.id, "outcome": decision.outcome})
        return decision

    def _decide(self, deal: Deal, automation: bool) -> Decision:
        deal_id = deal.id
        snapshot = _snapshot(self.portal.id, deal_id)
        if snapshot is not None and (snapshot.stage_id, snapshot.pipeline_id) == (deal.stage_id, deal.pipeline_id):
            remember(self.portal.id, deal)
            return Decision("unchanged")
        if refusal_stage_for(self.portal, deal.pipeline_id) is None:
            self._adopt_pipeline(deal.pipeline_id)
        previous_stage = snapshot.stage_id if snapshot else None
        previous_pipeline = snapshot.pipeline_id if snapshot else None
        if not self.settings.guards(deal.pipeline_id):
            remember(self.portal.id, deal)
            return Decision("not guarded")
        if snapshot is None and self._moved_before_install(deal):
            remember(self.portal.id, deal)
            return Decision("first seen")
        # Read everything the rules may need from the CRM before the first write: on SQLite a write
        # transaction held across a CRM call would block a token refresh in another session.
        directory.users(self.portal.id, self.crm)
        directory.pipelines(self.portal.id, self.crm)
        mover = AUTOMATION if automation else (deal.moved_by_id or deal.modified_by_id or "")
        role = directory.role_of(self.portal.id, self.crm, self.settings, mover)
        refusal_stage = refusal_stage_for(self.portal, deal.pipeline_id)
        self._reason = None
        entering = deal.stage_semantics == "failure" or bool(refusal_stage and deal.stage_id == refusal_stage)
        if entering and deal.refusal_reason:
            # A reason the app does not know yet (added in the CRM's field a moment ago) is adopted here, before
            # the first write; a retired one is refused.
            self._reason = reasons.check(self.portal, self.crm, deal.refusal_reason)
        if deal.stage_semantics == "failure":
            return self._on_lost(deal, mover, role, previous_stage, previous_pipeline)
        if refusal_stage and deal.stage_id == refusal_stage:
            return self._on_refusal_entered(deal, mover, role, previous_stage, previous_pipeline)
        if snapshot is not None and snapshot.stage_id == refusal_stage_for(self.portal, snapshot.pipeline_id):
            return self._on_refusal_left(deal, mover, role)
        if snapshot is not None:
            for rule in PROCESS_MOVE_RULES:
                decided = rule(self, deal, snapshot.stage_id, snapshot.pipeline_id, mover, role)
                if decided is not None:
                    return decided
        else:
            for first_seen_rule in FIRST_SEEN_RULES:
                decided = first_seen_rule(self, deal, mover, role)
                if decided is not None:
                    return decided
        remember(self.portal.id, deal)
        return Decision("moved")

    def _adopt_pipeline(self, pipeline_id: str) -> None:
        """A deal in a pipeline created after install: add its Conditional refusal stage before deciding (the
        CRM has no event for a new pipeline). If the CRM refuses, the guard decides as before (reverting) and
        the next event or reconciliation tries again."""
        try:
            stages.ensure_refusal_stage(self.portal, self.crm, pipeline_id)
        except PortalNeedsReinstall:
            raise
        except CrmError as error:
            log.warning(
                "refusal stage not added",
                extra={"portal_id": self.portal.id, "pipeline_id": pipeline_id, "code": error.code},
            )

    def _moved_before_install(self, deal: Deal) -> bool:
        installed_at = self.portal.installed_at
        moved_at = deal.moved_at or deal.modified_at
        if installed_at is None or moved_at is None:
            return False
        # CRM times have whole seconds: a move in the second the install finished is a move after it.
        return moved_at < installed_at.replace(microsecond=0)

    # -- rules -------------------------------------------------------------------------------
    def _on_lost(
        self, deal: Deal, mover: str, role: str, previous_stage: str | None, previous_pipeline: str | None
    ) -> Decision:
        if role in ("qa", "head"):
            return self._closed_by_reviewer(deal, mover, role)
        if role == "exempt":
            remember(self.portal.id, deal)
            audit.record(self.portal.id, mover, "close as lost", "allowed", "exempt", deal_id=deal.id)
            return Decision("allowed", "exempt")
        refusal_stage = refusal_stage_for(self.portal, deal.pipeline_id)
        violation = f"violation:{deal.id}:{deal.stage_id}:{_stamp(deal)}"
        if refusal_stage and self._reason_retired(deal) and deal.refusal_comment.strip():
            return self._refuse_retired(deal, mover, previous_stage, previous_pipeline, "close as lost", violation)
        if refusal_stage and deal.refusal_reason and deal.refusal_comment.strip():
            remember(self.portal.id, deal, stage_id=refusal_stage)
            plan_effect(self.portal.id, deal.id, f"{violation}:move", "move", {"stage_id": refusal_stage})
            case = self._open_case(deal, previous_stage or "", actor=mover)
            self._notify(mover, deal, "lost_to_refusal", f"{violation}:notice", reason=deal.refusal_reason)
            audit.record(
                self.portal.id,
                mover,
                "close as lost",
                "moved to conditional refusal",
                "only QA and heads may close a deal as lost",
                deal_id=deal.id,
                violation=True,
                case_id=case.id,
            )
            return Decision("to conditional refusal")
        target, pipeline = self._way_back(deal, previous_stage, previous_pipeline)
        remember(self.portal.id, deal, stage_id=target, pipeline_id=pipeline)
        plan_effect(self.portal.id, deal.id, f"{violation}:move", "move", _move_payload(target, pipeline, deal))
        self._notify(mover, deal, "lost_reverted", f"{violation}:notice")
        audit.record(
            self.portal.id,
            mover,
            "close as lost",
            "reverted",
            "no refusal reason or comment; only QA and heads may close a deal as lost",
            deal_id=deal.id,
            violation=True,
            back_to=target,
        )
        return Decision("reverted")

    def _closed_by_reviewer(self, deal: Deal, mover: str, role: str) -> Decision:
        remember(self.portal.id, deal)
        case = open_case_for(self.portal.id, deal.id)
        reviewed = case is not None and case.state == RefusalCase.CONFIRMED
        if case is not None:
            case.state = RefusalCase.CLOSED_LOST
            case.closed_at = utcnow()
            add_case_event(case, mover, "closed_lost_in_crm", f"closed as lost in the CRM by {role}")
            end_case_work(self.portal, case)
        outcome = "closed lost" if reviewed else "closed without review"
        audit.record(self.portal.id, mover, "close as lost", outcome, f"allowed for {role}", deal_id=deal.id)
        return Decision("allowed", outcome)

    def _on_refusal_entered(
        self, deal: Deal, mover: str, role: str, previous_stage: str | None, previous_pipeline: str | None
    ) -> Decision:
        if self._reason_retired(deal) and deal.refusal_comment.strip() and role != "exempt":
            key = f"retired:{deal.id}:{_stamp(deal)}"
            return self._refuse_retired(deal, mover, previous_stage, previous_pipeline, "conditional refusal", key)
        if deal.refusal_reason and deal.refusal_comment.strip():
            remember(self.portal.id, deal)
            case = self._open_case(deal, previous_stage or "", actor=mover)
            audit.record(self.portal.id, mover, "conditional refusal", "case opened", deal_id=deal.id, case_id=case.id)
            return Decision("case opened")
        if role == "exempt":
            remember(self.portal.id, deal)
            audit.record(self.portal.id, mover, "conditional refusal", "allowed", "exempt", deal_id=deal.id)
            return Decision("allowed", "exempt")
        target, pipeline = self._way_back(deal, previous_stage, previous_pipeline)
        key = f"incomplete:{deal.id}:{_stamp(deal)}"
        remember(self.portal.id, deal, stage_id=target, pipeline_id=pipeline)
        plan_effect(self.portal.id, deal.id, f"{key}:move", "move", _move_payload(target, pipeline, deal))
        self._notify(mover, deal, "refusal_incomplete", f"{key}:notice")
        audit.record(
            self.portal.id,
            mover,
            "conditional refusal",
            "reverted",
            "refusal reason and comment are required",
            deal_id=deal.id,
            violation=True,
            back_to=target,
        )
        return Decision("reverted", "incomplete")

    def _on_refusal_left(self, deal: Deal, mover: str, role: str) -> Decision:
        remember(self.portal.id, deal)
        case = open_case_for(self.portal.id, deal.id)
        if case is None:
            return Decision("moved")
        if role in ("qa", "head"):
            case.state = RefusalCase.WIN_BACK
            case.closed_at = utcnow()
            add_case_event(case, mover, "returned_in_crm", f"moved back to work in the CRM by {role}")
            end_case_work(self.portal, case)
            audit.record(self.portal.id, mover, "leave conditional refusal", "case closed as win back", deal_id=deal.id)
            return Decision("case closed", "win back")
        case.state = RefusalCase.WITHDRAWN
        case.closed_at = utcnow()
        add_case_event(case, mover, "withdrawn", "the deal left Conditional refusal before the review ended")
        end_case_work(self.portal, case)
        if case.qa_user_id:
            self._notify(case.qa_user_id, deal, "case_withdrawn", f"case:{case.id}:withdrawn:notice")
        audit.record(self.portal.id, mover, "leave conditional refusal", "case withdrawn", deal_id=deal.id)
        return Decision("case withdrawn")

    # -- helpers -----------------------------------------------------------------------------
    def _reason_retired(self, deal: Deal) -> bool:
        return bool(deal.refusal_reason) and self._reason is not None and self._reason.state == "retired"

    def _refuse_retired(
        self,
        deal: Deal,
        mover: str,
        previous_stage: str | None,
        previous_pipeline: str | None,
        attempted: str,
        key: str,
    ) -> Decision:
        """A refusal with a retired reason goes back where it came from, with a notice naming the reason."""
        target, pipeline = self._way_back(deal, previous_stage, previous_pipeline)
        remember(self.portal.id, deal, stage_id=target, pipeline_id=pipeline)
        plan_effect(self.portal.id, deal.id, f"{key}:move", "move", _move_payload(target, pipeline, deal))
        self._notify(mover, deal, "reason_retired", f"{key}:retired-notice", reason=deal.refusal_reason)
        audit.record(
            self.portal.id,
            mover,
            attempted,
            "reverted",
            f"the reason {deal.refusal_reason} is retired",
            deal_id=deal.id,
            violation=True,
            back_to=target,
        )
        return Decision("reverted", "retired reason")

    def _way_back(self, deal: Deal, previous_stage: str | None, previous_pipeline: str | None) -> tuple[str, str]:
        """Where a refused move goes back to: the previous stage, else the stage history, else the first stage."""
        refusal_stages = set((self.portal.settings or {}).get("refusal_stages", {}).values())
        candidates = [(previous_stage, previous_pipeline or deal.pipeline_id)]
        if previous_stage is None:
            candidates.append((self.crm.stage_before(deal.id, deal.stage_id), deal.pipeline_id))
        for stage_id, pipeline_id in candidates:
            if not stage_id or stage_id in refusal_stages:
                continue
            known = directory.stage(self.portal.id, self.crm, stage_id)
            if known is None or known.semantics == "process":
                return stage_id, (known.pipeline_id if known else pipeline_id)
        first = directory.first_stage(self.portal.id, self.crm, deal.pipeline_id)
        if first is None:
            raise LookupError(f"pipeline {deal.pipeline_id} has no in-progress stage")
        return first.id, deal.pipeline_id

    def _open_case(self, deal: Deal, previous_stage: str, actor: str) -> RefusalCase:
        existing = open_case_for(self.portal.id, deal.id)
        if existing is not None:
            return existing
        manager = deal.responsible_id if actor in ("", AUTOMATION) else actor
        qa_user = self._next_qa_user()
        case = RefusalCase(
            portal_id=self.portal.id,
            deal_id=deal.id,
            deal_title=deal.title[:255],
            pipeline_id=deal.pipeline_id,
            manager_id=manager,
            reason=deal.refusal_reason or "",
            comment=deal.refusal_comment,
            amount=str(deal.amount),
            currency=deal.currency,
            source_id=deal.source_id,
            state=RefusalCase.AWAITING_REVIEW,
            qa_user_id=qa_user,
            previous_stage_id=previous_stage,
            review_due_at=utcnow() + timedelta(hours=self.settings.review_sla_hours),
        )
        db.session.add(case)
        db.session.flush()
        add_case_event(case, actor or AUTOMATION, "opened", f"QA: {qa_user or 'nobody configured'}")
        if qa_user is not None:
            language = self.portal.language
            reason = reasons.name_of(self.portal.id, case.reason, language)
            plan_effect(
                self.portal.id,
                deal.id,
                f"case:{case.id}:qa_task",
                "qa_task",
                {
                    "case_id": case.id,
                    "title": notices.render("qa_task_title", language, title=deal.title),
                    "description": notices.render(
                        "qa_task_description", language, reason=reason, comment=deal.refusal_comment
                    ),
                    "responsible_id": qa_user,
                    "deadline": case.review_due_at.isoformat() if case.review_due_at else utcnow().isoformat(),
                },
            )
        return case

    def _next_qa_user(self) -> str | None:
        """Round robin over active QA staff (heads when there are none)."""
        staff = directory.qa_staff(self.portal.id, self.crm, self.settings) or directory.heads(
            self.portal.id, self.crm, self.settings
        )
        if not staff:
            return None
        turn = int(get_redis().incr(f"rc:rr:qa:{self.portal.id}")) - 1
        return staff[turn % len(staff)]

    def _notify(self, user_id: str, deal: Deal, template: str, key: str, reason: str | None = None) -> None:
        if not user_id or user_id == AUTOMATION:
            user_id = deal.responsible_id
        language = self.portal.language
        link = self.crm.deal_url(deal.id)
        message = notices.render(
            template, language, title=deal.title, reason=reasons.name_of(self.portal.id, reason, language), link=link
        )
        plan_effect(self.portal.id, deal.id, key, "notify", {"user_id": user_id, "message": message})


def _stamp(deal: Deal) -> str:
    moment = deal.moved_at or deal.modified_at
    return moment.isoformat() if moment else "unknown"


def _move_payload(stage_id: str, pipeline_id: str, deal: Deal) -> dict[str, Any]:
    payload: dict[str, Any] = {"stage_id": stage_id}
    if pipeline_id != deal.pipeline_id:
        payload["pipeline_id"] = pipeline_id
    return payload
