"""Every RQ entry point: the only module RQ knows by name (jobs are queued as "app.jobs.<name>").

Thin functions that take ids and hand over to the layer that re-reads state and decides.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app

from app.core import inbox, schedule
from app.core.health import HEARTBEAT_KEY
from app.core.queue import get_redis
from app.core.schedule import PeriodicJob
from app.domain import abc, exchange, ledger, postpone, reconcile, reports, review, taskcontrol

log = logging.getLogger(__name__)


def record_heartbeat(name: str = "worker") -> str:
    """Record that a worker ran a job now; /healthz reports the worker's last heartbeat."""
    stamp = datetime.now(UTC).isoformat()
    get_redis().set(HEARTBEAT_KEY.format(name=name), stamp, ex=7 * 24 * 3600)
    return stamp


def process_inbox(inbox_id: int) -> str:
    """Process one stored inbound call."""
    return inbox.process(inbox_id)


def purge_inbox() -> int:
    """Delete processed inbox rows older than INBOX_RETENTION_DAYS (0: keep every row)."""
    days = current_app.config["INBOX_RETENTION_DAYS"]
    if days <= 0:
        return 0
    count = inbox.purge(timedelta(days=days))
    if count:
        log.info("inbox rows purged", extra={"count": count, "retention_days": days})
    return count


def sweep_inbox() -> int:
    """Queue inbox rows that were stored but never processed."""
    count = inbox.sweep()
    if count:
        log.info("inbox sweep re-queued rows", extra={"count": count})
    return count


def run_periodic(name: str, slot: int) -> Any:
    """One slot of a periodic job (app.core.schedule keeps the next slot scheduled)."""
    return schedule.run_periodic(name, slot)


def reconcile_portal(portal_id: int) -> dict[str, int]:
    """Find what the portal's webhooks missed and decide it."""
    return reconcile.reconcile_portal(portal_id)


def scan_portal(portal_id: int) -> Any:
    """Task control: one scan of a portal's open deals and tasks."""
    return taskcontrol.scan_portal(portal_id)


def fire_callback(callback_id: int) -> Any:
    """A QA client callback fell due."""
    return review.fire_callback(callback_id)


def retry_effects(portal_id: int, deal_id: str) -> int:
    """A deal's pending CRM writes, again after the CRM failed."""
    return review.retry_effects(portal_id, deal_id)


def deliver_penalty_notices(portal_id: int, deal_id: str) -> int:
    """Tell the people concerned about a fine or its cancellation."""
    return ledger.deliver_notices(portal_id, deal_id)


def return_postponed(postponement_id: int) -> str:
    """A postponed deal's return day has come: the task for its manager, the move back when one is set."""
    return postpone.return_postponed(postponement_id)


def install_bitrix24(portal_id: int) -> Any:
    """Install or repair the app in a Bitrix24 portal."""
    from installers import bitrix24

    return bitrix24.run_install(portal_id)


def install_amocrm(portal_id: int) -> Any:
    """Install or repair the app in an amoCRM account."""
    from installers import amocrm

    return amocrm.run_install(portal_id)


def install_fields(portal_id: int) -> str:
    """Our deal fields on an installed portal, again (the installers' fields step, under the install lock): a
    portal installed before a field was added (ABC qualification) gets it from the reconciliation."""
    from app.core.db import db
    from app.core.models import Portal
    from installers import amocrm, bitrix24

    portal = db.session.get(Portal, portal_id)
    if portal is None or portal.status != "installed":
        return "not installed"
    with get_redis().lock(f"rc:lock:install:{portal.crm}:{portal_id}", timeout=600, blocking_timeout=600):
        db.session.refresh(portal)
        if portal.crm == Portal.BITRIX24:
            detail = bitrix24.ensure_fields(bitrix24.Bitrix24Rest(portal_id), portal)
        else:
            detail = amocrm.ensure_fields(amocrm.AmoRest(portal_id), portal)
        db.session.commit()
    log.info("deal fields repaired", extra={"portal_id": portal_id, "detail": detail})
    return detail


# The periodic jobs (app.core.schedule keeps their next slot scheduled; create_app installs this table).
PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob("heartbeat", record_heartbeat, timedelta(minutes=1)),
    PeriodicJob("inbox-sweep", sweep_inbox, timedelta(minutes=1)),
    PeriodicJob("inbox-purge", purge_inbox, timedelta(hours=1)),
    PeriodicJob("reconcile", reconcile.reconcile_all, timedelta(minutes=2)),
    PeriodicJob("penalty-notices", ledger.sweep_notices, timedelta(minutes=1)),
    PeriodicJob("scheduled-reports", reports.send_scheduled_reports, timedelta(minutes=15)),
    PeriodicJob("exchange-idle", exchange.return_idle_all, timedelta(hours=1)),
    PeriodicJob("taskcontrol", taskcontrol.scan_due_portals, timedelta(minutes=5)),
    PeriodicJob("postpone-returns", postpone.return_due_all, timedelta(minutes=15)),
    PeriodicJob("abc-idle", abc.notify_idle_all, timedelta(minutes=15)),
)
