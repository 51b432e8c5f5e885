"""Reconciliation: find what webhooks missed (Bitrix24 never redelivers) and feed the same guard: a deal whose
stage moved, or whose ABC answers no longer match its class, is decided as its lost event would have been."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm.attributes import flag_modified

from app.core.db import db
from app.core.models import DealSnapshot, Effect, Portal, utcnow
from app.core.queue import enqueue
from app.crm.errors import CrmError, PortalNeedsReinstall
from app.crm.port import CrmClient, Deal, client_for
from app.domain import abc, deal_events, effects, reasons, stages, timezones

log = logging.getLogger(__name__)
OVERLAP = timedelta(minutes=5)


def reconcile_all() -> int:
    """Queue one reconciliation per installed portal (periodic)."""
    portal_ids = db.session.scalars(sa.select(Portal.id).where(Portal.status == "installed")).all()
    for portal_id in portal_ids:
        enqueue(
            "default",
            "app.jobs.reconcile_portal",
            portal_id,
            job_id=f"reconcile-{portal_id}",
            unique=True,
            result_ttl=0,
            failure_ttl=600,
        )
    return len(portal_ids)


def reconcile_portal(portal_id: int) -> dict[str, int]:
    """Finish pending effects, give pipelines created since install their Conditional refusal stage, read the
    CRM's time zone (once a day), then sweep deals modified since the watermark and decide the changed ones."""
    portal = db.session.get(Portal, portal_id)
    if portal is None or portal.status != "installed":
        return {}
    crm = client_for(portal)
    counts = {"effects": 0, "seen": 0, "decided": 0}
    try:
        counts["effects"] = _finish_effects(portal, crm)
        counts["pipelines"] = _adopt_new_pipelines(portal, crm)
        counts["reasons"] = int(reasons.sync_quietly(portal, crm))
        if timezones.refresh(portal, crm):
            counts["time_zone"] = 1
            db.session.commit()
        counts["fields"] = int(_repair_fields(portal))

        def decide_changed(deal_ids: list[str]) -> None:
            deals = list(crm.get_deals(deal_ids).values())
            snapshots = _snapshot_index(portal.id, deal_ids)
            unclassified = abc.stale(portal, deals)
            for deal in deals:
                counts["seen"] += 1
                if snapshots.get(deal.id) != (deal.pipeline_id, deal.stage_id) or deal.id in unclassified:
                    _decide(portal, crm, deal.id)
                    counts["decided"] += 1

        drained = crm.drain_deal_changes(decide_changed)
        if drained is not None:
            counts["offline_events"] = drained
            log.info("reconciliation done", extra={"portal_id": portal_id, **counts})
            return counts
        watermark = _watermark(portal)
        newest = watermark
        for chunk in _chunks(crm.iter_deals(modified_since=watermark - OVERLAP), 200):
            snapshots = _snapshot_index(portal.id, [deal.id for deal in chunk])
            unclassified = abc.stale(portal, chunk)
            for deal in chunk:
                counts["seen"] += 1
                if deal.modified_at and deal.modified_at > newest:
                    newest = deal.modified_at
                if snapshots.get(deal.id) == (deal.pipeline_id, deal.stage_id) and deal.id not in unclassified:
                    continue
                _decide(portal, crm, deal.id)
                counts["decided"] += 1
        _set_watermark(portal, newest)
    except PortalNeedsReinstall:
        log.warning("reconciliation stopped: portal needs reinstall", extra={"portal_id": portal_id})
        return counts
    except CrmError as error:
        log.warning("reconciliation interrupted", extra={"portal_id": portal_id, "code": error.code})
        raise
    log.info("reconciliation done", extra={"portal_id": portal_id, **counts})
    return counts


def _decide(portal: Portal, crm: CrmClient, deal_id: str) -> None:
    """A deal whose stage, pipeline or ABC answers changed unheard: decided as its event would have been (the
    guard, then its class; their writes in one request), without the exchange's routing of new deals."""
    deal_events.deals_changed(portal, crm, deal_events.DealEvent(deal_id, routing=False))


def _adopt_new_pipelines(portal: Portal, crm: CrmClient) -> int:
    """Pipelines nobody has used yet get their stage too; a CRM that refuses does not stop the sweep."""
    try:
        return stages.adopt_new_pipelines(portal, crm)
    except PortalNeedsReinstall:
        raise
    except CrmError as error:
        log.warning("new pipelines not adopted", extra={"portal_id": portal.id, "code": error.code})
        return 0


def _repair_fields(portal: Portal) -> bool:
    """A portal installed before the ABC fields existed gets them (the installers' fields step, as a job)."""
    if abc.installed(portal):
        return False
    enqueue(
        "default",
        "app.jobs.install_fields",
        portal.id,
        job_id=f"install-fields-{portal.id}",
        unique=True,
        result_ttl=0,
        failure_ttl=600,
    )
    return True


def _finish_effects(portal: Portal, crm: CrmClient) -> int:
    deal_ids = db.session.scalars(
        sa.select(Effect.deal_id).where(Effect.portal_id == portal.id, Effect.status == Effect.PENDING).distinct()
    ).all()
    for deal_id in deal_ids:
        with effects.deal_lock(portal.id, deal_id):
            effects.run_pending_effects(portal.id, deal_id, crm)
    return len(deal_ids)


def _chunks(deals: Iterator[Deal], size: int) -> Iterator[list[Deal]]:
    chunk: list[Deal] = []
    for deal in deals:
        chunk.append(deal)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _snapshot_index(portal_id: int, deal_ids: list[str]) -> dict[str, tuple[str, str]]:
    rows = db.session.execute(
        sa.select(DealSnapshot.deal_id, DealSnapshot.pipeline_id, DealSnapshot.stage_id).where(
            DealSnapshot.portal_id == portal_id, DealSnapshot.deal_id.in_(deal_ids)
        )
    )
    return {deal_id: (pipeline_id, stage_id) for deal_id, pipeline_id, stage_id in rows}


def _watermark(portal: Portal) -> datetime:
    stored = (portal.settings or {}).get("sweep_watermark")
    if stored:
        return datetime.fromisoformat(stored)
    return portal.installed_at or utcnow()


def _set_watermark(portal: Portal, moment: datetime) -> None:
    settings = dict(portal.settings or {})
    settings["sweep_watermark"] = moment.isoformat()
    portal.settings = settings
    flag_modified(portal, "settings")
    db.session.commit()
