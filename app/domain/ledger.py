"""Around the penalty ledger: the manager's notices for fines and cancellations, and the ledger listing.

Notices are keyed effects (`penalty:<id>:notice`), planned in the same transaction as the ledger row,
so each one reaches the manager once however often the delivery job runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from app.core import i18n
from app.core.db import db
from app.core.models import DealDeletion, Effect, Penalty, Portal, RefusalCase
from app.domain.catalog import Label

log = logging.getLogger(__name__)

NOTICE_KIND = "notify"
NOTICE_PREFIX = "penalty:"
DELETED_DEAL = "deleted deal"  # the reason of a fine for deleting a deal

TEMPLATES: dict[str, Label] = {
    Penalty.PENALTY: Label(
        "Вам начислен штраф {amount}: клиент по сделке «{title}» был упущен "
        "(отказ не подтвердился при проверке ОКК). {link}",
        'You were fined {amount}: the client of the deal "{title}" was leaked (QA did not confirm the refusal). {link}',
    ),
    Penalty.REVERSAL: Label(
        "Штраф {amount} по сделке «{title}» отменён руководителем. Причина: {reason}. {link}",
        'The fine of {amount} for the deal "{title}" was cancelled by your head of sales. Reason: {reason}. {link}',
    ),
    DELETED_DEAL: Label(
        "Вам начислен штраф {amount}: вы удалили сделку «{title}», вместо того чтобы передать отказ на проверку ОКК.",
        'You were fined {amount}: you deleted the deal "{title}" instead of handing the refusal to QA for review.',
    ),
}


def notice_key(penalty: Penalty) -> str:
    """The effect key of a ledger row's notice: one notice per row, ever."""
    return f"{NOTICE_PREFIX}{penalty.id}:notice"


def _deal_title(penalty: Penalty) -> str:
    if penalty.reason == DELETED_DEAL and penalty.case_id is None:
        title = db.session.scalar(
            sa.select(DealDeletion.title).where(
                DealDeletion.portal_id == penalty.portal_id, DealDeletion.deal_id == penalty.deal_id
            )
        )
        if title:
            return title
    if penalty.case_id is not None:
        title = db.session.scalar(sa.select(RefusalCase.deal_title).where(RefusalCase.id == penalty.case_id))
        if title:
            return title
    return f"#{penalty.deal_id}"


def _deal_link(portal: Portal, deal_id: str) -> str:
    if portal.crm == Portal.BITRIX24 and portal.domain:
        return f"https://{portal.domain}/crm/deal/details/{deal_id}/"
    if portal.crm == Portal.AMOCRM and portal.domain:
        return f"https://{portal.domain}/leads/detail/{deal_id}"
    return ""


def notice_text(portal: Portal, penalty: Penalty) -> str:
    """The manager's notice for a fine or for its cancellation, in the portal's language."""
    language = portal.language
    deleted = penalty.kind == Penalty.PENALTY and penalty.reason == DELETED_DEAL and penalty.case_id is None
    return (
        TEMPLATES[DELETED_DEAL if deleted else penalty.kind]
        .in_language(language)
        .format(
            amount=i18n.money(abs(Decimal(penalty.amount)), penalty.currency, language),
            currency=penalty.currency,
            title=_deal_title(penalty),
            reason=penalty.reason,
            link=_deal_link(portal, penalty.deal_id),
        )
        .strip()
    )


def plan_penalty_notice(portal: Portal, penalty: Penalty) -> None:
    """Plan the manager's notice for a new ledger row (the caller commits it with the row)."""
    from app.domain.effects import plan_effect

    plan_effect(
        portal.id,
        penalty.deal_id,
        notice_key(penalty),
        NOTICE_KIND,
        {"user_id": penalty.manager_id, "message": notice_text(portal, penalty), "penalty_id": penalty.id},
    )


def deliver_notices(portal_id: int, deal_id: str) -> int:
    """Carry out the deal's pending effects (penalty notices among them) under the deal's lock."""
    from app.crm.port import client_for
    from app.domain.effects import deal_lock, run_pending_effects

    portal = db.session.get(Portal, portal_id)
    if portal is None or portal.status == "uninstalled":
        return 0
    crm = client_for(portal)
    with deal_lock(portal_id, deal_id):
        return run_pending_effects(portal_id, deal_id, crm)


def sweep_notices() -> int:
    """Deliver penalty notices still pending (a job that died, a fine issued outside a deal's job)."""
    pending = db.session.execute(
        sa.select(Effect.portal_id, Effect.deal_id)
        .where(Effect.status == Effect.PENDING, Effect.key.like(f"{NOTICE_PREFIX}%"))
        .distinct()
    ).all()
    done = 0
    for portal_id, deal_id in pending:
        try:
            done += deliver_notices(portal_id, deal_id)
        except Exception:  # one portal's CRM being down must not stop the others
            db.session.rollback()
            log.exception("penalty notices not delivered", extra={"portal_id": portal_id, "deal_id": deal_id})
    return done


@dataclass(frozen=True)
class LedgerRow:
    """A ledger row as the reports page lists it."""

    id: int
    kind: str
    manager_id: str
    deal_id: str
    deal_title: str
    amount: Decimal
    currency: str
    rule: str
    reason: str
    created_by: str
    created_at: datetime
    reverses_id: int | None
    reversed_by_id: int | None


def ledger_rows(portal_id: int, start: datetime, end: datetime, manager_id: str | None = None) -> list[LedgerRow]:
    """Fines issued in [start, end) with their reversals (whenever made), newest fine first."""
    fines = db.session.scalars(
        sa.select(Penalty)
        .where(
            Penalty.portal_id == portal_id,
            Penalty.kind == Penalty.PENALTY,
            Penalty.created_at >= start,
            Penalty.created_at < end,
            *([Penalty.manager_id == manager_id] if manager_id else []),
        )
        .order_by(Penalty.created_at.desc(), Penalty.id.desc())
    ).all()
    reversals = {
        row.reverses_id: row
        for row in db.session.scalars(
            sa.select(Penalty).where(
                Penalty.portal_id == portal_id, Penalty.reverses_id.in_([fine.id for fine in fines] or [0])
            )
        )
    }
    titles = dict(
        db.session.execute(
            sa.select(RefusalCase.id, RefusalCase.deal_title).where(
                RefusalCase.portal_id == portal_id,
                RefusalCase.id.in_([fine.case_id for fine in fines if fine.case_id] or [0]),
            )
        ).all()
    )
    rows: list[LedgerRow] = []
    for fine in fines:
        reversal = reversals.get(fine.id)
        for row in (fine, reversal) if reversal is not None else (fine,):
            rows.append(
                LedgerRow(
                    id=row.id,
                    kind=row.kind,
                    manager_id=row.manager_id,
                    deal_id=row.deal_id,
                    deal_title=titles.get(fine.case_id, "") if fine.case_id else "",
                    amount=Decimal(row.amount),
                    currency=row.currency,
                    rule=row.rule,
                    reason=row.reason,
                    created_by=row.created_by,
                    created_at=row.created_at,
                    reverses_id=row.reverses_id,
                    reversed_by_id=reversal.id if row is fine and reversal is not None else None,
                )
            )
    return rows
