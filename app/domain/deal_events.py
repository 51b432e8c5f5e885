"""One way for a deal event, whatever the CRM: one lock, one read of the deal, the exchange's rules, then the
guard's, then the planned writes.

Handlers translate their CRM's wire format into these calls and nothing else; the rules work on the deal as
re-read from the CRM and never trust a payload.
"""

from __future__ import annotations

from app.core.db import db
from app.core.models import Portal
from app.crm.port import CrmClient
from app.domain import directory, exchange, guard
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
    """A deal was deleted: forget what we remembered of it."""
    guard.forget_deal(portal_id, deal_id)
