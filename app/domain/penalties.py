"""CPL resolution and the penalty ledger: fines are appended, appeals append a reversal, totals are derived."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import flag_modified

from app.core.db import db
from app.core.models import DealDeletion, Penalty, Portal, RefusalCase
from app.crm.port import Deal
from app.domain import audit
from app.domain.ledger import DELETED_DEAL, plan_penalty_notice

SECTION = "cpl"


class CplSettingsSchema(Schema):
    """CPL table of a portal: amounts as decimal strings, one currency."""

    class Meta:
        unknown = RAISE

    currency = fields.String(load_default="RUB", validate=validate.Length(equal=3))
    default = fields.String(load_default="0")
    by_source = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    by_pipeline = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)

    @validates("default")
    def check_default(self, value: str, data_key: str) -> None:
        _amount(value)

    @validates("by_source", "by_pipeline")
    def check_tables(self, value: dict[str, str], data_key: str) -> None:
        """Each wrong amount is named by its key (the source or pipeline), so the page marks that row."""
        problems: dict[str, list[str]] = {}
        for key, amount in value.items():
            try:
                _amount(amount)
            except ValidationError as error:
                problems[key] = [str(message) for message in error.messages]
        if problems:
            raise ValidationError(problems)


def _amount(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value).replace(",", ".").replace(" ", ""))
    except InvalidOperation as error:
        raise ValidationError(f"not an amount: {value!r}") from error
    if not amount.is_finite() or amount < 0:
        raise ValidationError(f"not an amount: {value!r}")
    return amount.quantize(Decimal("0.01"))


@dataclass(frozen=True)
class Cpl:
    """The cost of a lead and the rule that set it."""

    amount: Decimal
    currency: str
    rule: str


def cpl_settings(portal: Portal) -> dict[str, Any]:
    """The stored CPL table with defaults."""
    return CplSettingsSchema().load(dict((portal.settings or {}).get(SECTION, {})))


def update_cpl_settings(portal: Portal, changes: dict[str, Any]) -> dict[str, Any]:
    """Validate and store the CPL table; raises ValidationError naming the wrong fields."""
    merged = {**cpl_settings(portal), **changes}
    loaded = CplSettingsSchema().load(merged)
    stored = dict(portal.settings or {})
    stored[SECTION] = {
        "currency": loaded["currency"].upper(),
        "default": str(_amount(loaded["default"])),
        "by_source": {key: str(_amount(value)) for key, value in loaded["by_source"].items()},
        "by_pipeline": {key: str(_amount(value)) for key, value in loaded["by_pipeline"].items()},
    }
    portal.settings = stored
    flag_modified(portal, "settings")
    return stored[SECTION]


def resolve_cpl(portal: Portal, deal: Deal) -> Cpl:
    """The deal's CPL field, else the table by lead source, else the pipeline default, else the portal default."""
    table = cpl_settings(portal)
    currency = table["currency"].upper()
    if deal.cpl is not None and deal.cpl > 0:
        return Cpl(deal.cpl.quantize(Decimal("0.01")), deal.currency or currency, "deal_cpl")
    if deal.source_id and deal.source_id in table["by_source"]:
        return Cpl(_amount(table["by_source"][deal.source_id]), currency, f"source:{deal.source_id}")
    if deal.pipeline_id in table["by_pipeline"]:
        return Cpl(_amount(table["by_pipeline"][deal.pipeline_id]), currency, f"pipeline:{deal.pipeline_id}")
    return Cpl(_amount(table["default"]), currency, "portal_default")


def issue_penalty(portal: Portal, case: RefusalCase, deal: Deal, created_by: str) -> Penalty:
    """Fine the case's manager the lead's cost; a second call for the same case returns the first row."""
    existing = _case_row(portal.id, case.id, Penalty.PENALTY)
    if existing is not None:
        return existing
    cpl = resolve_cpl(portal, deal)
    penalty = Penalty(
        portal_id=portal.id,
        manager_id=case.manager_id,
        case_id=case.id,
        deal_id=case.deal_id,
        kind=Penalty.PENALTY,
        amount=cpl.amount,
        currency=cpl.currency,
        rule=cpl.rule,
        reason="leaked client",
        created_by=created_by,
    )
    try:
        with db.session.begin_nested():
            db.session.add(penalty)
    except IntegrityError:
        found = _case_row(portal.id, case.id, Penalty.PENALTY)
        assert found is not None
        return found
    plan_penalty_notice(portal, penalty)
    audit.record(portal.id, created_by, "penalty", f"{cpl.amount} {cpl.currency}", cpl.rule, deal_id=case.deal_id)
    return penalty


def issue_deletion_penalty(portal: Portal, deletion: DealDeletion, deal: Deal, created_by: str) -> Penalty:
    """Fine the manager who deleted a deal the lead's cost, like a leak; a second call returns the first row."""
    if deletion.penalty_id is not None:
        existing = db.session.get(Penalty, deletion.penalty_id)
        if existing is not None:
            return existing
    cpl = resolve_cpl(portal, deal)
    penalty = Penalty(
        portal_id=portal.id,
        manager_id=deletion.deleted_by,
        case_id=None,
        deal_id=deletion.deal_id,
        kind=Penalty.PENALTY,
        amount=cpl.amount,
        currency=cpl.currency,
        rule=cpl.rule,
        reason=DELETED_DEAL,
        created_by=created_by,
    )
    db.session.add(penalty)
    db.session.flush()
    deletion.penalty_id = penalty.id
    plan_penalty_notice(portal, penalty)
    audit.record(portal.id, created_by, "penalty", f"{cpl.amount} {cpl.currency}", cpl.rule, deal_id=deletion.deal_id)
    return penalty


class AppealError(ValueError):
    """An appeal that cannot be applied (already reversed, not a fine, another portal's row)."""


class OwnFineError(AppealError):
    """The person deciding the appeal is the one who was fined."""


def appeal(portal: Portal, penalty_id: int, by: str, reason: str) -> Penalty:
    """Cancel a fine by appending a reversing row; the original row stays.

    Nobody decides an appeal of his own fine (OwnFineError): a head's own fine is cancelled by another head
    of sales or by a portal administrator.
    """
    if not reason.strip():
        raise AppealError("a reason is required")
    penalty = db.session.scalar(
        sa.select(Penalty).where(Penalty.id == penalty_id, Penalty.portal_id == portal.id).with_for_update()
    )
    if penalty is None:
        raise AppealError("no such penalty")
    if penalty.kind != Penalty.PENALTY:
        raise AppealError("only a fine can be appealed")
    if penalty.manager_id == by:
        raise OwnFineError("nobody cancels his own fine")
    if db.session.scalar(sa.select(Penalty.id).where(Penalty.reverses_id == penalty.id)) is not None:
        raise AppealError("this fine was already cancelled")
    reversal = Penalty(
        portal_id=portal.id,
        manager_id=penalty.manager_id,
        case_id=penalty.case_id,
        deal_id=penalty.deal_id,
        kind=Penalty.REVERSAL,
        amount=-penalty.amount,
        currency=penalty.currency,
        rule=penalty.rule,
        reverses_id=penalty.id,
        reason=reason.strip(),
        created_by=by,
    )
    try:
        with db.session.begin_nested():
            db.session.add(reversal)
    except IntegrityError as error:
        raise AppealError("this fine was already cancelled") from error
    plan_penalty_notice(portal, reversal)
    audit.record(portal.id, by, "appeal", "fine cancelled", reason.strip(), deal_id=penalty.deal_id)
    return reversal


def balances(portal_id: int, start: datetime | None = None, end: datetime | None = None) -> dict[str, Decimal]:
    """Net fines per manager for fines issued in [start, end); reversals count against their fine's period."""
    fines = aliased(Penalty)
    query = (
        sa.select(Penalty.manager_id, sa.func.sum(Penalty.amount))
        .outerjoin(fines, Penalty.reverses_id == fines.id)
        .where(Penalty.portal_id == portal_id)
        .group_by(Penalty.manager_id)
    )
    issued = sa.func.coalesce(fines.created_at, Penalty.created_at)
    if start is not None:
        query = query.where(issued >= start)
    if end is not None:
        query = query.where(issued < end)
    return {manager: Decimal(total).quantize(Decimal("0.01")) for manager, total in db.session.execute(query)}


def _case_row(portal_id: int, case_id: int, kind: str) -> Penalty | None:
    return db.session.scalar(
        sa.select(Penalty).where(Penalty.portal_id == portal_id, Penalty.case_id == case_id, Penalty.kind == kind)
    )
