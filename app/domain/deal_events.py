"""One way for a deal event, whatever the CRM: the deal's lock, one read of the deal, the exchange's rules, then
the guard's, then the planned writes. Events of one portal already waiting are decided together: one read of
all their deals, all their writes packed into as few requests as the CRM allows.

Handlers translate their CRM's wire format into these calls and nothing else; the rules work on the deal as
re-read from the CRM and never trust a payload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa

from app.core import i18n
from app.core.db import db
from app.core.models import DealDeletion, DealSnapshot, Effect, Portal, RefusalCase, utcnow
from app.crm.errors import PortalNeedsReinstall
from app.crm.port import AUTOMATION, CrmClient, Deal
from app.domain import abc, audit, directory, exchange, guard, notices, penalties, recovery
from app.domain.effects import (
    DealLockLost,
    as_planned,
    deal_lock,
    deal_locks,
    plan_effect,
    run_pending_effects,
    run_pending_effects_of,
    take_echoes,
)
from app.domain.settings import guard_settings

log = logging.getLogger(__name__)

ALLOWED_TO_DELETE = ("qa", "head", "exempt")


GROUP_DEALS = 50  # deals decided together: one Bitrix24 batch reads them, 50 deal writes fill one PATCH


@dataclass(frozen=True)
class DealEvent:
    """One event about a deal, as a handler read it from its CRM's wire format.

    `is_new`: the deal was created; `automation`: the change carried no user's token; `routing`: the exchange's
    rules apply (not for a move to another pipeline). `stamp` and `stage_id` are what the event itself says
    (Bitrix24 `ts`; amoCRM `last_modified` and `status_id`): never trusted for a decision, only to recognise the
    echo of our own write. `ref` is the caller's id of the event (an inbox row)."""

    deal_id: str
    is_new: bool = False
    automation: bool = False
    routing: bool = True
    stamp: int | None = None
    stage_id: str | None = None
    ref: int | None = None


def _no_events() -> Sequence[DealEvent]:
    return ()


def _never() -> bool:
    return False


def _ignore(refs: list[int]) -> None:
    return None


def deal_changed(
    portal: Portal, crm: CrmClient, deal_id: str, *, is_new: bool, automation: bool = False, routing: bool = True
) -> guard.Decision:
    """A deal was created or changed: `deals_changed` for one deal."""
    event = DealEvent(deal_id, is_new=is_new, automation=automation, routing=routing)
    return deals_changed(portal, crm, event)[deal_id]


def deals_changed(
    portal: Portal,
    crm: CrmClient,
    lead: DealEvent,
    *,
    waiting: Callable[[], Sequence[DealEvent]] = _no_events,
    settled: Callable[[], bool] = _never,
    claimed: Callable[[list[int]], None] = _ignore,
    finished: Callable[[list[int]], None] = _ignore,
) -> dict[str, guard.Decision]:
    """Deals were created or changed: decide `lead`'s deal, and with it the other events `waiting` names (of the
    same portal, already stored: nothing waits for more to come), up to GROUP_DEALS deals.

    The lead's deal lock is waited for; then, if `settled` says another group decided the lead's event
    meanwhile, nothing else happens. The other deals are taken only if nobody holds their lock (a deal another
    job is deciding is left to that job); `claimed` gets the refs of the other events taken, before any deal
    is read (from then on a delivery identical to one of them is a new change, not a duplicate). Under the
    locks: what earlier decisions left pending is carried out,
    events that are the echo of our own write are recognised without a read, the other deals are read in one
    call, each is routed on the exchange and decided by the guard exactly as alone (its snapshot, idempotent
    effects, audit row), and then every planned write goes out together (`run_pending_effects_of`). `finished`
    gets the refs of the events whose decision and writes are complete, before the locks are released. A
    failure of one deal leaves its events to their own jobs; a failure of the lead's is raised at the end."""
    portal_id = portal.id  # read once: every commit below expires `portal`, and each read would reload it
    rules = guard.Guard(portal, crm)
    decisions: dict[str, guard.Decision] = {}
    failed: dict[str, Exception] = {}
    with deal_locks(portal_id) as locks:
        locks.wait_for(lead.deal_id)
        if settled():
            return {lead.deal_id: guard.Decision("already decided")}
        events: dict[str, list[DealEvent]] = {lead.deal_id: [lead]}
        for event in waiting():
            if event.deal_id in events:
                events[event.deal_id].append(event)
            elif len(events) < GROUP_DEALS and locks.try_take(event.deal_id):
                events[event.deal_id] = [event]
        held = list(events)
        others = [e.ref for d in held for e in events[d] if e.ref is not None and e is not lead]
        if others:
            claimed(others)
        routed = {d for d in held if any(e.routing for e in events[d]) and exchange.watches(portal, d)}
        if routed:
            directory.users(portal_id, crm)  # read before any write: no write transaction across a CRM call
        failed.update(run_pending_effects_of(portal_id, held, crm))
        to_read = []
        for deal_id in held:
            if deal_id in failed:
                continue
            if take_echoes(portal_id, deal_id, [(e.stamp, e.stage_id) for e in events[deal_id]]):
                decisions[deal_id] = guard.Decision("own write")
            else:
                to_read.append(deal_id)
        deals = _read(crm, to_read, lead.deal_id, failed)
        for deal_id in to_read:
            deal = deals.get(deal_id)
            if deal is None:
                continue
            try:
                decisions[deal_id] = _decide(portal, crm, rules, deal, events[deal_id], routed=deal_id in routed)
            except (DealLockLost, PortalNeedsReinstall):
                raise
            except Exception as error:  # noqa: BLE001 - this deal's events stay with their own jobs
                db.session.rollback()
                failed[deal_id] = error
                log.warning(
                    "deal not decided in its group",
                    extra={"portal_id": portal_id, "deal_id": deal_id, "error": f"{type(error).__name__}: {error}"},
                )
        written = [deal_id for deal_id in held if deal_id in decisions]
        failed.update(run_pending_effects_of(portal_id, written, crm))
        done = [e.ref for d in written if d not in failed for e in events[d] if e.ref is not None]
        if done:
            finished(done)
    if lead.deal_id in failed:
        raise failed[lead.deal_id]
    if lead.deal_id not in decisions:
        raise LookupError(f"deal {lead.deal_id} was not read")
    return {deal_id: decision for deal_id, decision in decisions.items() if deal_id not in failed}


def _read(crm: CrmClient, deal_ids: list[str], lead_id: str, failed: dict[str, Exception]) -> dict[str, Deal]:
    """The deals, in one call; a deal the CRM no longer has is left out (the lead's error is kept for its job)."""
    if not deal_ids:
        return {}
    if deal_ids == [lead_id]:
        try:
            return {lead_id: crm.get_deal(lead_id)}
        except (DealLockLost, PortalNeedsReinstall):
            raise
        except Exception as error:  # noqa: BLE001 - raised for the lead at the end
            failed[lead_id] = error
            return {}
    deals = crm.get_deals(deal_ids)
    if lead_id in deal_ids and lead_id not in deals:
        try:
            deals[lead_id] = crm.get_deal(lead_id)  # its own error (gone, no access) for its job
        except (DealLockLost, PortalNeedsReinstall):
            raise
        except Exception as error:  # noqa: BLE001 - raised for the lead at the end
            failed[lead_id] = error
    return deals


def _decide(
    portal: Portal, crm: CrmClient, rules: guard.Guard, deal: Deal, events: list[DealEvent], *, routed: bool
) -> guard.Decision:
    """One deal of a group, exactly as alone: the exchange's rules, then the guard's on the deal as the
    exchange's writes will leave it, then its ABC class (written only when the class field holds another);
    each committed."""
    is_new = any(event.is_new for event in events)
    automation = events[-1].automation
    if routed:
        exchange.apply_rules(portal, crm, deal, is_new=is_new, automation=automation)
        deal = as_planned(portal.id, deal)
        db.session.commit()
    decision = rules.decide_deal(deal, automation)
    db.session.commit()
    abc.apply(portal, deal)
    db.session.commit()
    return decision


def deal_forgotten(portal_id: int, deal_id: str) -> None:
    """A deal we can no longer read (gone without a delete event): forget what we remembered of it; a deal
    returned to sales is no longer in progress."""
    recovery.deal_deleted(portal_id, deal_id)
    guard.forget_deal(portal_id, deal_id)  # commits both


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
    recovery.deal_deleted(portal.id, deal_id, deletion.deleted_at)
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
