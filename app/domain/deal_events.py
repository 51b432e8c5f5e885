"""One way for a deal event, whatever the CRM: one lock, one read of the deal, the exchange's rules, then the
guard's, then the planned writes.

Handlers translate their CRM's wire format into these calls and nothing else; the rules work on the deal as
re-read from the CRM and never trust a payload.
"""

from __future__ import annotations

from app.core.db import db
from app.core.models import Portal, RefusalCase, utcnow
from app.crm.port import AUTOMATION, CrmClient, client_for
from app.domain import directory, exchange, guard, review
from app.domain.effects import as_planned, deal_lock, run_pending_effects


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


def deal_deleted(portal_id: int, deal_id: str) -> None:
    """A deal was deleted: forget what we remembered of it; its open case ends (withdrawn, as the deal is gone)
    and the case's QA task and callback to-dos are completed in the CRM."""
    guard.forget_deal(portal_id, deal_id)
    portal = db.session.get(Portal, portal_id)
    if portal is None or guard.open_case_for(portal_id, deal_id) is None:
        return
    crm = client_for(portal)
    with deal_lock(portal_id, deal_id):
        db.session.expire_all()
        case = guard.open_case_for(portal_id, deal_id)
        if case is None:
            return
        case.state = RefusalCase.WITHDRAWN
        case.closed_at = utcnow()
        guard.add_case_event(case, AUTOMATION, "deal_deleted", "the deal was deleted in the CRM")
        guard.end_case_work(portal, case)
        db.session.commit()
        review.carry_out_or_retry_later(portal_id, deal_id, crm)
