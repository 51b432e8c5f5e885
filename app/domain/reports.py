"""Penalty reports and refusal analytics for heads of sales; scheduled summaries in the CRM.

Every figure is derived from the cases, their timelines and the penalty ledger; nothing is stored.
Periods are calendar days in the portal's time zone: a case counts on the local day it was opened.

Definitions (the page's footnotes say the same):
- cases: refusal cases opened in the period, by the manager who claimed the refusal;
- confirmed: cases whose refusal QA confirmed at some step (the timeline reached `confirmed`);
- leaks: cases found to be leaked clients (the timeline reached `leaked`);
- leak rate: leaks / (confirmed + leaks), the share of checked refusals that were not true;
- penalties: net fines issued in the period; a cancelled fine leaves the total of its own period;
- QA turnaround: mean hours from the case's opening to QA's first step out of `awaiting_review`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import flag_modified

from app.core import i18n, timezones
from app.core.db import db, insert_ignore
from app.core.models import CaseEvent, DealDeletion, Penalty, Portal, RefusalCase, ReportDelivery, utcnow
from app.crm.errors import CrmError
from app.domain import directory, reason_analytics, reasons, requirement_refusals
from app.domain.penalties import cpl_settings
from app.domain.review_text import cpl_rule_text

log = logging.getLogger(__name__)

MAX_PERIOD_DAYS = 366
NOT_A_VERDICT = (RefusalCase.AWAITING_REVIEW, RefusalCase.WITHDRAWN)
HUNDRED = Decimal(100)
ONE_DECIMAL = Decimal("0.1")

i18n.register(
    {
        "tab_reports": ("Отчёты", "Reports"),
        "reports_from": ("С", "From"),
        "reports_to": ("По", "To"),
        "reports_show": ("Показать", "Show"),
        "reports_this_week": ("Эта неделя", "This week"),
        "reports_last_week": ("Прошлая неделя", "Last week"),
        "reports_this_month": ("Этот месяц", "This month"),
        "reports_last_month": ("Прошлый месяц", "Last month"),
        "reports_csv": ("Скачать CSV", "Download CSV"),
        "reports_heads_only": (
            "Отчёты доступны только руководителям продаж.",
            "Reports are available to heads of sales only.",
        ),
        "reports_period": ("Период", "Period"),
        "reports_managers": ("По менеджерам", "By manager"),
        "reports_reasons": ("Причины: заявлено и подтверждено", "Reasons: claimed and confirmed"),
        "reports_sources": ("По источникам лидов", "By lead source"),
        "reports_weeks": ("По неделям", "By week"),
        "reports_analytics": ("Почему отказываются клиенты", "Why clients refuse"),
        "reports_ledger": ("Журнал штрафов", "Penalty ledger"),
        "col_manager": ("Менеджер", "Manager"),
        "col_cases": ("Отказов на проверке", "Refusals reviewed"),
        "col_confirmed": ("Подтверждено", "Confirmed"),
        "col_leaks": ("Утечки", "Leaks"),
        "col_leak_rate": ("Доля утечек, %", "Leak rate, %"),
        "col_penalties": ("Штрафы, {currency}", "Penalties, {currency}"),
        "col_turnaround": ("Проверка ОКК, ч", "QA turnaround, h"),
        "col_deletions": ("Удалено сделок", "Deals deleted"),
        "col_missing_fields": ("Отклонено переходов: не заполнены поля", "Moves refused: fields missing"),
        "col_deleted_by": ("Кто удалил", "Deleted by"),
        "col_violation": ("Нарушение", "Violation"),
        "reports_deletions": ("Удалённые сделки", "Deleted deals"),
        "deleted_unknown": ("неизвестно", "unknown"),
        "deleted_automation": ("робот / интеграция", "robot / integration"),
        "yes": ("да", "yes"),
        "no": ("нет", "no"),
        "col_reason": ("Причина", "Reason"),
        "col_claimed": ("Заявлено", "Claimed"),
        "col_confirm_rate": ("Подтверждаемость, %", "Confirmation rate, %"),
        "col_share": ("Доля среди подтверждённых, %", "Share of confirmed, %"),
        "col_source": ("Источник", "Source"),
        "col_week": ("Неделя с", "Week of"),
        "col_previous": ("Подтверждено ранее", "Confirmed before"),
        "col_previous_share": ("Доля ранее, %", "Share before, %"),
        "col_change": ("Изменение, п.п.", "Change, pp"),
        "col_date": ("Дата", "Date"),
        "col_deal": ("Сделка", "Deal"),
        "col_kind": ("Запись", "Entry"),
        "col_amount": ("Сумма", "Amount"),
        "col_currency": ("Валюта", "Currency"),
        "col_note": ("Основание", "Grounds"),
        "col_action": ("Действие", "Action"),
        "kind_penalty": ("Штраф", "Fine"),
        "kind_reversal": ("Отмена штрафа", "Cancellation"),
        "total": ("Итого", "Total"),
        "no_source": ("Без источника", "No source"),
        "chart_cases": ("Отказы", "Refusals"),
        "chart_trend": ("Динамика по неделям", "Weekly trend"),
        "chart_managers": ("Отказы и утечки по менеджерам", "Refusals and leaks by manager"),
        "chart_reasons": ("Заявленные и подтверждённые причины", "Claimed and confirmed reasons"),
        "analytics_headline": (
            "{share} % подтверждённых отказов — по причине «{reason}».",
            '{share} % of confirmed refusals are for the reason "{reason}".',
        ),
        "analytics_previous": ("Предыдущий период: {period}.", "Previous period: {period}."),
        "reports_definitions": (
            "Отказы — случаи, открытые в периоде (по дню открытия в часовом поясе портала). "
            "Доля утечек = утечки / (подтверждённые + утечки). Штрафы — чистая сумма штрафов, начисленных в периоде; "
            "отменённый штраф из суммы исключается. Проверка ОКК — среднее время до первого решения.",
            "Refusals are cases opened in the period (by the local day in the portal's time zone). "
            "Leak rate = leaks / (confirmed + leaks). Penalties are the net fines issued in the period; "
            "a cancelled fine leaves the total. QA turnaround is the mean time to the first decision.",
        ),
        "appeal_button": ("Отменить штраф", "Cancel the fine"),
        "appeal_prompt": ("Причина отмены штрафа (обязательно):", "Why is the fine cancelled (required)?"),
        "appeal_done": ("Штраф отменён.", "The fine was cancelled."),
        "appeal_cancelled": ("отменён", "cancelled"),
        "cpl_title": ("Стоимость лида (CPL)", "Lead cost (CPL)"),
        "cpl_currency": ("Валюта", "Currency"),
        "cpl_default": ("По умолчанию для портала", "Portal default"),
        "cpl_by_source": ("По источникам лидов", "By lead source"),
        "cpl_by_pipeline": ("По воронкам (если источник не задан)", "By pipeline (when the source has none)"),
        "cpl_hint": (
            "Порядок: поле CPL сделки → источник → воронка → значение по умолчанию. Пустое поле — не задано.",
            "Order: the deal's CPL field → source → pipeline → portal default. An empty box means not set.",
        ),
        "schedule_title": ("Отчёты по расписанию", "Scheduled reports"),
        "schedule_weekly": ("Еженедельный отчёт", "Weekly report"),
        "schedule_monthly": ("Ежемесячный отчёт", "Monthly report"),
        "schedule_weekday": ("День недели", "Weekday"),
        "schedule_day": ("День месяца", "Day of month"),
        "schedule_hour": ("Час", "Hour"),
        "schedule_hint": (
            "Уведомление получает каждый руководитель продаж, один раз за период.",
            "Every head of sales gets one notification per period.",
        ),
        "summary_weekly": ("Еженедельный отчёт «Контроль отказов»", "Refusal Control weekly report"),
        "summary_monthly": ("Ежемесячный отчёт «Контроль отказов»", "Refusal Control monthly report"),
        "summary_body": (
            "{title} за {period}: отказов на проверке — {cases}, подтверждено — {confirmed}, "
            "утечек — {leaks} (доля утечек {rate}), штрафы — {penalties}.",
            "{title} for {period}: refusals reviewed {cases}, confirmed {confirmed}, leaks {leaks} "
            "(leak rate {rate}), penalties {penalties}.",
        ),
        "summary_top_reason": (
            "Чаще всего подтверждается причина «{reason}» ({share} %).",
            'The most confirmed reason is "{reason}" ({share} %).',
        ),
        "summary_link": ("Отчёт: {link}", "Report: {link}"),
    }
)


# -- periods ---------------------------------------------------------------------------------------


class PeriodError(ValueError):
    """A period the page cannot show; the message says why."""


@dataclass(frozen=True)
class Period:
    """Local calendar days [first, last] in a time zone."""

    first: date
    last: date
    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def start(self) -> datetime:
        """The first moment, in UTC."""
        return datetime.combine(self.first, time.min, self.zone).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """The moment after the last day, in UTC (exclusive)."""
        return datetime.combine(self.last + timedelta(days=1), time.min, self.zone).astimezone(UTC)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def previous(self) -> Period:
        """The period of the same length just before this one."""
        return Period(self.first - timedelta(days=self.days), self.first - timedelta(days=1), self.timezone)

    def local_day(self, moment: datetime) -> date:
        return moment.astimezone(self.zone).date()

    def label(self, language: str) -> str:
        locale = "en" if language == "en" else "ru"
        if self.first == self.last:
            return i18n.day(self.first, locale)
        return f"{i18n.day(self.first, locale)} – {i18n.day(self.last, locale)}"

    def as_dict(self) -> dict[str, str]:
        return {"from": self.first.isoformat(), "to": self.last.isoformat(), "timezone": self.timezone}


def zone_name(portal: Portal) -> str:
    """The portal's time zone name (app.core.timezones, the one helper)."""
    return timezones.zone_name(portal)


def today(portal: Portal, now: datetime | None = None) -> date:
    """The portal's local date."""
    return timezones.local_today(portal, now or utcnow())


def parse_period(portal: Portal, start: str | None, end: str | None, now: datetime | None = None) -> Period:
    """The period from `from`/`to` (YYYY-MM-DD, inclusive); the current month so far when both are missing."""
    zone = zone_name(portal)
    local_today = today(portal, now)
    try:
        first = date.fromisoformat(start) if start else local_today.replace(day=1)
        last = date.fromisoformat(end) if end else local_today
    except ValueError as error:
        raise PeriodError("dates must look like 2026-11-30 (from, to)") from error
    if first > last:
        raise PeriodError("'from' is after 'to'")
    if (last - first).days + 1 > MAX_PERIOD_DAYS:
        raise PeriodError(f"a period can be at most {MAX_PERIOD_DAYS} days long")
    return Period(first, last, zone)


# -- the figures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseFacts:
    """What the report needs from one case and its timeline."""

    id: int
    manager_id: str
    reason: str
    source_id: str
    opened_at: datetime
    confirmed: bool
    leaked: bool
    turnaround_seconds: float | None


@dataclass
class Counts:
    """Cases, confirmed refusals and leaks, with the derived leak rate."""

    cases: int = 0
    confirmed: int = 0
    leaks: int = 0
    turnaround_total: float = 0.0
    turnaround_count: int = 0

    def add(self, case: CaseFacts) -> None:
        self.cases += 1
        self.confirmed += case.confirmed
        self.leaks += case.leaked
        if case.turnaround_seconds is not None:
            self.turnaround_total += case.turnaround_seconds
            self.turnaround_count += 1

    @property
    def leak_rate(self) -> Decimal | None:
        return percent(self.leaks, self.confirmed + self.leaks)

    @property
    def turnaround_hours(self) -> Decimal | None:
        if not self.turnaround_count:
            return None
        hours = Decimal(str(self.turnaround_total)) / self.turnaround_count / 3600
        return hours.quantize(ONE_DECIMAL, ROUND_HALF_UP)


def percent(part: int, whole: int) -> Decimal | None:
    """part / whole in percent with one decimal, or None when there is nothing to divide by."""
    if not whole:
        return None
    return (Decimal(part) * HUNDRED / Decimal(whole)).quantize(ONE_DECIMAL, ROUND_HALF_UP)


def case_facts(portal_id: int, start: datetime, end: datetime) -> list[CaseFacts]:
    """The cases opened in [start, end) with what their timelines say."""
    cases = db.session.scalars(
        sa.select(RefusalCase)
        .where(RefusalCase.portal_id == portal_id, RefusalCase.opened_at >= start, RefusalCase.opened_at < end)
        .order_by(RefusalCase.opened_at, RefusalCase.id)
    ).all()
    timeline: dict[int, list[CaseEvent]] = defaultdict(list)
    ids = [case.id for case in cases]
    for chunk in range(0, len(ids), 500):
        for event in db.session.scalars(
            sa.select(CaseEvent)
            .where(CaseEvent.portal_id == portal_id, CaseEvent.case_id.in_(ids[chunk : chunk + 500]))
            .order_by(CaseEvent.created_at, CaseEvent.id)
        ):
            timeline[event.case_id].append(event)
    facts = []
    for case in cases:
        events = timeline[case.id]
        states = {event.state_after for event in events} | {case.state}
        leaked = RefusalCase.LEAKED in states
        first_step = next(
            (e.created_at for e in events if e.state_after not in NOT_A_VERDICT and e.created_at >= case.opened_at),
            None,
        )
        facts.append(
            CaseFacts(
                id=case.id,
                manager_id=case.manager_id,
                reason=case.reason or "other",
                source_id=case.source_id or "",
                opened_at=case.opened_at,
                confirmed=not leaked and RefusalCase.CONFIRMED in states,
                leaked=leaked,
                turnaround_seconds=(first_step - case.opened_at).total_seconds() if first_step else None,
            )
        )
    return facts


@dataclass(frozen=True)
class Fine:
    """A fine issued in the period and what is left of it after an appeal."""

    id: int
    manager_id: str
    case_id: int | None
    amount: Decimal
    net: Decimal
    currency: str
    created_at: datetime


def fines(portal_id: int, start: datetime, end: datetime) -> list[Fine]:
    """Fines issued in [start, end); a reversal (made whenever) brings the fine's net to zero."""
    reversal = aliased(Penalty)
    rows = db.session.execute(
        sa.select(Penalty, reversal.amount)
        .outerjoin(reversal, sa.and_(reversal.reverses_id == Penalty.id, reversal.portal_id == portal_id))
        .where(
            Penalty.portal_id == portal_id,
            Penalty.kind == Penalty.PENALTY,
            Penalty.created_at >= start,
            Penalty.created_at < end,
        )
        .order_by(Penalty.created_at, Penalty.id)
    ).all()
    return [
        Fine(
            id=row.id,
            manager_id=row.manager_id,
            case_id=row.case_id,
            amount=Decimal(row.amount),
            net=Decimal(row.amount) + Decimal(reversed_amount or 0),
            currency=row.currency,
            created_at=row.created_at,
        )
        for row, reversed_amount in rows
    ]


def deletions(portal_id: int, start: datetime, end: datetime) -> list[DealDeletion]:
    """Deals deleted in [start, end), oldest first."""
    return list(
        db.session.scalars(
            sa.select(DealDeletion)
            .where(DealDeletion.portal_id == portal_id, DealDeletion.deleted_at >= start, DealDeletion.deleted_at < end)
            .order_by(DealDeletion.deleted_at, DealDeletion.id)
        )
    )


def _deleter_name(who: str, names: Names, language: str) -> str:
    if who == DealDeletion.UNKNOWN:
        return i18n.translate("deleted_unknown", language)
    if who == "automation":
        return i18n.translate("deleted_automation", language)
    return names.users.get(who, who)


def _amount_of(text: str) -> Decimal:
    try:
        return Decimal(text or "0").quantize(Decimal("0.01"))
    except ArithmeticError:
        return Decimal("0.00")


def _money(amounts: dict[str, Decimal], currencies: list[str]) -> dict[str, Decimal]:
    return {currency: amounts.get(currency, Decimal("0")).quantize(Decimal("0.01")) for currency in currencies}


@dataclass
class Report:
    """Everything the reports page shows for one period."""

    period: Period
    currencies: list[str]
    managers: list[dict[str, Any]]
    totals: dict[str, Any]
    reasons: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    weeks: list[dict[str, Any]]
    analytics: dict[str, Any]
    deletions: list[dict[str, Any]] = field(default_factory=list)
    reason_analytics: dict[str, Any] = field(default_factory=dict)  # comments and stages (reason_analytics)


@dataclass(frozen=True)
class Names:
    """Display names of people and lead sources; ids stand in for anything unknown."""

    users: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def lookup_names(portal: Portal) -> Names:
    """People and lead sources from the CRM (cached); without the CRM the report shows ids."""
    from app.crm.port import client_for

    try:
        crm = client_for(portal)
        users = {user.id: user.name for user in directory.users(portal.id, crm)}
        sources = {source.id: source.name for source in lead_sources(portal)}
    except Exception:  # names are cosmetic: the figures never depend on the CRM answering
        log.warning("names for the report are unavailable", extra={"portal_id": portal.id}, exc_info=True)
        return Names()
    return Names(users=users, sources=sources)


def lead_sources(portal: Portal) -> list[Any]:
    """The portal's lead sources, cached like the directory."""
    import json

    from app.core.queue import get_redis
    from app.crm.port import Source, client_for

    key = f"rc:cache:{portal.id}:sources"
    cached = get_redis().get(key)
    if cached is not None:
        return [Source(**item) for item in json.loads(cached)]
    found = client_for(portal).list_sources()
    get_redis().set(key, json.dumps([{"id": s.id, "name": s.name} for s in found]), ex=directory.CACHE_SECONDS)
    return found


def _weeks(period: Period) -> list[tuple[date, date]]:
    """Monday-based weeks that meet the period, clipped to it."""
    monday = period.first - timedelta(days=period.first.weekday())
    weeks = []
    while monday <= period.last:
        weeks.append((max(monday, period.first), min(monday + timedelta(days=6), period.last)))
        monday += timedelta(days=7)
    return weeks


def reason_label(portal_id: int, code: str, language: str) -> str:
    """A reason's name: the company's own reasons, retired ones included."""
    return reasons.name_of(portal_id, code, language)


def build_report(portal: Portal, period: Period, names: Names | None = None, language: str | None = None) -> Report:
    """Every figure of the reports page for one period; names and the headline in `language` (the page's;
    the portal's when not given)."""
    names = names or Names()
    language = language or portal.language
    facts = case_facts(portal.id, period.start, period.end)
    issued = fines(portal.id, period.start, period.end)
    currencies = sorted({fine.currency for fine in issued}) or [cpl_settings(portal)["currency"].upper()]

    by_manager: dict[str, Counts] = defaultdict(Counts)
    by_reason: dict[str, Counts] = defaultdict(Counts)
    by_source: dict[str, Counts] = defaultdict(Counts)
    total = Counts()
    for case in facts:
        for bucket in (by_manager[case.manager_id], by_reason[case.reason], by_source[case.source_id], total):
            bucket.add(case)
    penalties_by_manager: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    penalty_total: dict[str, Decimal] = defaultdict(Decimal)
    for fine in issued:
        penalties_by_manager[fine.manager_id][fine.currency] += fine.net
        penalty_total[fine.currency] += fine.net
        by_manager.setdefault(fine.manager_id, Counts())

    deleted = deletions(portal.id, period.start, period.end)
    deletions_by_manager: dict[str, int] = defaultdict(int)
    for deletion in deleted:
        if deletion.violation:
            deletions_by_manager[deletion.deleted_by] += 1
            by_manager.setdefault(deletion.deleted_by, Counts())
    missing_by_manager = requirement_refusals.refusals_by_manager(portal.id, period.start, period.end)
    for manager_id in missing_by_manager:
        by_manager.setdefault(manager_id, Counts())

    def counts_row(counts: Counts) -> dict[str, Any]:
        return {
            "cases": counts.cases,
            "confirmed": counts.confirmed,
            "leaks": counts.leaks,
            "leak_rate": counts.leak_rate,
        }

    managers = [
        {
            "manager_id": manager_id,
            "name": names.users.get(manager_id, manager_id),
            **counts_row(counts),
            "penalties": _money(penalties_by_manager.get(manager_id, {}), currencies),
            "turnaround_hours": counts.turnaround_hours,
            "deletions": deletions_by_manager.get(manager_id, 0),
            "missing_fields": missing_by_manager.get(manager_id, 0),
        }
        for manager_id, counts in by_manager.items()
    ]
    for row in managers:
        if row["manager_id"] in (DealDeletion.UNKNOWN, "automation"):
            row["name"] = _deleter_name(row["manager_id"], names, language)
    managers.sort(key=lambda row: (-row["leaks"], -row["cases"], row["name"]))
    totals = {
        **counts_row(total),
        "penalties": _money(penalty_total, currencies),
        "turnaround_hours": total.turnaround_hours,
        "deletions": sum(deletions_by_manager.values()),
        "missing_fields": sum(missing_by_manager.values()),
    }
    reasons: list[dict[str, Any]] = [
        {
            "reason": code,
            "name": reason_label(portal.id, code, language),
            "claimed": counts.cases,
            "confirmed": counts.confirmed,
            "confirm_rate": percent(counts.confirmed, counts.cases),
            "share_of_confirmed": percent(counts.confirmed, total.confirmed),
        }
        for code, counts in by_reason.items()
    ]
    reasons.sort(key=lambda row: (-row["confirmed"], -row["claimed"], row["name"]))
    sources = [
        {
            "source_id": source_id,
            "name": names.sources.get(source_id, source_id) if source_id else i18n.translate("no_source", language),
            **counts_row(counts),
        }
        for source_id, counts in by_source.items()
    ]
    sources.sort(key=lambda row: (-row["cases"], row["name"]))

    weeks = []
    for first, last in _weeks(period):
        week = Counts()
        for case in facts:
            if first <= period.local_day(case.opened_at) <= last:
                week.add(case)
        net: dict[str, Decimal] = defaultdict(Decimal)
        for fine in issued:
            if first <= period.local_day(fine.created_at) <= last:
                net[fine.currency] += fine.net
        weeks.append(
            {
                "week": first.isoformat(),
                "until": last.isoformat(),
                **counts_row(week),
                "penalties": _money(net, currencies),
            }
        )

    return Report(
        period=period,
        currencies=currencies,
        managers=managers,
        totals=totals,
        reasons=reasons,
        sources=sources,
        weeks=weeks,
        analytics=analytics(portal, period, facts, language),
        reason_analytics=reason_analytics.build(portal, facts, names.users, language),
        deletions=[
            {
                "deal_id": deletion.deal_id,
                "by_id": deletion.deleted_by,
                "by": _deleter_name(deletion.deleted_by, names, language),
                "role": deletion.role,
                "violation": deletion.violation,
                "at": deletion.deleted_at.astimezone(period.zone).isoformat(timespec="minutes"),
                "title": deletion.title,
                "amount": _amount_of(deletion.amount),
                "currency": deletion.currency,
            }
            for deletion in deleted
        ],
    )


def analytics(portal: Portal, period: Period, facts: list[CaseFacts], language: str | None = None) -> dict[str, Any]:
    """The confirmed reasons of the period against the period before: what clients refuse for, and the trend
    (reason names and the headline in `language`, else the portal's)."""
    language = language or portal.language
    previous = period.previous()
    before = case_facts(portal.id, previous.start, previous.end)
    now_counts: dict[str, int] = defaultdict(int)
    before_counts: dict[str, int] = defaultdict(int)
    for case in facts:
        now_counts[case.reason] += case.confirmed
    for case in before:
        before_counts[case.reason] += case.confirmed
    now_total, before_total = sum(now_counts.values()), sum(before_counts.values())
    rows: list[dict[str, Any]] = []
    for code in set(now_counts) | set(before_counts):
        if not now_counts[code] and not before_counts[code]:
            continue
        share = percent(now_counts[code], now_total)
        share_before = percent(before_counts[code], before_total)
        rows.append(
            {
                "reason": code,
                "name": reason_label(portal.id, code, language),
                "confirmed": now_counts[code],
                "share": share,
                "confirmed_before": before_counts[code],
                "share_before": share_before,
                "change_pp": (share or Decimal(0)) - (share_before or Decimal(0))
                if share is not None and share_before is not None
                else None,
            }
        )
    rows.sort(key=lambda row: (-row["confirmed"], -row["confirmed_before"], row["name"]))
    headline = ""
    if rows and rows[0]["confirmed"]:
        headline = i18n.translate("analytics_headline", language).format(
            share=i18n.number(rows[0]["share"], language), reason=rows[0]["name"]
        )
    return {
        "previous": previous.as_dict(),
        "confirmed": now_total,
        "confirmed_before": before_total,
        "rows": rows,
        "headline": headline,
    }


# -- tables (shared by the page and the CSV) -------------------------------------------------------

Cell = str | int | Decimal | None


@dataclass(frozen=True)
class Table:
    """A titled table: column headers and rows of cells."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    total: list[Cell] | None = None


TABLES = ("managers", "reasons", "sources", "weeks", "analytics", "deletions", *reason_analytics.TABLES)


def tables(report: Report, language: str) -> dict[str, Table]:
    """The report's tables in display order."""
    t = lambda key: i18n.translate(key, language)  # noqa: E731
    money = [t("col_penalties").format(currency=i18n.currency_sign(currency)) for currency in report.currencies]
    counts = [t("col_cases"), t("col_confirmed"), t("col_leaks"), t("col_leak_rate")]

    def count_cells(row: dict[str, Any]) -> list[Cell]:
        return [row["cases"], row["confirmed"], row["leaks"], row["leak_rate"]]

    def money_cells(row: dict[str, Any]) -> list[Cell]:
        return [row["penalties"][currency] for currency in report.currencies]

    made = {
        "managers": Table(
            "managers",
            t("reports_managers"),
            [t("col_manager"), *counts, *money, t("col_turnaround"), t("col_deletions"), t("col_missing_fields")],
            [
                [
                    row["name"],
                    *count_cells(row),
                    *money_cells(row),
                    row["turnaround_hours"],
                    row["deletions"],
                    row["missing_fields"],
                ]
                for row in report.managers
            ],
            [
                t("total"),
                *count_cells(report.totals),
                *money_cells(report.totals),
                report.totals["turnaround_hours"],
                report.totals["deletions"],
                report.totals["missing_fields"],
            ],
        ),
        "deletions": Table(
            "deletions",
            t("reports_deletions"),
            [
                t("col_date"),
                t("col_deleted_by"),
                t("col_deal"),
                t("col_amount"),
                t("col_currency"),
                t("col_violation"),
            ],
            [
                [
                    datetime.fromisoformat(row["at"]).strftime("%d.%m.%Y %H:%M"),
                    row["by"],
                    row["title"],
                    row["amount"],
                    row["currency"],
                    t("yes" if row["violation"] else "no"),
                ]
                for row in report.deletions
            ],
        ),
        "reasons": Table(
            "reasons",
            t("reports_reasons"),
            [t("col_reason"), t("col_claimed"), t("col_confirmed"), t("col_confirm_rate"), t("col_share")],
            [
                [row["name"], row["claimed"], row["confirmed"], row["confirm_rate"], row["share_of_confirmed"]]
                for row in report.reasons
            ],
        ),
        "sources": Table(
            "sources",
            t("reports_sources"),
            [t("col_source"), *counts],
            [[row["name"], *count_cells(row)] for row in report.sources],
        ),
        "weeks": Table(
            "weeks",
            t("reports_weeks"),
            [t("col_week"), *counts, *money],
            [
                [i18n.day(date.fromisoformat(row["week"]), language), *count_cells(row), *money_cells(row)]
                for row in report.weeks
            ],
        ),
        "analytics": Table(
            "analytics",
            t("reports_analytics"),
            [
                t("col_reason"),
                t("col_confirmed"),
                t("col_share"),
                t("col_previous"),
                t("col_previous_share"),
                t("col_change"),
            ],
            [
                [
                    row["name"],
                    row["confirmed"],
                    row["share"],
                    row["confirmed_before"],
                    row["share_before"],
                    row["change_pp"],
                ]
                for row in report.analytics["rows"]
            ],
        ),
    }
    for name, (title, columns, rows) in reason_analytics.table_rows(report.reason_analytics, language).items():
        made[name] = Table(name, title, columns, rows)
    return made


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON-able data (decimals as strings, so nothing is rounded twice)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    return plain(
        {
            "period": report.period.as_dict(),
            "currencies": report.currencies,
            "managers": report.managers,
            "totals": report.totals,
            "reasons": report.reasons,
            "sources": report.sources,
            "weeks": report.weeks,
            "analytics": report.analytics,
            "deletions": report.deletions,
            "reason_analytics": report.reason_analytics,
        }
    )


# -- scheduled reports -----------------------------------------------------------------------------

SCHEDULE_SECTION = "reports"


class ScheduleSchema(Schema):
    """One schedule: on or off, when (portal time), and for monthly reports the day of the month."""

    class Meta:
        unknown = RAISE

    enabled = fields.Boolean(load_default=True)
    weekday = fields.Integer(load_default=1, validate=validate.Range(min=1, max=7, error="1 (Monday) to 7 (Sunday)"))
    day = fields.Integer(load_default=1, validate=validate.Range(min=1, max=28, error="1 to 28"))
    hour = fields.Integer(load_default=9, validate=validate.Range(min=0, max=23, error="0 to 23"))


class ReportScheduleSchema(Schema):
    """Scheduled reports of a portal; recipients are the heads of sales from the guard settings."""

    class Meta:
        unknown = RAISE

    weekly = fields.Nested(ScheduleSchema, load_default=lambda: ScheduleSchema().load({}))
    monthly = fields.Nested(ScheduleSchema, load_default=lambda: ScheduleSchema().load({}))


def report_schedule(portal: Portal) -> dict[str, Any]:
    """The stored schedule with defaults (weekly on Monday and monthly on the 1st, at 09:00)."""
    return ReportScheduleSchema().load(dict((portal.settings or {}).get(SCHEDULE_SECTION, {})))


def update_report_schedule(portal: Portal, changes: dict[str, Any]) -> dict[str, Any]:
    """Validate and store the schedule; raises ValidationError naming the wrong fields."""
    current = report_schedule(portal)
    merged = {
        key: {**current[key], **value} if isinstance(value, dict) and key in current else value
        for key, value in {**current, **changes}.items()
    }
    loaded = ReportScheduleSchema().load(merged)
    stored = dict(portal.settings or {})
    stored[SCHEDULE_SECTION] = loaded
    portal.settings = stored
    flag_modified(portal, "settings")
    return loaded


@dataclass(frozen=True)
class Due:
    """A scheduled report whose moment has come: its kind, the period it covers and its unique key."""

    kind: str
    period: Period
    key: str


def due_reports(portal: Portal, now: datetime) -> list[Due]:
    """The weekly and monthly reports whose sending moment in this week/month has passed."""
    schedule = report_schedule(portal)
    tz_name = zone_name(portal)
    zone = ZoneInfo(tz_name)
    local = now.astimezone(zone)
    due = []
    weekly = schedule["weekly"]
    if weekly["enabled"]:
        monday = local.date() - timedelta(days=local.weekday())
        moment = datetime.combine(monday + timedelta(days=weekly["weekday"] - 1), time(weekly["hour"]), zone)
        if local >= moment:
            period = Period(monday - timedelta(days=7), monday - timedelta(days=1), tz_name)
            year, week, _ = period.first.isocalendar()
            due.append(Due("weekly", period, f"weekly:{year}-W{week:02d}"))
    monthly = schedule["monthly"]
    if monthly["enabled"]:
        first = local.date().replace(day=1)
        moment = datetime.combine(first.replace(day=monthly["day"]), time(monthly["hour"]), zone)
        if local >= moment:
            last = first - timedelta(days=1)
            period = Period(last.replace(day=1), last, tz_name)
            due.append(Due("monthly", period, f"monthly:{last.year}-{last.month:02d}"))
    return [item for item in due if portal.installed_at is None or portal.installed_at < item.period.end]


AMO_WIDGET_CODE = "amo_widget_code"  # the account's code of our widget, told by the widget itself
AMO_MENU_ITEM = "refusal_control"  # our left-menu section (widget manifest `left_menu`)


def report_link(portal: Portal) -> str:
    """Where a head opens the reports page: the app inside the portal (amoCRM: our left-menu page, the
    `widget_page` location at /widget_page/{widget code}/{section}/; before the widget has told its code, the
    account's integrations settings, where the widget's settings window opens the same page)."""
    if portal.crm == Portal.AMOCRM:
        code = (portal.settings or {}).get(AMO_WIDGET_CODE)
        if code:
            return f"https://{portal.domain}/widget_page/{code}/{AMO_MENU_ITEM}/"
        return f"https://{portal.domain}/settings/widgets/"
    app_id = (portal.settings or {}).get("b24_app_id")
    if app_id:
        # The portal opens an installed app at /marketplace/app/<its numeric ID from app.info>/.
        return f"https://{portal.domain}/marketplace/app/{app_id}/"
    return f"https://{portal.domain}/marketplace/installed/"


# Sentences other sections add to the scheduled summary, before its link (filled by create_app: the money saved,
# the lead exchange); each returns "" when it has nothing to say for the period.
SUMMARY_LINES: list[Callable[[Portal, Period], str]] = []


def summary_text(portal: Portal, due: Due, report: Report) -> str:
    """The notification a head gets: the period's figures, the top confirmed reason and a link."""
    language = portal.language
    t = lambda key: i18n.translate(key, language)  # noqa: E731
    totals = report.totals
    rate = totals["leak_rate"]
    penalties = "; ".join(i18n.money(amount, currency, language) for currency, amount in totals["penalties"].items())
    parts = [
        t("summary_body").format(
            title=t(f"summary_{due.kind}"),
            period=due.period.label(language),
            cases=i18n.number(totals["cases"], language),
            confirmed=i18n.number(totals["confirmed"], language),
            leaks=i18n.number(totals["leaks"], language),
            rate="—" if rate is None else f"{i18n.number(rate, language)} %",
            penalties=penalties,
        )
    ]
    top = report.analytics["rows"][0] if report.analytics["rows"] else None
    if top is not None and top["confirmed"]:
        parts.append(t("summary_top_reason").format(reason=top["name"], share=i18n.number(top["share"], language)))
    parts += [line for summary_line in SUMMARY_LINES if (line := summary_line(portal, due.period))]
    parts.append(t("summary_link").format(link=report_link(portal)))
    return " ".join(parts)


def _claim(portal_id: int, key: str, head_id: str) -> bool:
    """Take the right to send one head's report for one period; exactly one caller ever wins it
    (a failed send can be retried, a sent or in-flight one cannot)."""
    inserted = db.session.execute(
        insert_ignore(
            ReportDelivery,
            {
                "portal_id": portal_id,
                "period_key": key,
                "head_id": head_id,
                "status": ReportDelivery.SENDING,
                "attempts": 1,
                "error": "",
                "created_at": utcnow(),
            },
            ["portal_id", "period_key", "head_id"],
        ).returning(ReportDelivery.id)
    ).scalar()
    if inserted is not None:
        db.session.commit()
        return True
    retried: sa.CursorResult[Any] = db.session.execute(  # type: ignore[assignment]  # an UPDATE answers a CursorResult
        sa.update(ReportDelivery)
        .where(
            ReportDelivery.portal_id == portal_id,
            ReportDelivery.period_key == key,
            ReportDelivery.head_id == head_id,
            ReportDelivery.status == ReportDelivery.FAILED,
        )
        .values(status=ReportDelivery.SENDING, attempts=ReportDelivery.attempts + 1, error="")
    )
    db.session.commit()
    return retried.rowcount == 1


def _finish(portal_id: int, key: str, head_id: str, error: str = "") -> None:
    db.session.execute(
        sa.update(ReportDelivery)
        .where(
            ReportDelivery.portal_id == portal_id,
            ReportDelivery.period_key == key,
            ReportDelivery.head_id == head_id,
        )
        .values(
            status=ReportDelivery.FAILED if error else ReportDelivery.SENT,
            error=error[:2000],
            sent_at=None if error else utcnow(),
        )
    )
    db.session.commit()


def send_scheduled_for_portal(portal: Portal, now: datetime | None = None) -> int:
    """Send the due reports of one portal to each head; returns how many notifications went out."""
    from app.crm.port import client_for
    from app.domain.settings import guard_settings

    now = now or utcnow()
    due = due_reports(portal, now)
    if not due:
        return 0
    crm = client_for(portal)
    heads = directory.heads(portal.id, crm, guard_settings(portal))
    sent = 0
    for item in due:
        waiting = [
            head
            for head in heads
            if db.session.scalar(
                sa.select(ReportDelivery.status).where(
                    ReportDelivery.portal_id == portal.id,
                    ReportDelivery.period_key == item.key,
                    ReportDelivery.head_id == head,
                )
            )
            in (None, ReportDelivery.FAILED)
        ]
        if not waiting:
            continue
        message = summary_text(portal, item, build_report(portal, item.period))
        db.session.rollback()  # no read transaction held across the CRM calls below
        for head in waiting:
            if not _claim(portal.id, item.key, head):
                continue
            try:
                crm.notify(head, message)
            except CrmError as error:  # the row is marked failed and retried by the next run
                _finish(portal.id, item.key, head, error=f"{type(error).__name__}: {error}")
                log.warning("scheduled report not sent", extra={"portal_id": portal.id, "period": item.key})
                continue
            _finish(portal.id, item.key, head)
            sent += 1
    return sent


def send_scheduled_reports(now: datetime | None = None) -> int:
    """The periodic job: every installed portal's due reports."""
    portal_ids = db.session.scalars(sa.select(Portal.id).where(Portal.status == "installed").order_by(Portal.id)).all()
    sent = 0
    for portal_id in portal_ids:
        portal = db.session.get(Portal, portal_id)
        if portal is None:
            continue
        try:
            sent += send_scheduled_for_portal(portal, now)
        except Exception:  # one portal's CRM being down must not stop the others
            db.session.rollback()
            log.exception("scheduled reports failed", extra={"portal_id": portal_id})
    return sent


def ledger_table(rows: list[Any], names: Names, language: str, timezone: str) -> Table:
    """The penalty ledger of a period (fines and their cancellations) as a table."""
    t = lambda key: i18n.translate(key, language)  # noqa: E731
    return Table(
        "ledger",
        t("reports_ledger"),
        [
            t("col_date"),
            t("col_manager"),
            t("col_deal"),
            t("col_kind"),
            t("col_amount"),
            t("col_currency"),
            t("col_note"),
        ],
        [
            [
                i18n.when(row.created_at, language, timezone),
                names.users.get(row.manager_id, row.manager_id),
                f"{row.deal_title} (#{row.deal_id})" if row.deal_title else f"#{row.deal_id}",
                t(f"kind_{row.kind}"),
                row.amount,
                row.currency,
                row.reason if row.kind == Penalty.REVERSAL else cpl_rule_text(row.rule, language, names.sources),
            ]
            for row in rows
        ],
    )
