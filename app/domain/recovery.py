"""The money the app saved: deals returned to sales after QA found the refusal false, followed to their end.

A leaked case (QA: "the client did not refuse") sends the deal back to sales under another manager. From that
moment the deal is a *recovered* deal; every later event of the deal (webhook or reconciliation: both go through
the guard's `remember`) updates its outcome: won (with the amount it was won for), lost, or still open.

Report figures, per manager whose refusal was found false, for a period in the portal's time zone:
- recovered: deals returned to sales in the period;
- won: recovered deals won in the period (whenever they were returned), and their amount — the revenue
  returned from false refusals («выручка, возвращённая из ложных отказов»);
- fines: the net fines issued to the manager in the period (as in the managers table).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from app.core import i18n
from app.core.db import db
from app.core.models import Portal, RecoveredDeal, RefusalCase, utcnow
from app.crm.port import Deal
from app.domain import reports
from app.domain.penalties import cpl_settings

i18n.register(
    {
        "recovered_title": (
            "Выручка, возвращённая из ложных отказов",
            "Revenue returned from false refusals",
        ),
        "recovered_deals_title": ("Сделки, возвращённые в продажи", "Deals returned to sales"),
        "recovered_headline": (
            "Возвращено в продажи из ложных отказов: {count}; выиграно: {won}, на сумму {amount}.",
            "Returned to sales from false refusals: {count}; won: {won}, for {amount}.",
        ),
        "recovered_col_recovered": ("Возвращено в продажи", "Returned to sales"),
        "recovered_col_recovered_won": ("Выиграно после возврата", "Won after the return"),
        "recovered_col_recovered_revenue": ("Выручка, {currency}", "Revenue, {currency}"),
        "recovered_col_refused_by": ("Ложный отказ", "False refusal by"),
        "recovered_col_returned_to": ("Передана", "Given to"),
        "recovered_col_returned_on": ("Возвращена", "Returned on"),
        "recovered_col_outcome": ("Итог", "Outcome"),
        "recovered_col_closed_on": ("Закрыта", "Closed on"),
        "recovered_open": ("в работе", "in progress"),
        "recovered_won": ("выиграна", "won"),
        "recovered_lost": ("проиграна", "lost"),
        "recovered_deleted": ("удалена", "deleted"),
        "summary_recovered": (
            "Возвращено в продажи из ложных отказов: {count}, выиграно: {won} на {amount}.",
            "Returned to sales from false refusals: {count}, won: {won} for {amount}.",
        ),
        "recovered_definitions": (
            "Возвращено — сделки, возвращённые в продажи в периоде после ложного отказа (клиент не отказывался). "
            "Выиграно — такие сделки, выигранные в периоде (когда бы их ни вернули), выручка — их сумма при выигрыше. "
            "Менеджер — тот, чей отказ оказался ложным; штрафы — как в таблице по менеджерам.",
            "Returned: deals given back to sales in the period after a false refusal (the client had not refused). "
            "Won: such deals won in the period (whenever they were returned); revenue is their amount when won. "
            "The manager is the one whose refusal was false; fines are as in the managers table.",
        ),
    }
)

OUTCOME_OF = {"success": RecoveredDeal.WON, "failure": RecoveredDeal.LOST, "process": RecoveredDeal.OPEN}


def returned(portal_id: int, case: RefusalCase, deal: Deal, manager_id: str, now: datetime | None = None) -> None:
    """A leaked case sent its deal back to sales under `manager_id`: follow the deal from now on (once per case)."""
    exists = db.session.scalar(sa.select(RecoveredDeal.id).where(RecoveredDeal.case_id == case.id))
    if exists is not None:
        return
    db.session.add(
        RecoveredDeal(
            portal_id=portal_id,
            case_id=case.id,
            deal_id=deal.id,
            title=deal.title[:255],
            leaker_id=case.manager_id,
            manager_id=manager_id,
            returned_at=now or utcnow(),
            outcome=RecoveredDeal.OPEN,
            amount=str(deal.amount),
            currency=deal.currency[:8],
        )
    )


def deal_seen(portal_id: int, deal: Deal) -> None:
    """A deal as just read from the CRM: a recovered deal that was won or lost (or reopened) records it."""
    rows = db.session.scalars(
        sa.select(RecoveredDeal).where(RecoveredDeal.portal_id == portal_id, RecoveredDeal.deal_id == deal.id)
    ).all()
    outcome = OUTCOME_OF.get(deal.stage_semantics, RecoveredDeal.OPEN)
    for row in rows:
        if row.outcome == outcome and (outcome == RecoveredDeal.OPEN or row.amount == str(deal.amount)):
            continue
        row.outcome = outcome
        row.amount = str(deal.amount)
        row.currency = deal.currency[:8] or row.currency
        if outcome == RecoveredDeal.OPEN:
            row.closed_at = None
        elif row.closed_at is None:
            row.closed_at = deal.moved_at if deal.moved_at and deal.moved_at >= row.returned_at else utcnow()


def deal_deleted(portal_id: int, deal_id: str, at: datetime | None = None) -> None:
    """A recovered deal deleted in the CRM (or gone from it) while still in work is no longer in progress: it
    ends as deleted, with no revenue. One already won or lost keeps its outcome."""
    rows = db.session.scalars(
        sa.select(RecoveredDeal).where(
            RecoveredDeal.portal_id == portal_id,
            RecoveredDeal.deal_id == deal_id,
            RecoveredDeal.outcome == RecoveredDeal.OPEN,
        )
    ).all()
    for row in rows:
        row.outcome = RecoveredDeal.DELETED
        row.closed_at = at or utcnow()


def summary_line(portal: Portal, period: reports.Period) -> str:
    """The scheduled summary's sentence on the money saved in the period ("" when nothing was returned)."""
    language = portal.language
    recovery = build(portal, period, reports.Names())
    totals = recovery.totals
    if not totals["recovered"] and not totals["won"]:
        return ""
    amount = " + ".join(
        i18n.money(value, currency, language) for currency, value in totals["revenue"].items() if value
    ) or i18n.money(Decimal(0), recovery.currencies[0], language)
    return i18n.translate("summary_recovered", language).format(
        count=i18n.number(totals["recovered"], language), won=i18n.number(totals["won"], language), amount=amount
    )


def recovery_json(recovery: Recovery) -> dict[str, Any]:
    """The section's figures as JSON-able data (decimals as strings, dates as ISO 8601)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    return plain(
        {
            "currencies": recovery.currencies,
            "managers": recovery.managers,
            "totals": recovery.totals,
            "deals": recovery.deals,
        }
    )


# -- report ------------------------------------------------------------------------------------------


@dataclass
class Recovery:
    """The period's recovered deals: per manager, totals and every deal."""

    currencies: list[str]
    managers: list[dict[str, Any]]
    totals: dict[str, Any]
    deals: list[dict[str, Any]]
    headline: str
    timezone: str


def _amount(text: str) -> Decimal:
    try:
        return Decimal(text or "0").quantize(Decimal("0.01"))
    except ArithmeticError:
        return Decimal("0.00")


def build(portal: Portal, period: reports.Period, names: reports.Names, language: str | None = None) -> Recovery:
    """The figures of the «revenue returned from false refusals» section for one period (names in `language`,
    else the portal's)."""
    language = language or portal.language
    in_period = sa.or_(
        sa.and_(RecoveredDeal.returned_at >= period.start, RecoveredDeal.returned_at < period.end),
        sa.and_(RecoveredDeal.closed_at >= period.start, RecoveredDeal.closed_at < period.end),
    )
    rows = db.session.scalars(
        sa.select(RecoveredDeal)
        .where(RecoveredDeal.portal_id == portal.id, in_period)
        .order_by(RecoveredDeal.returned_at, RecoveredDeal.id)
    ).all()
    issued = reports.fines(portal.id, period.start, period.end)
    fine_currencies = {fine.currency for fine in issued}
    won_rows = [
        row
        for row in rows
        if row.outcome == RecoveredDeal.WON and row.closed_at is not None and period.start <= row.closed_at < period.end
    ]
    default_currency = cpl_settings(portal)["currency"].upper()
    currencies = sorted({row.currency or default_currency for row in won_rows} | fine_currencies) or [default_currency]

    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"recovered": 0, "won": 0})
    revenue: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    fines: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in rows:
        if period.start <= row.returned_at < period.end:
            counts[row.leaker_id]["recovered"] += 1
    for row in won_rows:
        counts[row.leaker_id]["won"] += 1
        revenue[row.leaker_id][row.currency or default_currency] += _amount(row.amount)
    for fine in issued:
        if fine.manager_id in counts:
            fines[fine.manager_id][fine.currency] += fine.net

    def money(values: dict[str, Decimal]) -> dict[str, Decimal]:
        return {currency: values.get(currency, Decimal("0")).quantize(Decimal("0.01")) for currency in currencies}

    managers: list[dict[str, Any]] = [
        {
            "manager_id": manager_id,
            "name": names.users.get(manager_id, manager_id),
            "recovered": values["recovered"],
            "won": values["won"],
            "revenue": money(revenue[manager_id]),
            "penalties": money(fines[manager_id]),
        }
        for manager_id, values in counts.items()
    ]
    managers.sort(key=lambda row: (-sum(row["revenue"].values()), -row["recovered"], row["name"]))
    total_revenue: dict[str, Decimal] = defaultdict(Decimal)
    total_fines: dict[str, Decimal] = defaultdict(Decimal)
    for manager in managers:
        for currency in currencies:
            total_revenue[currency] += manager["revenue"][currency]
            total_fines[currency] += manager["penalties"][currency]
    totals: dict[str, Any] = {
        "recovered": sum(manager["recovered"] for manager in managers),
        "won": sum(manager["won"] for manager in managers),
        "revenue": money(total_revenue),
        "penalties": money(total_fines),
    }
    deals = [
        {
            "deal_id": row.deal_id,
            "title": row.title or f"#{row.deal_id}",
            "refused_by": names.users.get(row.leaker_id, row.leaker_id),
            "manager": names.users.get(row.manager_id, row.manager_id),
            "returned_at": row.returned_at,
            "outcome": row.outcome,
            "outcome_text": i18n.translate(f"recovered_{row.outcome}", language),
            "closed_at": row.closed_at,
            "amount": _amount(row.amount),
            "currency": row.currency or default_currency,
        }
        for row in rows
    ]
    headline = ""
    if totals["recovered"] or totals["won"]:
        amount = " + ".join(
            i18n.money(value, currency, language) for currency, value in totals["revenue"].items() if value
        ) or i18n.money(Decimal(0), currencies[0], language)
        headline = i18n.translate("recovered_headline", language).format(
            count=totals["recovered"], won=totals["won"], amount=amount
        )
    return Recovery(currencies, managers, totals, deals, headline, period.timezone)


TABLES = ("recovered", "recovered_deals")


def tables(recovery: Recovery, language: str) -> dict[str, reports.Table]:
    """The section's tables (the page shows money with signs; the CSV gets plain numbers)."""
    t = lambda key: i18n.translate(key, language)  # noqa: E731
    signs = [i18n.currency_sign(currency) for currency in recovery.currencies]
    revenue = [t("recovered_col_recovered_revenue").format(currency=sign) for sign in signs]
    fines = [t("col_penalties").format(currency=sign) for sign in signs]

    def cells(row: dict[str, Any]) -> list[reports.Cell]:
        return [
            row["recovered"],
            row["won"],
            *(row["revenue"][currency] for currency in recovery.currencies),
            *(row["penalties"][currency] for currency in recovery.currencies),
        ]

    return {
        "recovered": reports.Table(
            "recovered",
            t("recovered_title"),
            [t("col_manager"), t("recovered_col_recovered"), t("recovered_col_recovered_won"), *revenue, *fines],
            [[row["name"], *cells(row)] for row in recovery.managers],
            [t("total"), *cells(recovery.totals)],
        ),
        "recovered_deals": reports.Table(
            "recovered_deals",
            t("recovered_deals_title"),
            [
                t("recovered_col_returned_on"),
                t("col_deal"),
                t("recovered_col_refused_by"),
                t("recovered_col_returned_to"),
                t("recovered_col_outcome"),
                t("col_amount"),
                t("col_currency"),
                t("recovered_col_closed_on"),
            ],
            [
                [
                    i18n.day(row["returned_at"], language, recovery.timezone),
                    row["title"],
                    row["refused_by"],
                    row["manager"],
                    row["outcome_text"],
                    row["amount"],
                    row["currency"],
                    i18n.day(row["closed_at"], language, recovery.timezone) if row["closed_at"] else None,
                ]
                for row in recovery.deals
            ],
        ),
    }
