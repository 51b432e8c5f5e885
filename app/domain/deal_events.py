"""One way for a deal event, whatever the CRM: one lock, one read of the deal, the exchange's rules, then the
guard's, then the planned writes.

Handlers translate their CRM's wire format into these calls and nothing else; the rules work on the deal as
re-read from the CRM and never trust a payload.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import sqlalchemy as sa

from app.core import i18n
from app.core.db import db
from app.core.models import DealDeletion, DealSnapshot, Effect, Portal, RefusalCase, utcnow
from app.crm.port import AUTOMATION, CrmClient, Deal
from app.domain import audit, directory, exchange, guard, notices, penalties
from app.domain.effects import as_planned, deal_lock, plan_effect, run_pending_effects
from app.domain.settings import guard_settings

ALLOWED_TO_DELETE = ("qa", "head", "exempt")


def deal_changed(
    portal: Portal, crm: CrmClient, deal_id: str, *, is_new: bool, automation: bool = False, routing: bool = True
) -> guard.Decision:
    """A deal was created or changed: under the deal's lock, finish what an earlier decision left pending, read
    the deal once, route or watch it on the exchange (unless `routing` is off, as for a move to another
    pipeline), let the guard decide on the deal as the exchange's writes will leave it, and carry out every
    planned write. `automation`: the change carried no user's token."""
    rules = guard.Guard(portal, crm)
    routed = routing and exchange.watches(portal, deal_id)
    if routed:
        directory.users(portal.id, crm)  # read before any write: no write transaction across a CRM call
    with deal_lock(portal.id, deal_id):
        run_pending_effects(portal.id, deal_id, crm)
        deal = crm.get_deal(deal_id)
        if routed:
            exchange.apply_rules(portal, crm, deal, is_new=is_new, automation=automation)
            deal = as_planned(portal.id, deal)
            db.session.commit()
        decision = rules.decide_deal(deal, automation)
        db.session.commit()
        run_pending_effects(portal.id, deal_id, crm)
    return decision


def deal_forgotten(portal_id: int, deal_id: str) -> None:
    """A deal we can no longer read (gone without a delete event): forget what we remembered of it."""
    guard.forget_deal(portal_id, deal_id)


def deal_deleted(portal: Portal, crm: CrmClient, deal_id: str, *, by: str | None) -> DealDeletion:
    """A deal was deleted in the CRM by `by` (a user id, AUTOMATION, or None when the CRM did not say who).

    Whoever deleted it, the deletion is recorded with the deal as we last saw it, and its open case is
    withdrawn. A deletion by anyone but QA, heads or the exempt (in a guarded pipeline) is a violation: it is
    audited as one, every head is notified at once, and with `fine_deletions` on the deleting manager is fined
    the lead's cost. A second delivery of the same deletion changes nothing."""
    settings = guard_settings(portal)
    deleter = by or DealDeletion.UNKNOWN
    # Every CRM read before the first write: no write transaction across a CRM call.
    people = {user.id: user.name for user in directory.users(portal.id, crm)}
    heads = directory.heads(portal.id, crm, settings)
    role = directory.role_of(portal.id, crm, settings, by) if by else DealDeletion.UNKNOWN
    with deal_lock(portal.id, deal_id):
        deletion = _deletion(portal.id, deal_id)
        if deletion is None:
            deletion = _record_deletion(portal, deal_id, deleter, role, heads, people)
            if deletion.violation and settings.fine_deletions and role == "manager":
                snapshot = guard.snapshot_of(portal.id, deal_id)
                penalties.issue_deletion_penalty(portal, deletion, _deal_of(deal_id, snapshot), AUTOMATION)
            db.session.execute(
                sa.delete(DealSnapshot).where(DealSnapshot.portal_id == portal.id, DealSnapshot.deal_id == deal_id)
            )
            db.session.commit()
        run_pending_effects(portal.id, deal_id, crm)
    return deletion


def _deletion(portal_id: int, deal_id: str) -> DealDeletion | None:
    return db.session.scalar(
        sa.select(DealDeletion).where(DealDeletion.portal_id == portal_id, DealDeletion.deal_id == deal_id)
    )


def _record_deletion(
    portal: Portal,
    deal_id: str,
    deleter: str,
    role: str,
    heads: list[str],
    people: dict[str, str],
) -> DealDeletion:
    snapshot = guard.snapshot_of(portal.id, deal_id)
    guarded = snapshot is None or bool(guard_settings(portal).guards(snapshot.pipeline_id))
    violation = guarded and role not in ALLOWED_TO_DELETE
    deletion = DealDeletion(
        portal_id=portal.id,
        deal_id=deal_id,
        deleted_by=deleter,
        role=role,
        violation=violation,
        known=snapshot is not None,
        title=snapshot.title if snapshot is not None and snapshot.title else f"#{deal_id}",
        amount=snapshot.amount if snapshot is not None else "0",
        currency=snapshot.currency if snapshot is not None else "",
        pipeline_id=snapshot.pipeline_id if snapshot is not None else "",
        stage_id=snapshot.stage_id if snapshot is not None else "",
        responsible_id=snapshot.responsible_id if snapshot is not None else "",
        deleted_at=utcnow(),
    )
    db.session.add(deletion)
    db.session.flush()
    _drop_deal_writes(portal.id, deal_id)
    case = guard.open_case_for(portal.id, deal_id)
    if case is not None:
        case.state = RefusalCase.WITHDRAWN
        case.closed_at = utcnow()
        guard.add_case_event(case, deleter, "withdrawn", "deleted")
        guard.end_case_work(portal, case)  # its QA task and callback to-dos are completed in the CRM
        deletion.case_id = case.id
    audit.record(
        portal.id,
        deleter,
        "delete deal",
        "deletion recorded",
        "only QA and heads may drop a deal" if violation else f"allowed for {role}",
        deal_id=deal_id,
        violation=violation,
        deletion_id=deletion.id,
        title=deletion.title,
        case_id=deletion.case_id,
    )
    if violation:
        who = people.get(deleter) or notices.unknown_author(portal.language, deleter)
        message = notices.render(
            "deal_deleted",
            portal.language,
            title=deletion.title,
            who=who,
            amount=i18n.money(_decimal(deletion.amount), deletion.currency, portal.language),
        )
        for head in heads:
            if head != deleter:
                key = f"deletion:{deletion.id}:notice:{head}"
                plan_effect(portal.id, deal_id, key, "notify", {"user_id": head, "message": message})
    return deletion


def _drop_deal_writes(portal_id: int, deal_id: str) -> None:
    """Writes still pending to the deleted deal can never land: mark them done (notices still go out)."""
    pending = db.session.scalars(
        sa.select(Effect).where(
            Effect.portal_id == portal_id,
            Effect.deal_id == deal_id,
            Effect.status == Effect.PENDING,
            Effect.kind != "notify",
        )
    ).all()
    for effect in pending:
        effect.status = Effect.DONE
        effect.result = "deal deleted"
        effect.done_at = utcnow()


def _deal_of(deal_id: str, snapshot: DealSnapshot | None) -> Deal:
    """The deleted deal as we last saw it (enough for its CPL)."""
    if snapshot is None:
        return Deal(deal_id, f"#{deal_id}", "", "", "process", "", None, None)
    try:
        cpl = Decimal(snapshot.cpl) if snapshot.cpl else None
    except InvalidOperation:
        cpl = None
    try:
        amount = Decimal(snapshot.amount or "0")
    except InvalidOperation:
        amount = Decimal("0")
    return Deal(
        id=deal_id,
        title=snapshot.title,
        pipeline_id=snapshot.pipeline_id,
        stage_id=snapshot.stage_id,
        stage_semantics="process",
        responsible_id=snapshot.responsible_id,
        modified_by_id=None,
        modified_at=snapshot.modified_at,
        amount=amount,
        currency=snapshot.currency,
        source_id=snapshot.source_id,
        cpl=cpl,
    )


def _decimal(text: str | None) -> Decimal:
    """A stored amount ("1200000.00") as a Decimal; zero when it is not a number."""
    try:
        return Decimal(text or "0")
    except (InvalidOperation, ValueError):
        return Decimal("0")
