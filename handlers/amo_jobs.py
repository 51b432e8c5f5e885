"""Job-side processing of stored amoCRM webhooks and Digital Pipeline robot actions (the wire format stays
in handlers/)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from app.core import i18n, inbox
from app.core.db import db
from app.core.models import Effect, InboxItem, Portal
from app.core.timezones import zone_name
from app.crm.amocrm import AmoCrm
from app.crm.errors import AmoNotFound
from app.crm.factory import client_for
from app.crm.port import AUTOMATION, CrmClient
from app.domain import audit, deal_events, effects
from app.domain.robots import REGISTRY, Robot, RobotInvocation
from handlers.amo_payloads import DpAction, LeadChange

log = logging.getLogger(__name__)

NOTE_EFFECT = "amo_note"

i18n.register(
    {
        "dp_note": ("Контроль отказов: {robot} — {outcome}", "Refusal Control: {robot} — {outcome}"),
        "dp_not_done": ("не выполнено: {error}", "not done: {error}"),
        "dp_exchange_on the exchange": ("сделка выставлена на биржу", "the lead is on the exchange"),
        "dp_exchange_already on the exchange": ("сделка уже на бирже", "the lead is already on the exchange"),
        "dp_exchange_no pool user": (
            "не выполнено: для воронки не выбран пользователь «Биржа лидов» (настройки биржи)",
            "not done: the pipeline has no pool user (exchange settings)",
        ),
        "dp_exchange_deal closed": ("не выполнено: сделка закрыта", "not done: the lead is closed"),
        "dp_exchange_no deal": ("не выполнено: сделка не найдена", "not done: the lead was not found"),
        "dp_callback_done": (
            "задача на звонок ответственному на {when}",
            "a call task for the responsible at {when}",
        ),
        "dp_check_tasks": (
            "открытая задача: {has_open}, просроченных задач: {overdue}",
            "open task: {has_open}, overdue tasks: {overdue}",
        ),
        "dp_yes": ("есть", "yes"),
        "dp_no": ("нет", "no"),
    }
)


def lead_event(item: InboxItem) -> deal_events.DealEvent:
    """The domain's view of a stored lead change (the hook's status and `last_modified` only tell our echo)."""
    _account_id, change = LeadChange.from_json(item.body)
    return deal_events.DealEvent(
        change.lead_id,
        is_new=change.action == "add",
        stamp=int(change.last_modified) if change.last_modified else None,
        stage_id=change.status_id or None,
        ref=item.id,
    )


def _waiting(item: InboxItem) -> list[deal_events.DealEvent]:
    found = []
    for row in inbox.waiting_rows(item):
        try:
            found.append(lead_event(row))
        except (ValueError, TypeError, KeyError):  # left to its own job, which records why
            continue
    return found


def process_lead(item: InboxItem) -> None:
    """A lead changed: the lead exchange and duty rota route it (a new lead) or watch its responsible, then
    the guard decides; both re-read the lead (the mover comes from the re-read lead's updated_by). The
    account's other lead changes already waiting are decided with it."""
    lead = lead_event(item)
    portal = db.session.get(Portal, item.portal_id) if item.portal_id is not None else None
    if portal is None or portal.status != "installed":
        return
    try:
        deal_events.deals_changed(
            portal,
            client_for(portal),
            lead,
            waiting=lambda: _waiting(item),
            settled=lambda: inbox.is_done(item.id),
            claimed=inbox.claim_rows,
            finished=inbox.finish_rows,
        )
    except AmoNotFound:
        db.session.rollback()
        deal_events.deal_forgotten(portal.id, lead.deal_id)


def process_lead_delete(item: InboxItem) -> None:
    """A lead was deleted (`leads[delete]`): record who deleted it (the hook's modified_user_id when it carries
    one, else unknown) and what it was."""
    _account_id, change = LeadChange.from_json(item.body)
    portal = db.session.get(Portal, item.portal_id) if item.portal_id is not None else None
    if portal is None or portal.status != "installed":
        return
    by = change.modified_user_id or None
    if by == "0":
        by = AUTOMATION
    deal_events.deal_deleted(portal, client_for(portal), change.lead_id, by=by)


def robot_properties(robot: Robot, settings: dict[str, str]) -> dict[str, Any]:
    """The robot's parameters from the action's settings: only those it declares, blanks left to its defaults."""
    return {name: value for name, value in settings.items() if name in robot.properties and value.strip()}


def _text(key: str, language: str, **values: str) -> str:
    return i18n.translate(key, language).format(**values)


def outcome_text(portal: Portal, robot: Robot, values: dict[str, Any]) -> str:
    """What a robot did, in the account's language (a DP action has no return values: the note says it)."""
    language = portal.language
    if values.get("error"):
        return _text("dp_not_done", language, error=str(values["error"]))
    if robot.code == "rc_put_on_exchange":
        outcome = str(values.get("outcome") or "")
        key = f"dp_exchange_{outcome}"
        return _text(key, language) if key in i18n.STRINGS else outcome
    if robot.code == "rc_callback":
        deadline = datetime.fromisoformat(str(values["deadline"]))
        return _text("dp_callback_done", language, when=i18n.when(deadline, language, zone_name(portal)))
    if robot.code == "rc_check_tasks":
        has_open = _text("dp_yes" if values.get("has_open_task") == "Y" else "dp_no", language)
        return _text("dp_check_tasks", language, has_open=has_open, overdue=str(values.get("overdue_count", 0)))
    return ", ".join(f"{name}: {value}" for name, value in sorted(values.items()))


def note_text(portal: Portal, robot: Robot, outcome: str) -> str:
    """The note on the lead: «Контроль отказов: <robot> — <outcome>» (English for English accounts)."""
    name = robot.name_en if portal.language == "en" else robot.name_ru
    return _text("dp_note", portal.language, robot=name, outcome=outcome)


def process_dp_robot(item: InboxItem) -> None:
    """A Digital Pipeline action: run the robot on the lead (user: automation), then note the outcome on the
    lead. The note is an effect keyed by the inbox row, so a retried job never writes a second one."""
    action = DpAction.from_json(item.body)
    portal = db.session.get(Portal, item.portal_id) if item.portal_id is not None else None
    robot = REGISTRY.get(action.robot)
    if portal is None or portal.status != "installed" or robot is None:
        return
    invocation = RobotInvocation(
        portal_id=portal.id,
        code=robot.code,
        deal_id=action.element_id,
        properties=robot_properties(robot, action.settings),
        user_id=None,
        event_token=f"amo-dp-{item.id}",
    )
    try:
        outcome = outcome_text(portal, robot, robot.handler(invocation))
    except AmoNotFound:
        db.session.rollback()
        audit.record(portal.id, AUTOMATION, f"robot {robot.code}", "skipped", "the lead no longer exists")
        db.session.commit()
        return
    except (ValueError, LookupError) as error:
        db.session.rollback()
        outcome = _text("dp_not_done", portal.language, error=str(error))
    text = note_text(portal, robot, outcome)
    crm = client_for(portal)
    with effects.deal_lock(portal.id, action.element_id):
        effects.plan_effect(portal.id, action.element_id, f"dpnote:{item.id}", NOTE_EFFECT, {"text": text})
        audit.record(portal.id, AUTOMATION, f"robot {robot.code}", outcome, deal_id=action.element_id)
        db.session.commit()
        effects.run_pending_effects(portal.id, action.element_id, crm)


def write_note(effect: Effect, crm: CrmClient) -> str:
    """The note effect: amoCRM only; an earlier attempt whose answer was lost is found by its text."""
    if not isinstance(crm, AmoCrm):
        raise TypeError("notes on a lead are written to amoCRM accounts only")
    text = effect.payload["text"]
    earlier = crm.find_note(effect.deal_id, text) if effect.attempts > 1 else None
    return earlier or crm.add_note(effect.deal_id, text)


def register_processors() -> None:
    """Tell the inbox which function handles which stored amoCRM call."""
    inbox.PROCESSORS[("amo", "lead")] = process_lead
    inbox.GROUP_KINDS["amo"] = ("lead",)
    inbox.PROCESSORS[("amo", "lead_delete")] = process_lead_delete
    inbox.PROCESSORS[("amo", "dp_robot")] = process_dp_robot
