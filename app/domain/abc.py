"""ABC qualification (article 001): at first contact the manager records need, budget and urgency; the class
follows from them and is written to the deal's class field.

- need + budget + urgent = A; need + budget = B; need without budget = C; no need (or not answered) = no class.
- The class is computed on every deal event (`deal_events`, under the deal's lock) and written to the CRM only when
  the class field holds something else, so the echo of our own write finds the field right and writes nothing.
- What the exchange, the reports by class and the A-idle notice need is kept per deal (`DealClass`).
- An A deal with no activity for `abc_a_idle_hours` (a portal setting, 0 = off) gets one notice to its manager
  (and the heads with `abc_a_idle_heads`) per idle period: new activity starts a new period.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from app.core import i18n
from app.core.db import db
from app.core.models import CaseEvent, DealClass, Portal, RefusalCase, utcnow
from app.crm.errors import CrmError, PortalNeedsReinstall
from app.crm.port import CrmClient, Deal, client_for
from app.domain import audit, directory, reports
from app.domain.catalog import Label
from app.domain.effects import as_planned, deal_lock, plan_effect, run_pending_effects
from app.domain.settings import guard_settings

log = logging.getLogger(__name__)

CLASSES = ("A", "B", "C")
YES = "yes"
FIELD_SETTINGS = ("b24_fields", "amo_fields")  # where the installers keep the CRM's ids of our fields
OUTCOME_OF = {"success": DealClass.WON, "failure": DealClass.LOST, "process": DealClass.OPEN}
READ_CHUNK = 50

IDLE_NOTICE = Label(
    "Сделка класса A «{title}» без активности {hours} ч. Клиент с потребностью, бюджетом и срочностью ждёт: "
    "свяжитесь с ним. {link}",
    'The class A deal "{title}" has had no activity for {hours} h. A client with a need, a budget and urgency is '
    "waiting: get in touch. {link}",
)

i18n.register(
    {
        "abc_class": ("Класс", "Class"),
        "abc_unclassified": ("—", "—"),
        "abc_report_title": ("Сделки по классам ABC", "Deals by ABC class"),
        "abc_col_class": ("Класс ABC", "ABC class"),
        "abc_col_deals": ("Сделок", "Deals"),
        "abc_col_won": ("Выиграно", "Won"),
        "abc_col_conversion": ("Конверсия, %", "Conversion, %"),
        "abc_col_refusals": ("Условные отказы", "Conditional refusals"),
        "abc_col_leaks": ("Утечки", "Leaks"),
        "reports_empty_abc": ("В периоде сделкам не присвоен класс.", "No deal got a class in the period."),
        "abc_report_definitions": (
            "Сделки — получившие класс в периоде (по дню в часовом поясе портала), по их нынешнему классу. "
            "Выиграно — из них выигранные; конверсия = выиграно / сделки. Условные отказы и утечки — сколько из этих "
            "сделок переводили в «Условный отказ» и сколько отказов ОКК признал утечкой.",
            "Deals: those that got their class in the period (by the local day in the portal's time zone), by their "
            "current class. Won: those of them won; conversion = won / deals. Conditional refusals and leaks: how "
            "many of these deals were moved to Conditional refusal, and how many refusals QA found to be leaks.",
        ),
        "settings_abc_a_idle_hours": (
            "Уведомлять о сделке класса A без активности через, ч (0 — не уведомлять)",
            "Notify about a class A deal with no activity after, h (0: never)",
        ),
        "settings_abc_a_idle_heads": (
            "Уведомлять о простое сделок класса A и руководителей",
            "Also notify the heads about idle class A deals",
        ),
    }
)


def classify(need: str | None, budget: str | None, urgency: str | None) -> str:
    """The class from the three answers ("yes", "no" or None): A, B, C, or "" (no need: no class)."""
    if need != YES:
        return ""
    if budget != YES:
        return "C"
    return "A" if urgency == YES else "B"


def installed(portal: Portal) -> bool:
    """Whether the portal's class field is installed (a portal installed before ABC gets it from the
    reconciliation's repair of its fields)."""
    settings = portal.settings or {}
    return any("abc_class" in (settings.get(key) or {}) for key in FIELD_SETTINGS)


def apply(portal: Portal, deal: Deal, now: datetime | None = None) -> str | None:
    """The deal's class from its answers, planned as a write of the class field when the field holds another
    value, and remembered for the exchange, reports and idle notices. Called under the deal's lock; the caller
    commits and carries out the writes. None when the portal has no ABC fields yet."""
    if not installed(portal):
        return None
    now = now or utcnow()
    wanted = classify(deal.abc_need, deal.abc_budget, deal.abc_urgency)
    held = deal.abc_class or ""
    if wanted != held:
        # One write per decision: a later decision (another change) plans its own, even back to an earlier class.
        key = f"abc:{deal.id}:{now.isoformat()}:{held or '-'}:{wanted or '-'}"
        plan_effect(portal.id, deal.id, key, "update", {"abc_class": wanted})
        audit.record(
            portal.id,
            "app",
            "classify deal",
            f"class {wanted or 'none'}",
            f"need {deal.abc_need or '-'}, budget {deal.abc_budget or '-'}, urgency {deal.abc_urgency or '-'}",
            deal_id=deal.id,
            previous=held,
        )
    moving = as_planned(portal.id, deal).stage_id != deal.stage_id  # the guard sends it back: outcome unknown yet
    remember(portal.id, deal, wanted, now, outcome_known=not moving)
    return wanted


def stale(portal: Portal, deals: Sequence[Deal]) -> set[str]:
    """The deals whose answers call for another class than the one their class field holds or the one we keep
    (a change of the answers whose event was lost): one query for all of them, no CRM call. Empty when the
    portal has no ABC fields yet."""
    if not deals or not installed(portal):
        return set()
    known = classes_of(portal.id, [deal.id for deal in deals])
    found = set()
    for deal in deals:
        wanted = classify(deal.abc_need, deal.abc_budget, deal.abc_urgency)
        if wanted != (deal.abc_class or "") or wanted != known.get(deal.id, ""):
            found.add(deal.id)
    return found


def remember(
    portal_id: int, deal: Deal, abc_class: str, now: datetime, *, outcome_known: bool = True
) -> DealClass | None:
    """Keep the deal's class, outcome and last activity (a deal never classified is not stored). With a move of
    ours still pending (`outcome_known` False) the outcome is left as it was: the deal is not staying where it is."""
    row = db.session.scalar(sa.select(DealClass).where(DealClass.portal_id == portal_id, DealClass.deal_id == deal.id))
    if row is None:
        if not abc_class:
            return None
        row = DealClass(portal_id=portal_id, deal_id=deal.id, abc_class="", outcome=DealClass.OPEN)
        db.session.add(row)
    if row.abc_class != abc_class:
        row.abc_class = abc_class
        row.classified_at = now if abc_class else None
        row.idle_notified_for = None
    outcome = OUTCOME_OF.get(deal.stage_semantics, DealClass.OPEN) if outcome_known else row.outcome
    if outcome != row.outcome:
        row.outcome = outcome
        row.closed_at = None if outcome == DealClass.OPEN else now
    row.title = deal.title[:255]
    row.pipeline_id = deal.pipeline_id
    row.responsible_id = deal.responsible_id
    row.last_activity_at = deal.last_activity_at or deal.modified_at or row.last_activity_at
    return row


def classes_of(portal_id: int, deal_ids: Sequence[str]) -> dict[str, str]:
    """The known class of each deal ("" or absent: unclassified)."""
    if not deal_ids:
        return {}
    rows = db.session.execute(
        sa.select(DealClass.deal_id, DealClass.abc_class).where(
            DealClass.portal_id == portal_id, DealClass.deal_id.in_(list(deal_ids))
        )
    )
    return {deal_id: abc_class for deal_id, abc_class in rows}


def rank(abc_class: str | None) -> int:
    """Sort key of a class: A, B, C, then unclassified."""
    return CLASSES.index(abc_class) if abc_class in CLASSES else len(CLASSES)


# ---- the A-idle notice -----------------------------------------------------------------------------------------


def _activity(row: DealClass) -> datetime | None:
    return row.last_activity_at or row.classified_at


def notify_idle_all(now: datetime | None = None) -> int:
    """Periodic: every installed portal's idle class A deals (see `notify_idle`); how many notices went out."""
    sent = 0
    for portal in db.session.scalars(sa.select(Portal).where(Portal.status == "installed")).all():
        if guard_settings(portal).abc_a_idle_hours <= 0 or not installed(portal):
            continue
        try:
            sent += notify_idle(portal, client_for(portal), now)
        except PortalNeedsReinstall:
            db.session.rollback()
        except CrmError as error:
            db.session.rollback()
            log.warning("idle A deals not checked", extra={"portal_id": portal.id, "code": error.code})
    return sent


def notify_idle(portal: Portal, crm: CrmClient, now: datetime | None = None) -> int:
    """Class A open deals with no activity for the portal's `abc_a_idle_hours`: each is re-read from the CRM
    (activity the app heard nothing of counts), and its manager (and with `abc_a_idle_heads` the heads) gets one
    notice per idle period. Returns the number of deals notified about."""
    settings = guard_settings(portal)
    hours = settings.abc_a_idle_hours
    if hours <= 0:
        return 0
    now = now or utcnow()
    limit = now - timedelta(hours=hours)
    rows = db.session.scalars(
        sa.select(DealClass).where(
            DealClass.portal_id == portal.id,
            DealClass.abc_class == "A",
            DealClass.outcome == DealClass.OPEN,
            sa.func.coalesce(DealClass.last_activity_at, DealClass.classified_at) <= limit,
        )
    ).all()
    candidates = [
        row.deal_id for row in rows if row.idle_notified_for is None or row.idle_notified_for != _activity(row)
    ]
    if not candidates:
        return 0
    heads = directory.heads(portal.id, crm, settings) if settings.abc_a_idle_heads else []
    notified = 0
    for start in range(0, len(candidates), READ_CHUNK):
        deals = crm.get_deals(candidates[start : start + READ_CHUNK])
        for deal_id in candidates[start : start + READ_CHUNK]:
            deal = deals.get(deal_id)
            if deal is not None and _notify_one(portal, crm, deal, hours, limit, heads, now):
                notified += 1
    return notified


def _notify_one(
    portal: Portal, crm: CrmClient, deal: Deal, hours: int, limit: datetime, heads: list[str], now: datetime
) -> bool:
    """One candidate, as the CRM has it now: still A, open and idle, and not yet notified for this idle period."""
    with deal_lock(portal.id, deal.id):
        row = remember(portal.id, deal, classify(deal.abc_need, deal.abc_budget, deal.abc_urgency), now)
        activity = _activity(row) if row is not None else None
        if row is None or row.abc_class != "A" or row.outcome != DealClass.OPEN or activity is None or activity > limit:
            db.session.commit()
            return False
        if row.idle_notified_for == activity:
            db.session.commit()
            return False
        row.idle_notified_for = activity
        message = IDLE_NOTICE.in_language(portal.language).format(
            title=deal.title, hours=hours, link=crm.deal_url(deal.id)
        )
        stamp = int(activity.timestamp())
        for user_id in dict.fromkeys([deal.responsible_id, *heads]):
            if user_id:
                key = f"abc-idle:{deal.id}:{stamp}:{user_id}"
                plan_effect(portal.id, deal.id, key, "notify", {"user_id": user_id, "message": message})
        audit.record(
            portal.id, "app", "idle A deal", "notified", f"no activity for {hours} h", deal_id=deal.id, heads=heads
        )
        db.session.commit()
        run_pending_effects(portal.id, deal.id, crm)
    return True


# ---- reports by class ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassRow:
    """One class's figures for a period."""

    abc_class: str
    deals: int
    won: int
    refusals: int
    leaks: int

    @property
    def conversion(self) -> Decimal | None:
        return reports.percent(self.won, self.deals)


def by_class(portal_id: int, period: reports.Period) -> list[ClassRow]:
    """Deals that got their class in the period, per class (A, B, C): won, conditional refusals, leaks."""
    rows = db.session.execute(
        sa.select(DealClass.deal_id, DealClass.abc_class, DealClass.outcome).where(
            DealClass.portal_id == portal_id,
            DealClass.abc_class.in_(CLASSES),
            DealClass.classified_at >= period.start,
            DealClass.classified_at < period.end,
        )
    ).all()
    deal_ids = [deal_id for deal_id, _, _ in rows]
    refused: set[str] = set()
    leaked: set[str] = set()
    for start in range(0, len(deal_ids), 500):
        chunk = deal_ids[start : start + 500]
        cases = db.session.execute(
            sa.select(RefusalCase.id, RefusalCase.deal_id).where(
                RefusalCase.portal_id == portal_id, RefusalCase.deal_id.in_(chunk)
            )
        ).all()
        refused.update(deal_id for _, deal_id in cases)
        case_deal = dict(cases)
        if case_deal:
            leaked_cases = db.session.scalars(
                sa.select(CaseEvent.case_id)
                .where(CaseEvent.case_id.in_(list(case_deal)), CaseEvent.state_after == RefusalCase.LEAKED)
                .distinct()
            ).all()
            leaked.update(case_deal[case_id] for case_id in leaked_cases)
    figures = []
    for abc_class in CLASSES:
        mine = [(deal_id, outcome) for deal_id, cls, outcome in rows if cls == abc_class]
        figures.append(
            ClassRow(
                abc_class=abc_class,
                deals=len(mine),
                won=sum(1 for _, outcome in mine if outcome == DealClass.WON),
                refusals=sum(1 for deal_id, _ in mine if deal_id in refused),
                leaks=sum(1 for deal_id, _ in mine if deal_id in leaked),
            )
        )
    return figures


TABLES = ("abc",)


def table(rows: list[ClassRow], language: str) -> reports.Table:
    """The section's table (the CSV and the page)."""
    t = lambda key: i18n.translate(key, language)  # noqa: E731
    total = ClassRow(
        "",
        sum(r.deals for r in rows),
        sum(r.won for r in rows),
        sum(r.refusals for r in rows),
        sum(r.leaks for r in rows),
    )

    def cells(row: ClassRow) -> list[reports.Cell]:
        return [row.deals, row.won, row.conversion, row.refusals, row.leaks]

    return reports.Table(
        "abc",
        t("abc_report_title"),
        [
            t("abc_col_class"),
            t("abc_col_deals"),
            t("abc_col_won"),
            t("abc_col_conversion"),
            t("abc_col_refusals"),
            t("abc_col_leaks"),
        ],
        [[row.abc_class, *cells(row)] for row in rows] if total.deals else [],
        [t("total"), *cells(total)] if total.deals else None,
    )
