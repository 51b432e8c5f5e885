"""Lead exchange and duty-rota routing (CRM-agnostic: only the port and the database).

New deals in a routed pipeline go to the pool user («Биржа лидов»), to the manager on duty, or to the
commercial department; managers claim pool deals from the exchange page or by setting themselves
responsible in the CRM; claims return to the pool by hand (with a reason) or when idle.

Atomic claims: the winner is decided by one conditional UPDATE of the lot row
(``status = 'open'`` → ``'taken'``). On PostgreSQL the first UPDATE takes the row lock; the others
wait for it and re-check the condition after it commits, so they match no row; on SQLite writers are
serialised by the database lock. No Redis is needed for correctness and losers are answered at once.
The partial unique index ``uq_exchange_claims_active_deal`` backs it up (one active claim per deal).
The per-manager cap counts the manager's open deals in the CRM; a short Redis lock per manager
serialises one manager's own claims so two simultaneous claims cannot both pass a cap of N-1.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import flag_modified

from app.core import i18n
from app.core.db import db
from app.core.models import DealClass, DealSnapshot, DutyDay, ExchangeClaim, ExchangeLot, Portal, utcnow
from app.core.queue import get_redis
from app.core.timezones import local_day
from app.crm.errors import CrmError
from app.crm.port import AUTOMATION, CrmClient, Deal
from app.domain import audit, directory
from app.domain.catalog import Label
from app.domain.effects import deal_lock, plan_effect, run_pending_effects
from app.domain.guard import remember
from app.domain.reports import Cell, Period, Table
from app.domain.robots import Robot, RobotInvocation, RobotProperty
from app.domain.settings import guard_settings

log = logging.getLogger(__name__)
SECTION = "exchange"
MODES = ("exchange", "duty", "off")
MANAGER_LOCK_SECONDS = 30
REQUEUED = "requeued"  # put back on the exchange by automation or an admin: not the manager's return

# ---------------------------------------------------------------------------------------------- settings


class PipelineRoutingSchema(Schema):
    """How one pipeline routes new deals; unknown keys are refused."""

    class Meta:
        unknown = RAISE

    mode = fields.String(load_default="off", validate=validate.OneOf(MODES))
    pool_user = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    cap = fields.Integer(load_default=20, validate=validate.Range(min=1, max=10_000))
    idle_days = fields.Integer(load_default=3, validate=validate.Range(min=1, max=365))
    incoming_sources = fields.List(fields.String(validate=validate.Length(min=1)), load_default=list)
    large_threshold = fields.Decimal(load_default=None, allow_none=True, validate=validate.Range(min=0))
    commercial_department = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    commercial_route = fields.String(load_default="head", validate=validate.OneOf(("head", "exchange")))
    duty_department = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))

    @validates_schema
    def check_consistency(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        if data.get("mode", "off") != "off" and not data.get("pool_user"):
            errors["pool_user"] = ["the pool user is required when the pipeline is routed"]
        if data.get("mode") == "duty" and not data.get("duty_department"):
            errors["duty_department"] = ["the duty department is required in duty mode"]
        if data.get("large_threshold") is not None and not data.get("commercial_department"):
            errors["commercial_department"] = ["required together with the size threshold"]
        if errors:
            raise ValidationError(errors)


class ExchangeSettingsSchema(Schema):
    """Routing settings of every pipeline, keyed by pipeline id."""

    class Meta:
        unknown = RAISE

    pipelines = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.Nested(PipelineRoutingSchema),
        load_default=dict,
    )


@dataclass(frozen=True)
class Routing:
    """One pipeline's routing settings."""

    pipeline_id: str
    mode: str = "off"
    pool_user: str | None = None
    cap: int = 20
    idle_days: int = 3
    incoming_sources: tuple[str, ...] = ()
    large_threshold: Decimal | None = None
    commercial_department: str | None = None
    commercial_route: str = "head"
    duty_department: str | None = None

    def counts_as_incoming(self, source_id: str) -> bool:
        """Whether a new deal from this source is routed (no sources listed: every source)."""
        return not self.incoming_sources or source_id in self.incoming_sources

    def is_large(self, amount: Decimal) -> bool:
        """Whether a deal goes to the commercial department (amount at or above the threshold)."""
        return self.large_threshold is not None and bool(self.commercial_department) and amount >= self.large_threshold


def _routing_dict(routing: Routing) -> dict[str, Any]:
    return {
        "mode": routing.mode,
        "pool_user": routing.pool_user,
        "cap": routing.cap,
        "idle_days": routing.idle_days,
        "incoming_sources": list(routing.incoming_sources),
        "large_threshold": None if routing.large_threshold is None else str(routing.large_threshold),
        "commercial_department": routing.commercial_department,
        "commercial_route": routing.commercial_route,
        "duty_department": routing.duty_department,
    }


def _load(raw: dict[str, Any]) -> dict[str, Routing]:
    loaded = ExchangeSettingsSchema().load(raw)
    return {
        pipeline_id: Routing(
            pipeline_id=pipeline_id,
            mode=values["mode"],
            pool_user=values["pool_user"],
            cap=values["cap"],
            idle_days=values["idle_days"],
            incoming_sources=tuple(values["incoming_sources"]),
            large_threshold=values["large_threshold"],
            commercial_department=values["commercial_department"],
            commercial_route=values["commercial_route"],
            duty_department=values["duty_department"],
        )
        for pipeline_id, values in loaded["pipelines"].items()
    }


_LOADED: dict[str, dict[str, Routing]] = {}  # stored JSON -> its validated routing (every deal event reads it)


def exchange_settings(portal: Portal) -> dict[str, Routing]:
    """Every configured pipeline's routing, with defaults filled in (validated once per distinct stored value in
    a process)."""
    raw = dict((portal.settings or {}).get(SECTION, {}))
    key = json.dumps(raw, sort_keys=True, default=str)
    loaded = _LOADED.get(key)
    if loaded is None:
        loaded = _load(raw)
        if len(_LOADED) >= 512:
            _LOADED.clear()
        _LOADED[key] = loaded
    return dict(loaded)


def routing_for(portal: Portal, pipeline_id: str) -> Routing:
    """A pipeline's routing (mode `off` when it was never configured)."""
    return exchange_settings(portal).get(pipeline_id) or Routing(pipeline_id=pipeline_id)


def settings_as_dict(portal: Portal) -> dict[str, Any]:
    """Plain JSON-able form of the stored settings."""
    return {"pipelines": {pid: _routing_dict(r) for pid, r in exchange_settings(portal).items()}}


def update_exchange_settings(portal: Portal, changes: dict[str, Any]) -> dict[str, Routing]:
    """Merge and validate changes ({"pipelines": {id: {field: value}}}); raises ValidationError per field."""
    unknown = set(changes) - {"pipelines"}
    if unknown:
        raise ValidationError({key: ["Unknown field."] for key in sorted(unknown)})
    given = changes.get("pipelines", {})
    if not isinstance(given, dict):
        raise ValidationError({"pipelines": ["expected an object keyed by pipeline id"]})
    current = settings_as_dict(portal)["pipelines"]
    merged: dict[str, Any] = dict(current)
    for pipeline_id, values in given.items():
        if not isinstance(values, dict):
            raise ValidationError({"pipelines": {pipeline_id: ["expected an object"]}})
        merged[str(pipeline_id)] = {**current.get(str(pipeline_id), {}), **values}
    routing = _load({"pipelines": merged})
    stored = dict(portal.settings or {})
    stored[SECTION] = {"pipelines": {pid: _routing_dict(r) for pid, r in routing.items()}}
    portal.settings = stored
    flag_modified(portal, "settings")
    return routing


# ---------------------------------------------------------------------------------------------- messages

NOTICES: dict[str, Label] = {
    "over_cap": Label(
        "Сделка «{title}» не закреплена за вами: у вас уже {count} открытых сделок при лимите {cap}. {link}",
        'The deal "{title}" was not assigned to you: you already have {count} open deals, the limit is {cap}. {link}',
    ),
    "already_taken": Label(
        "Сделку «{title}» уже взял другой менеджер. {link}",
        'The deal "{title}" has already been taken by another manager. {link}',
    ),
    "idle_returned": Label(
        "Сделка «{title}» возвращена на биржу лидов: {days} дн. не было ни активности, ни открытых задач. {link}",
        'The deal "{title}" went back to the lead exchange: no activity and no open task for {days} days. {link}',
    ),
    "duty_assigned": Label(
        "Вы дежурный менеджер: вам назначена новая сделка «{title}». {link}",
        'You are the manager on duty: the new deal "{title}" is yours. {link}',
    ),
    "repeat_assigned": Label(
        "Повторный клиент: новая сделка «{title}» назначена вам, потому что вы ведёте этого клиента. {link}",
        'A returning client: the new deal "{title}" is yours because you work with this client. {link}',
    ),
    "repeat_head": Label(
        "Повторный клиент: новая сделка «{title}» передана менеджеру {manager} ({why}), а не на биржу или дежурному. "
        "{link}",
        'A returning client: the new deal "{title}" went to {manager} ({why}), not to the exchange or the manager '
        "on duty. {link}",
    ),
    "repeat_why_deal": Label("у клиента открыта сделка «{title}»", 'the client has the open deal "{title}"'),
    "repeat_why_client": Label("ответственный за клиента", "responsible for the client"),
    "commercial_assigned": Label(
        "Крупная сделка «{title}» ({amount}) передана в коммерческий отдел. {link}",
        'The large deal "{title}" ({amount}) was passed to the commercial department. {link}',
    ),
}


def _message(portal: Portal, key: str, **values: Any) -> str:
    return NOTICES[key].in_language(portal.language).format(**values)


i18n.register(
    {
        "tab_exchange": ("Биржа лидов", "Lead exchange"),
        "exchange_pool": ("Сделки на бирже", "Deals on the exchange"),
        "exchange_mine": ("Мои сделки с биржи", "My deals from the exchange"),
        "exchange_empty": ("На бирже нет сделок.", "No deals on the exchange."),
        "exchange_mine_empty": ("Вы не взяли ни одной сделки с биржи.", "You have not taken any deal."),
        "exchange_take": ("Взять", "Take"),
        "summary_exchange": (
            "Биржа лидов: взято сделок — {taken}, выиграно — {won}, возвращено на биржу — {returned}.",
            "Lead exchange: deals taken {taken}, won {won}, returned to the exchange {returned}.",
        ),
        "exchange_return": ("Вернуть на биржу", "Return to the exchange"),
        "exchange_reason": ("Причина возврата", "Reason for returning"),
        "exchange_col_deal": ("Сделка", "Deal"),
        "exchange_col_age": ("На бирже с", "On the exchange since"),
        "exchange_col_amount": ("Сумма", "Amount"),
        "exchange_col_source": ("Источник", "Source"),
        "exchange_filter_source": ("Источник", "Source"),
        "exchange_filter_min": ("Сумма от", "Amount from"),
        "exchange_filter_max": ("до", "to"),
        "exchange_filter_apply": ("Показать", "Show"),
        "exchange_taken": ("Сделка ваша.", "The deal is yours."),
        "exchange_returned": ("Сделка возвращена на биржу.", "The deal is back on the exchange."),
        "exchange_settings": ("Биржа лидов и дежурства", "Lead exchange and duty rota"),
        "exchange_mode": ("Режим", "Mode"),
        "exchange_mode_off": ("выключено", "off"),
        "exchange_mode_exchange": ("биржа лидов", "lead exchange"),
        "exchange_mode_duty": ("дежурный менеджер", "manager on duty"),
        "exchange_pool_user": ("Пользователь «Биржа лидов»", "Pool user"),
        "exchange_cap": ("Лимит открытых сделок на менеджера", "Open deals per manager, at most"),
        "exchange_idle_days": ("Вернуть на биржу без активности, дней", "Return when idle for, days"),
        "exchange_sources": ("Входящие источники", "Incoming sources"),
        "exchange_sources_hint": (
            "Не отмечено ни одного — входящими считаются сделки из любого источника.",
            "None ticked: deals from every source count as incoming.",
        ),
        "exchange_all_sources": ("Все источники", "All sources"),
        "exchange_threshold": ("Крупная сделка от суммы", "Large deal from amount"),
        "exchange_commercial": ("Коммерческий отдел", "Commercial department"),
        "exchange_commercial_route": ("Крупные сделки", "Large deals go to"),
        "exchange_route_head": ("руководителю отдела", "the head of the department"),
        "exchange_route_exchange": ("на биржу отдела", "the department's exchange"),
        "exchange_duty_department": ("Отдел дежурных", "Duty department"),
        "exchange_none": ("— не выбрано —", "— none —"),
        "exchange_save": ("Сохранить маршрутизацию", "Save routing"),
        "exchange_rota": ("График дежурств", "Duty rota"),
        "exchange_rota_department": ("Отдел", "Department"),
        "exchange_rota_month": ("Месяц", "Month"),
        "exchange_rota_save": ("Сохранить график", "Save the rota"),
        "exchange_rota_nobody": ("никто", "nobody"),
        "settings_repeat_clients": (
            "Повторные клиенты: новая сделка клиента, у которого уже есть открытая сделка или ответственный "
            "менеджер, уходит этому менеджеру, а не на биржу или дежурному",
            "Returning clients: a new deal of a client who already has an open deal or a responsible manager goes "
            "to that manager, not to the exchange or the manager on duty",
        ),
        "duty_panel_title": ("Дежурные менеджеры", "Managers on duty"),
        "duty_panel_today": ("Сегодня, {day}", "Today, {day}"),
        "duty_panel_week": ("На этой неделе", "This week"),
        "duty_panel_pipelines": ("Воронки", "Pipelines"),
        "exchange_stats_title": ("Биржа лидов по менеджерам", "Lead exchange by manager"),
        "xstats_taken": ("Взято с биржи", "Taken"),
        "xstats_won": ("Выиграно", "Won"),
        "xstats_lost": ("Проиграно", "Lost"),
        "xstats_returned": ("Возвращено на биржу", "Returned"),
        "xstats_auto_returned": ("Возвращено за бездействие", "Returned for idleness"),
        "xstats_wait": ("Ожидание на бирже, ч", "Waited on the exchange, h"),
        "exchange_stats_definitions": (
            "Взято — сделки, взятые с биржи в периоде; ожидание — среднее время от выставления на биржу до того, как "
            "менеджер взял сделку. Выиграно, проиграно и возвращено — по дню события.",
            "Taken: deals taken from the exchange in the period; waited: the mean time from the deal going on the "
            "exchange to the manager taking it. Won, lost and returned count on the day they happened.",
        ),
    }
)

# ---------------------------------------------------------------------------------------------- helpers


class ClaimRefused(Exception):
    """A claim or return that cannot happen; `code` is machine-readable, the message is for people."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@contextmanager
def manager_lock(portal_id: int, manager_id: str) -> Iterator[None]:
    """One claim at a time per manager, so that the cap check and the claim cannot interleave."""
    lock = get_redis().lock(
        f"rc:lock:exchange:manager:{portal_id}:{manager_id}",
        timeout=MANAGER_LOCK_SECONDS,
        blocking_timeout=MANAGER_LOCK_SECONDS,
    )
    if not lock.acquire():
        raise ClaimRefused("busy", "another claim of yours is still being processed; try again", 409)
    try:
        yield
    finally:
        lock.release()


def lot_for(portal_id: int, deal_id: str) -> ExchangeLot | None:
    """The deal's exchange row, if it was ever on the exchange."""
    return db.session.scalar(
        sa.select(ExchangeLot).where(ExchangeLot.portal_id == portal_id, ExchangeLot.deal_id == deal_id)
    )


def active_claim(portal_id: int, deal_id: str) -> ExchangeClaim | None:
    """The deal's current claim."""
    return db.session.scalar(
        sa.select(ExchangeClaim).where(
            ExchangeClaim.portal_id == portal_id, ExchangeClaim.deal_id == deal_id, ExchangeClaim.ended_at.is_(None)
        )
    )


def _snapshot(portal_id: int, deal_id: str) -> DealSnapshot | None:
    return db.session.scalar(
        sa.select(DealSnapshot).where(DealSnapshot.portal_id == portal_id, DealSnapshot.deal_id == deal_id)
    )


def _expect_responsible(
    portal_id: int, deal: Deal | None, deal_id: str, responsible_id: str, crm: CrmClient | None
) -> None:
    """Record the responsible our own write will set, so its echo event is recognised and changes nothing."""
    snapshot = _snapshot(portal_id, deal_id)
    if snapshot is not None:
        snapshot.responsible_id = responsible_id
        return
    if deal is None:
        assert crm is not None
        deal = crm.get_deal(deal_id)
    remember(portal_id, replace(deal, responsible_id=responsible_id))


def _assign(portal_id: int, deal_id: str, key: str, responsible_id: str) -> None:
    plan_effect(portal_id, deal_id, f"exchange:{key}:assign", "assign", {"responsible_id": responsible_id})


def _notify(portal_id: int, deal_id: str, key: str, user_id: str, message: str) -> None:
    if user_id and user_id != AUTOMATION:
        plan_effect(portal_id, deal_id, f"exchange:{key}:notice", "notify", {"user_id": user_id, "message": message})


def _link(crm: CrmClient, deal_id: str) -> str:
    return crm.deal_url(deal_id)


def _end_claim(claim_id: int, outcome: str, reason: str, now: datetime) -> bool:
    """End an active claim; False when someone else ended it first."""
    result = db.session.execute(
        sa.update(ExchangeClaim)
        .where(ExchangeClaim.id == claim_id, ExchangeClaim.ended_at.is_(None))
        .values(ended_at=now, outcome=outcome, reason=reason[:2000])
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _pool(portal: Portal, deal: Deal, routing: Routing, department_id: str | None, now: datetime) -> ExchangeLot:
    """Put the deal into the pool (our snapshot expects the pool user as responsible)."""
    assert routing.pool_user is not None
    lot = lot_for(portal.id, deal.id) or ExchangeLot(portal_id=portal.id, deal_id=deal.id)
    lot.pipeline_id = deal.pipeline_id
    lot.title = deal.title[:255]
    lot.amount = str(deal.amount)
    lot.currency = deal.currency
    lot.source_id = deal.source_id
    lot.department_id = department_id
    lot.status = ExchangeLot.OPEN
    lot.holder_id = None
    lot.taken_at = None
    lot.pooled_at = now
    db.session.add(lot)
    db.session.flush()
    if deal.responsible_id != routing.pool_user:
        _expect_responsible(portal.id, deal, deal.id, routing.pool_user, None)
        _assign(portal.id, deal.id, f"pool:{lot.id}:{now.isoformat()}", routing.pool_user)
    return lot


def _is_member(portal_id: int, crm: CrmClient, user_id: str, department_id: str) -> bool:
    return any(u.id == user_id and department_id in u.department_ids for u in directory.users(portal_id, crm))


def _active_user(portal_id: int, crm: CrmClient, user_id: str) -> bool:
    return any(u.id == user_id and u.active for u in directory.users(portal_id, crm))


# ---------------------------------------------------------------------------------------------- duty rota


def portal_day(portal: Portal, moment: datetime) -> date:
    """The calendar day of a moment in the portal's time zone."""
    return local_day(portal, moment)


def duty_user(portal: Portal, department_id: str, moment: datetime) -> str | None:
    """Who is on duty in the department at that moment (the portal's calendar day)."""
    return db.session.scalar(
        sa.select(DutyDay.user_id).where(
            DutyDay.portal_id == portal.id,
            DutyDay.department_id == department_id,
            DutyDay.day == portal_day(portal, moment),
        )
    )


def rota(portal_id: int, department_id: str, start: date, end: date) -> dict[date, str]:
    """The department's duty days in [start, end]."""
    rows = db.session.execute(
        sa.select(DutyDay.day, DutyDay.user_id).where(
            DutyDay.portal_id == portal_id,
            DutyDay.department_id == department_id,
            DutyDay.day >= start,
            DutyDay.day <= end,
        )
    ).all()
    return {row.day: row.user_id for row in rows}


def set_rota(portal_id: int, department_id: str, days: dict[date, str | None]) -> None:
    """Set (user id) or clear (None) duty days of a department; the caller commits."""
    for day, user_id in days.items():
        row = db.session.scalar(
            sa.select(DutyDay).where(
                DutyDay.portal_id == portal_id, DutyDay.department_id == department_id, DutyDay.day == day
            )
        )
        if user_id is None:
            if row is not None:
                db.session.delete(row)
            continue
        if row is None:
            row = DutyDay(portal_id=portal_id, department_id=department_id, day=day)
        row.user_id = user_id
        db.session.add(row)


@dataclass(frozen=True)
class DutyWeek:
    """One duty department's rota as the main page shows it: today's manager and the week's (Monday first)."""

    department_id: str
    department: str
    pipelines: tuple[str, ...]
    today: date
    on_duty_today: str | None
    week: tuple[tuple[date, str | None], ...]


def duty_overview(portal: Portal, crm: CrmClient, now: datetime | None = None) -> list[DutyWeek]:
    """Every duty department of a pipeline in duty mode: who is on duty today and each day of this week (names;
    ids when the CRM cannot be asked)."""
    departments: dict[str, list[str]] = {}
    for routing in exchange_settings(portal).values():
        if routing.mode == "duty" and routing.duty_department:
            departments.setdefault(routing.duty_department, []).append(routing.pipeline_id)
    if not departments:
        return []
    try:
        people = {user.id: user.name for user in directory.users(portal.id, crm)}
        pipeline_names = {pipeline.id: pipeline.name for pipeline in directory.pipelines(portal.id, crm)}
        department_names = {department.id: department.name for department in crm.list_departments()}
    except CrmError:
        log.warning("names for the duty rota are unavailable", extra={"portal_id": portal.id})
        people, pipeline_names, department_names = {}, {}, {}
    today = portal_day(portal, now or utcnow())
    monday = today - timedelta(days=today.weekday())
    overview = []
    for department_id, pipeline_ids in sorted(departments.items()):
        days = rota(portal.id, department_id, monday, monday + timedelta(days=6))
        week = tuple(
            (monday + timedelta(days=offset), _name(people, days.get(monday + timedelta(days=offset))))
            for offset in range(7)
        )
        overview.append(
            DutyWeek(
                department_id=department_id,
                department=department_names.get(department_id, department_id),
                pipelines=tuple(pipeline_names.get(pid, pid) for pid in pipeline_ids),
                today=today,
                on_duty_today=_name(people, days.get(today)),
                week=week,
            )
        )
    return overview


def _name(people: dict[str, str], user_id: str | None) -> str | None:
    return None if user_id is None else people.get(user_id, user_id)


# ---------------------------------------------------------------------------------------------- events


def watches(portal: Portal, deal_id: str) -> bool:
    """Whether the exchange has anything to say about the deal: routing is on, or the deal has a lot."""
    routed = any(r.mode != "off" for r in exchange_settings(portal).values())
    return routed or lot_for(portal.id, deal_id) is not None


def apply_rules(portal: Portal, crm: CrmClient, deal: Deal, *, is_new: bool, automation: bool = False) -> str:
    """The exchange's rules on a deal just read, under its lock: route a new deal, watch responsible changes.

    Plans effects and records what our writes will leave (the snapshot's responsible); the caller commits and
    carries the effects out. The directory must have been read before (no write transaction across a CRM call).
    """
    snapshot = _snapshot(portal.id, deal.id)
    if is_new and snapshot is None:
        outcome = _route_new(portal, crm, deal)
    elif snapshot is not None:
        outcome = _on_change(portal, crm, deal, snapshot.responsible_id, automation)
    else:
        outcome = "first seen"
    log.info("exchange decision", extra={"deal_id": deal.id, "outcome": outcome})
    return outcome


def _route_new(portal: Portal, crm: CrmClient, deal: Deal) -> str:
    routing = routing_for(portal, deal.pipeline_id)
    if routing.mode == "off" or deal.stage_semantics != "process":
        return "not routed"
    if not routing.counts_as_incoming(deal.source_id):
        return "not incoming"
    now = utcnow()
    owner = client_owner(portal, crm, deal, routing)
    if owner is not None:
        return _to_client_owner(portal, crm, deal, owner, now)
    if routing.is_large(deal.amount):
        return _to_commercial(portal, crm, deal, routing, now)
    if routing.mode == "duty":
        assert routing.duty_department is not None
        on_duty = duty_user(portal, routing.duty_department, deal.created_at or now)
        if on_duty and _active_user(portal.id, crm, on_duty):
            return _give(portal, crm, deal, on_duty, "duty", "duty_assigned", now)
        _pool(portal, deal, routing, None, now)
        audit.record(portal.id, AUTOMATION, "route new deal", "to exchange", "nobody on duty", deal_id=deal.id)
        return "to exchange"
    _pool(portal, deal, routing, None, now)
    audit.record(portal.id, AUTOMATION, "route new deal", "to exchange", "exchange pipeline", deal_id=deal.id)
    return "to exchange"


# -- repeat clients: a new deal of a client someone already works with goes to that manager


@dataclass(frozen=True)
class ClientOwner:
    """The manager who already works with a new deal's client, and why we think so."""

    user_id: str
    via: str  # "open deal" | "contact" | "company"
    client_id: str  # the contact or company id, or the open deal's id
    deal_title: str = ""
    heads: tuple[str, ...] = ()


REPEAT_GRACE = timedelta(minutes=2)  # a contact made together with the deal (a web form) is not a known client


def client_owner(portal: Portal, crm: CrmClient, deal: Deal, routing: Routing) -> ClientOwner | None:
    """Who already works with the new deal's client (repeat-client rule on, an active manager who is not the pool
    user): the responsible of the client's most recently active open deal, else the responsible of the deal's
    contact or company (or of one sharing its phone or e-mail) known before this deal came in. Every CRM read of
    the rule happens here, before any write."""
    settings = guard_settings(portal)
    if not settings.repeat_clients:
        return None
    history = crm.client_history(deal.id)
    active = {user.id for user in directory.users(portal.id, crm) if user.active}

    def eligible(user_id: str) -> bool:
        return bool(user_id) and user_id in active and user_id != routing.pool_user and user_id != AUTOMATION

    found: ClientOwner | None = None
    open_deals = sorted(
        (other for other in history.open_deals if other.id != deal.id and eligible(other.responsible_id)),
        key=lambda other: other.modified_at or other.created_at or datetime.min.replace(tzinfo=UTC),
        reverse=True,
    )
    if open_deals:
        latest = open_deals[0]
        found = ClientOwner(latest.responsible_id, "open deal", latest.id, latest.title)
    else:
        born = deal.created_at or utcnow()
        for client in (*history.own, *history.duplicates):
            known_before = client.created_at is None or client.created_at <= born - REPEAT_GRACE
            if known_before and eligible(client.responsible_id):
                found = ClientOwner(client.responsible_id, client.kind, client.id)
                break
    if found is None:
        return None
    heads = tuple(head for head in directory.heads(portal.id, crm, settings) if head != found.user_id)
    return replace(found, heads=heads)


def _to_client_owner(portal: Portal, crm: CrmClient, deal: Deal, owner: ClientOwner, now: datetime) -> str:
    """Give the new deal to the client's manager, tell him and the heads, audit why."""
    if deal.responsible_id != owner.user_id:
        _expect_responsible(portal.id, deal, deal.id, owner.user_id, crm)
        _assign(portal.id, deal.id, f"route:{deal.id}", owner.user_id)
    link = _link(crm, deal.id)
    _notify(
        portal.id,
        deal.id,
        f"route:{deal.id}",
        owner.user_id,
        _message(portal, "repeat_assigned", title=deal.title, link=link),
    )
    if owner.via == "open deal":
        why = _message(portal, "repeat_why_deal", title=owner.deal_title)
    else:
        why = _message(portal, "repeat_why_client")
    names = {user.id: user.name for user in directory.users(portal.id, crm)}
    message = _message(
        portal, "repeat_head", title=deal.title, manager=names.get(owner.user_id, owner.user_id), why=why, link=link
    )
    for head in owner.heads:
        _notify(portal.id, deal.id, f"repeat:{deal.id}:{head}", head, message)
    audit.record(
        portal.id,
        AUTOMATION,
        "route new deal",
        "to the client's manager",
        f"repeat client: {owner.via} {owner.client_id}",
        deal_id=deal.id,
        responsible=owner.user_id,
        via=owner.via,
        client_id=owner.client_id,
    )
    return "to the client's manager"


def _to_commercial(portal: Portal, crm: CrmClient, deal: Deal, routing: Routing, now: datetime) -> str:
    department_id = routing.commercial_department
    assert department_id is not None
    if routing.commercial_route == "head":
        head = next((d.head_id for d in crm.list_departments() if d.id == department_id), None)
        if head and _active_user(portal.id, crm, head):
            return _give(portal, crm, deal, head, "commercial", "commercial_assigned", now)
    _pool(portal, deal, routing, department_id, now)
    audit.record(
        portal.id,
        AUTOMATION,
        "route new deal",
        "to commercial exchange",
        f"amount {deal.amount} at or above {routing.large_threshold}",
        deal_id=deal.id,
        department_id=department_id,
    )
    return "to commercial exchange"


def _give(portal: Portal, crm: CrmClient, deal: Deal, user_id: str, why: str, notice: str, now: datetime) -> str:
    if deal.responsible_id != user_id:
        _expect_responsible(portal.id, deal, deal.id, user_id, crm)
        _assign(portal.id, deal.id, f"route:{deal.id}", user_id)
    amount = i18n.money(deal.amount, deal.currency, portal.language)
    message = _message(portal, notice, title=deal.title, amount=amount, link=_link(crm, deal.id))
    _notify(portal.id, deal.id, f"route:{deal.id}", user_id, message)
    reason = "manager on duty" if why == "duty" else f"amount {deal.amount} at or above the threshold"
    audit.record(portal.id, AUTOMATION, "route new deal", f"to {why}", reason, deal_id=deal.id, responsible=user_id)
    return f"to {why}"


def _on_change(portal: Portal, crm: CrmClient, deal: Deal, previous: str, automation: bool) -> str:
    """A deal we know changed: closed, or its responsible changed (claims and reverts)."""
    lot = lot_for(portal.id, deal.id)
    now = utcnow()
    if lot is not None and lot.status != ExchangeLot.CLOSED and deal.stage_semantics != "process":
        lot.status = ExchangeLot.CLOSED
        claim = active_claim(portal.id, deal.id)
        if claim is not None:
            outcome = ExchangeClaim.WON if deal.stage_semantics == "success" else ExchangeClaim.LOST
            _end_claim(claim.id, outcome, f"deal closed ({deal.stage_id})", now)
        audit.record(portal.id, AUTOMATION, "deal closed", "left the exchange", deal_id=deal.id)
        return "left the exchange"
    new = deal.responsible_id
    if new == previous or deal.stage_semantics != "process":
        return "unchanged"
    routing = routing_for(portal, deal.pipeline_id)
    actor = "" if automation else (deal.modified_by_id or "")
    self_assigned = bool(actor) and actor == new
    if lot is not None and lot.status == ExchangeLot.OPEN and new != routing.pool_user:
        if self_assigned:
            return _claim_in_crm(portal, crm, deal, lot, routing, previous, now)
        return _taken_by_assignment(portal, deal, lot, actor, now)
    if lot is not None and lot.status == ExchangeLot.TAKEN and new != lot.holder_id:
        claim = active_claim(portal.id, deal.id)
        if new == routing.pool_user and claim is not None:
            _end_claim(claim.id, ExchangeClaim.RETURNED, "returned in the CRM", now)
            lot.status, lot.holder_id, lot.taken_at, lot.pooled_at = ExchangeLot.OPEN, None, None, now
            audit.record(
                portal.id, actor or AUTOMATION, "return to exchange", "returned", "in the CRM", deal_id=deal.id
            )
            return "returned"
        if self_assigned and _over_cap(crm, new, deal.pipeline_id, routing.cap, including_this=True):
            return _revert(portal, crm, deal, lot.holder_id or previous, "over cap", routing, new)
        if claim is not None:
            _end_claim(claim.id, ExchangeClaim.REASSIGNED, f"responsible set to {new} in the CRM", now)
        lot.status = ExchangeLot.CLOSED
        audit.record(portal.id, actor or AUTOMATION, "reassign", "left the exchange", deal_id=deal.id, to=new)
        return "reassigned"
    if routing.mode != "off" and self_assigned and new != previous:
        if _over_cap(crm, new, deal.pipeline_id, routing.cap, including_this=True):
            return _revert(portal, crm, deal, previous, "over cap", routing, new)
    return "unchanged"


def _over_cap(crm: CrmClient, manager_id: str, pipeline_id: str, cap: int, including_this: bool) -> bool:
    count = crm.count_open_deals(manager_id, pipeline_id)
    return count > cap if including_this else count >= cap


def _revert(portal: Portal, crm: CrmClient, deal: Deal, back_to: str, why: str, routing: Routing, actor: str) -> str:
    stamp = (deal.modified_at or utcnow()).isoformat()
    _expect_responsible(portal.id, deal, deal.id, back_to, crm)
    _assign(portal.id, deal.id, f"revert:{deal.id}:{stamp}", back_to)
    link = _link(crm, deal.id)
    if why == "over cap":
        count = crm.count_open_deals(actor, deal.pipeline_id)
        message = _message(portal, "over_cap", title=deal.title, count=count - 1, cap=routing.cap, link=link)
    else:
        message = _message(portal, "already_taken", title=deal.title, link=link)
    _notify(portal.id, deal.id, f"revert:{deal.id}:{stamp}", actor, message)
    audit.record(
        portal.id,
        actor,
        "take deal in the CRM",
        "reverted",
        why,
        deal_id=deal.id,
        violation=True,
        back_to=back_to,
    )
    return f"reverted: {why}"


def _claim_in_crm(
    portal: Portal, crm: CrmClient, deal: Deal, lot: ExchangeLot, routing: Routing, previous: str, now: datetime
) -> str:
    manager = deal.responsible_id
    if lot.department_id and not _is_member(portal.id, crm, manager, lot.department_id):
        return _revert(portal, crm, deal, previous, "not in the department", routing, manager)
    if _over_cap(crm, manager, deal.pipeline_id, routing.cap, including_this=True):
        return _revert(portal, crm, deal, previous, "over cap", routing, manager)
    claim = _take(portal.id, lot, manager, "crm", now)
    if claim is None:
        db.session.refresh(lot)
        return _revert(portal, crm, deal, lot.holder_id or previous, "already taken", routing, manager)
    audit.record(portal.id, manager, "take deal", "taken", "in the CRM", deal_id=deal.id, claim_id=claim.id)
    return "taken in the CRM"


def _taken_by_assignment(portal: Portal, deal: Deal, lot: ExchangeLot, actor: str, now: datetime) -> str:
    """A head (or automation) gave a pool deal to someone: it leaves the exchange without a claim."""
    lot.status = ExchangeLot.CLOSED
    audit.record(portal.id, actor or AUTOMATION, "assign pool deal", "left the exchange", deal_id=deal.id)
    return "assigned from the exchange"


def _take(portal_id: int, lot: ExchangeLot, manager_id: str, via: str, now: datetime) -> ExchangeClaim | None:
    """The atomic step: one conditional UPDATE decides the winner; None for everyone else."""
    result = db.session.execute(
        sa.update(ExchangeLot)
        .where(ExchangeLot.id == lot.id, ExchangeLot.status == ExchangeLot.OPEN)
        .values(status=ExchangeLot.TAKEN, holder_id=manager_id, taken_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    waited = int((now - lot.pooled_at).total_seconds()) if lot.pooled_at else None
    claim = ExchangeClaim(
        portal_id=portal_id,
        lot_id=lot.id,
        deal_id=lot.deal_id,
        manager_id=manager_id,
        via=via,
        claimed_at=now,
        waited_seconds=None if waited is None else max(waited, 0),
    )
    db.session.add(claim)
    db.session.flush()
    return claim


# ---------------------------------------------------------------------------------------------- claims


def claim(portal: Portal, crm: CrmClient, lot: ExchangeLot, manager_id: str) -> ExchangeClaim:
    """A manager takes a pool deal from the exchange page. Raises ClaimRefused (already taken, cap...)."""
    routing = routing_for(portal, lot.pipeline_id)
    if not routing.pool_user:
        raise ClaimRefused("not_routed", "this pipeline has no lead exchange", 409)
    if manager_id == routing.pool_user:
        raise ClaimRefused("forbidden", "the pool user cannot take deals", 403)
    if lot.department_id and not _is_member(portal.id, crm, manager_id, lot.department_id):
        raise ClaimRefused("forbidden", "this deal is on another department's exchange", 403)
    if lot.status != ExchangeLot.OPEN:
        raise ClaimRefused("already_taken", "the deal has already been taken", 409)
    lot_id, deal_id, pipeline_id = lot.id, lot.deal_id, lot.pipeline_id
    with manager_lock(portal.id, manager_id):
        count = crm.count_open_deals(manager_id, pipeline_id)
        if count >= routing.cap:
            audit.record(portal.id, manager_id, "take deal", "refused", "over cap", deal_id=deal_id, count=count)
            db.session.commit()
            raise ClaimRefused("cap", f"you already have {count} open deals; the limit is {routing.cap}", 409)
        now = utcnow()
        try:
            taken = _take(portal.id, lot, manager_id, "app", now)
        except IntegrityError:
            taken = None
        if taken is None:
            db.session.rollback()
            audit.record(portal.id, manager_id, "take deal", "refused", "already taken", deal_id=deal_id)
            db.session.commit()
            raise ClaimRefused("already_taken", "the deal has already been taken by another manager", 409)
        audit.record(portal.id, manager_id, "take deal", "taken", "from the exchange page", deal_id=deal_id)
        db.session.commit()
    claim_id = taken.id
    with deal_lock(portal.id, deal_id):
        run_pending_effects(portal.id, deal_id, crm)
        _expect_responsible(portal.id, None, deal_id, manager_id, crm)
        _assign(portal.id, deal_id, f"claim:{claim_id}", manager_id)
        db.session.commit()
        run_pending_effects(portal.id, deal_id, crm)
    log.info("exchange claim", extra={"deal_id": deal_id, "lot_id": lot_id, "manager": manager_id})
    return db.session.get(ExchangeClaim, claim_id) or taken


def return_to_pool(
    portal: Portal,
    crm: CrmClient,
    lot: ExchangeLot,
    actor: str,
    reason: str,
    outcome: str = ExchangeClaim.RETURNED,
    notice: str | None = None,
    now: datetime | None = None,
) -> ExchangeClaim:
    """Give a taken deal back to the exchange: not a refusal, no penalty. Raises ClaimRefused."""
    routing = routing_for(portal, lot.pipeline_id)
    if not routing.pool_user:
        raise ClaimRefused("not_routed", "this pipeline has no lead exchange", 409)
    current = active_claim(portal.id, lot.deal_id)
    if lot.status != ExchangeLot.TAKEN or current is None:
        raise ClaimRefused("not_taken", "the deal is not taken", 409)
    now = now or utcnow()
    if not _end_claim(current.id, outcome, reason, now):
        db.session.rollback()
        raise ClaimRefused("not_taken", "the deal is not taken", 409)
    manager, claim_id, deal_id = current.manager_id, current.id, lot.deal_id
    lot.status, lot.holder_id, lot.taken_at, lot.pooled_at = ExchangeLot.OPEN, None, None, now
    audit.record(portal.id, actor, "return to exchange", outcome, reason, deal_id=deal_id, manager=manager)
    db.session.commit()
    pool_user = routing.pool_user
    with deal_lock(portal.id, deal_id):
        run_pending_effects(portal.id, deal_id, crm)
        _expect_responsible(portal.id, None, deal_id, pool_user, crm)
        _assign(portal.id, deal_id, f"return:{claim_id}", pool_user)
        if notice:
            _notify(portal.id, deal_id, f"return:{claim_id}", manager, notice)
        db.session.commit()
        run_pending_effects(portal.id, deal_id, crm)
    return db.session.get(ExchangeClaim, claim_id) or current


def put_on_exchange(portal: Portal, crm: CrmClient, deal_id: str, actor: str, reason: str = "") -> str:
    """Put any open deal on the exchange (robot, admin); ends the current claim without counting it as returned."""
    deal = crm.get_deal(deal_id)
    routing = routing_for(portal, deal.pipeline_id)
    if not routing.pool_user:
        return "no pool user"
    if deal.stage_semantics != "process":
        return "deal closed"
    lot = lot_for(portal.id, deal_id)
    if lot is not None and lot.status == ExchangeLot.OPEN and deal.responsible_id == routing.pool_user:
        return "already on the exchange"
    now = utcnow()
    with deal_lock(portal.id, deal_id):
        run_pending_effects(portal.id, deal_id, crm)
        claim_row = active_claim(portal.id, deal_id)
        if claim_row is not None:
            _end_claim(claim_row.id, REQUEUED, reason or "put on the exchange", now)
        _pool(portal, deal, routing, None, now)
        audit.record(portal.id, actor, "put on exchange", "on the exchange", reason, deal_id=deal_id)
        db.session.commit()
        run_pending_effects(portal.id, deal_id, crm)
    return "on the exchange"


# ---------------------------------------------------------------------------------------------- idle claims


def return_idle_claims(portal: Portal, crm: CrmClient, now: datetime | None = None) -> int:
    """Claims with no activity and no open task for the pipeline's idle_days go back to the pool."""
    now = now or utcnow()
    routings = exchange_settings(portal)
    claims = db.session.scalars(
        sa.select(ExchangeClaim)
        .where(ExchangeClaim.portal_id == portal.id, ExchangeClaim.ended_at.is_(None))
        .order_by(ExchangeClaim.id)
    ).all()
    candidates: list[tuple[int, str, datetime, int]] = []
    for row in claims:
        lot = db.session.get(ExchangeLot, row.lot_id)
        routing = routings.get(lot.pipeline_id) if lot else None
        if routing is None or not routing.pool_user:
            continue
        if now - row.claimed_at >= timedelta(days=routing.idle_days):
            candidates.append((row.lot_id, row.deal_id, row.claimed_at, routing.idle_days))
    if not candidates:
        return 0
    deals = crm.get_deals([deal_id for _lot, deal_id, _at, _days in candidates])
    returned = 0
    for lot_id, deal_id, claimed_at, days in candidates:
        deal = deals.get(deal_id)
        if deal is None or deal.stage_semantics != "process":
            continue
        last = max(moment for moment in (claimed_at, deal.last_activity_at, deal.moved_at) if moment is not None)
        if now - last < timedelta(days=days) or any(task.is_open for task in crm.list_deal_tasks(deal_id)):
            continue
        lot = db.session.get(ExchangeLot, lot_id)
        if lot is None:
            continue
        notice = _message(portal, "idle_returned", title=deal.title, days=days, link=_link(crm, deal_id))
        try:
            return_to_pool(
                portal,
                crm,
                lot,
                AUTOMATION,
                f"no activity and no open task for {days} days",
                outcome=ExchangeClaim.AUTO_RETURNED,
                notice=notice,
                now=now,
            )
        except ClaimRefused:
            continue
        returned += 1
    return returned


def return_idle_all() -> int:
    """Periodic job: every installed portal's idle claims."""
    from app.crm.port import client_for

    total = 0
    portal_ids = db.session.scalars(
        sa.select(Portal.id)
        .where(Portal.status == "installed")
        .where(sa.exists().where(ExchangeClaim.portal_id == Portal.id, ExchangeClaim.ended_at.is_(None)))
    ).all()
    for portal_id in portal_ids:
        portal = db.session.get(Portal, portal_id)
        if portal is None:
            continue
        try:
            total += return_idle_claims(portal, client_for(portal))
        except CrmError:
            db.session.rollback()
            log.exception("idle claims sweep failed", extra={"portal_id": portal_id})
    return total


# ---------------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class ManagerExchangeStats:
    """One manager's exchange activity over a period."""

    manager_id: str
    taken: int = 0
    returned: int = 0
    auto_returned: int = 0
    won: int = 0
    lost: int = 0
    mean_wait_seconds: int | None = None  # how long the deals he took had waited on the exchange, on average


ENDINGS = (ExchangeClaim.RETURNED, ExchangeClaim.AUTO_RETURNED, ExchangeClaim.WON, ExchangeClaim.LOST)


def summary_line(portal: Portal, period: Period) -> str:
    """The scheduled summary's sentence on the lead exchange in the period ("" when nobody took a deal)."""
    stats = claim_stats(portal.id, period.start, period.end)
    if not stats:
        return ""
    language = portal.language
    return i18n.translate("summary_exchange", language).format(
        taken=i18n.number(sum(row.taken for row in stats), language),
        won=i18n.number(sum(row.won for row in stats), language),
        returned=i18n.number(sum(row.returned + row.auto_returned for row in stats), language),
    )


def claim_stats(portal_id: int, start: datetime, end: datetime) -> list[ManagerExchangeStats]:
    """Per manager in [start, end): claims taken (and how long those deals had waited on the exchange), claims
    returned by hand and for idleness, and claimed deals won and lost."""
    in_period = (
        ExchangeClaim.portal_id == portal_id,
        ExchangeClaim.claimed_at >= start,
        ExchangeClaim.claimed_at < end,
    )
    taken = {
        manager_id: (int(n), wait)
        for manager_id, n, wait in db.session.execute(
            sa.select(ExchangeClaim.manager_id, sa.func.count(), sa.func.avg(ExchangeClaim.waited_seconds))
            .where(*in_period)
            .group_by(ExchangeClaim.manager_id)
        ).all()
    }
    ended = db.session.execute(
        sa.select(ExchangeClaim.manager_id, ExchangeClaim.outcome, sa.func.count())
        .where(
            ExchangeClaim.portal_id == portal_id,
            ExchangeClaim.ended_at >= start,
            ExchangeClaim.ended_at < end,
            ExchangeClaim.outcome.in_(ENDINGS),
        )
        .group_by(ExchangeClaim.manager_id, ExchangeClaim.outcome)
    ).all()
    counts: dict[str, dict[str, int]] = {m: {"taken": n} for m, (n, _wait) in taken.items()}
    for manager_id, outcome, n in ended:
        counts.setdefault(manager_id, {})[str(outcome)] = int(n)
    return [
        ManagerExchangeStats(
            manager_id=manager_id,
            taken=values.get("taken", 0),
            returned=values.get(ExchangeClaim.RETURNED, 0),
            auto_returned=values.get(ExchangeClaim.AUTO_RETURNED, 0),
            won=values.get(ExchangeClaim.WON, 0),
            lost=values.get(ExchangeClaim.LOST, 0),
            mean_wait_seconds=None
            if manager_id not in taken or taken[manager_id][1] is None
            else round(float(taken[manager_id][1])),
        )
        for manager_id, values in sorted(counts.items(), key=lambda item: (len(item[0]), item[0]))
    ]


def stats_table(rows: list[ManagerExchangeStats], names: dict[str, str], language: str) -> Table:
    """The exchange statistics as a report table (page and CSV), with a total row."""
    t = lambda key: i18n.translate(key, language)  # noqa: E731

    def hours(seconds: float | None) -> Decimal | None:
        if seconds is None:
            return None
        return (Decimal(str(seconds)) / 3600).quantize(Decimal("0.1"))

    def cells(row: ManagerExchangeStats) -> list[Cell]:
        return [row.taken, row.won, row.lost, row.returned, row.auto_returned, hours(row.mean_wait_seconds)]

    waits = [(row.mean_wait_seconds, row.taken) for row in rows if row.mean_wait_seconds is not None and row.taken]
    weight = sum(taken for _wait, taken in waits)
    total = ManagerExchangeStats(
        manager_id="",
        taken=sum(row.taken for row in rows),
        returned=sum(row.returned for row in rows),
        auto_returned=sum(row.auto_returned for row in rows),
        won=sum(row.won for row in rows),
        lost=sum(row.lost for row in rows),
        mean_wait_seconds=round(sum(wait * taken for wait, taken in waits) / weight) if weight else None,
    )
    return Table(
        "exchange",
        t("exchange_stats_title"),
        [
            t("col_manager"),
            t("xstats_taken"),
            t("xstats_won"),
            t("xstats_lost"),
            t("xstats_returned"),
            t("xstats_auto_returned"),
            t("xstats_wait"),
        ],
        [[names.get(row.manager_id, row.manager_id), *cells(row)] for row in rows],
        [t("total"), *cells(total)] if rows else None,
    )


# ---------------------------------------------------------------------------------------------- robot


def robot_put_on_exchange(invocation: RobotInvocation) -> dict[str, Any]:
    """Robot «Выставить на биржу»: the deal goes to the pool user; returns the outcome to the workflow."""
    from app.crm.port import client_for

    portal = db.session.get(Portal, invocation.portal_id)
    if portal is None or not invocation.deal_id:
        return {"outcome": "no deal"}
    reason = str(invocation.properties.get("reason") or "")
    outcome = put_on_exchange(portal, client_for(portal), invocation.deal_id, AUTOMATION, reason)
    return {"outcome": outcome}


PUT_ON_EXCHANGE_ROBOT = Robot(
    code="rc_put_on_exchange",
    name_ru="Выставить на биржу лидов",
    name_en="Put on the lead exchange",
    description_ru="Сделка переходит пользователю «Биржа лидов», менеджеры смогут взять её со страницы биржи.",
    description_en="The deal goes to the pool user; managers can take it from the exchange page.",
    handler=robot_put_on_exchange,
    properties={"reason": RobotProperty("Причина", "Reason", "string")},
    return_properties={"outcome": RobotProperty("Результат", "Outcome", "string")},
)


def open_lots(portal_id: int, *, source: str = "", pipeline: str = "") -> list[tuple[ExchangeLot, str]]:
    """The pool's open lots as the exchange lists them, each with its ABC class (app.domain.abc; "" none): class A
    first, then B, C and the unclassified, each oldest first (the time it was pooled)."""
    rank = sa.case({"A": 0, "B": 1, "C": 2}, value=DealClass.abc_class, else_=3)
    query = (
        sa.select(ExchangeLot, sa.func.coalesce(DealClass.abc_class, ""))
        .outerjoin(
            DealClass, sa.and_(DealClass.portal_id == ExchangeLot.portal_id, DealClass.deal_id == ExchangeLot.deal_id)
        )
        .where(ExchangeLot.portal_id == portal_id, ExchangeLot.status == ExchangeLot.OPEN)
    )
    if source:
        query = query.where(ExchangeLot.source_id == source)
    if pipeline:
        query = query.where(ExchangeLot.pipeline_id == pipeline)
    return [
        (lot, str(abc_class))
        for lot, abc_class in db.session.execute(query.order_by(rank, ExchangeLot.pooled_at, ExchangeLot.id))
    ]
