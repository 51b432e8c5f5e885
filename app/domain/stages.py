"""The Conditional refusal stage of every pipeline: the installer creates it in the pipelines that exist at
install; a pipeline created later gets it when the app first notices that pipeline (the first deal event from
it, or the periodic reconciliation), before the guard decides anything there.

Both go through the port's `ensure_stage` (one copy of the CRM calls, in the adapters) under one lock per
portal, and record the stage in ``portal.settings["refusal_stages"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.orm.attributes import flag_modified

from app.core.db import db
from app.core.models import Portal
from app.core.queue import get_redis
from app.crm.port import CrmClient, StageSpec
from app.domain import audit, directory
from app.domain.catalog import REFUSAL_STAGE, REFUSAL_STAGE_CODE, REFUSAL_STAGE_COLOR

log = logging.getLogger(__name__)
SETTING = "refusal_stages"
LOCK_SECONDS = 120
# The other stages the app keeps in every pipeline (fn(portal, crm, pipeline id), filled by create_app): called
# for a pipeline the app has just noticed, and by the reconciliation for every pipeline (a no-op when known).
PIPELINE_HOOKS: list[Callable[[Portal, CrmClient, str], None]] = []


def refusal_stage_spec(language: str) -> StageSpec:
    """Conditional refusal as the CRMs are asked for it (named in the portal's language, found by either name)."""
    return StageSpec(
        code=REFUSAL_STAGE_CODE,
        name=REFUSAL_STAGE.in_language(language),
        names=(REFUSAL_STAGE.ru, REFUSAL_STAGE.en),
        color=REFUSAL_STAGE_COLOR,
    )


def known_stage(portal: Portal, pipeline_id: str) -> str | None:
    """The Conditional refusal stage the app knows in this pipeline."""
    return ((portal.settings or {}).get(SETTING) or {}).get(pipeline_id)


@contextmanager
def stages_lock(portal_id: int) -> Iterator[None]:
    """One creator of Conditional refusal stages per portal at a time (installer, workers, reconciliation):
    with the CRM's own look-up first, two of them noticing one pipeline create one stage."""
    with get_redis().lock(f"rc:lock:stages:{portal_id}", timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS):
        yield


def ensure_refusal_stage(portal: Portal, crm: CrmClient, pipeline_id: str) -> str:
    """The pipeline's Conditional refusal stage, created in the CRM first when the app does not know one.

    Commits: the session must hold nothing the caller still means to roll back. No write transaction is held
    across the CRM call.
    """
    stage_id = known_stage(portal, pipeline_id)
    if stage_id:
        return stage_id
    with stages_lock(portal.id):
        db.session.commit()  # end any read snapshot: see what another worker stored meanwhile
        db.session.refresh(portal)
        stage_id = known_stage(portal, pipeline_id)
        if stage_id:
            return stage_id
        db.session.commit()
        stage_id = crm.ensure_stage(pipeline_id, refusal_stage_spec(portal.language))
        _store(portal, pipeline_id, stage_id)
        audit.record(portal.id, "app", "new pipeline", "refusal stage added", f"pipeline {pipeline_id}: {stage_id}")
        db.session.commit()
    directory.forget_pipelines(portal.id)
    log.info("refusal stage added", extra={"portal_id": portal.id, "pipeline_id": pipeline_id, "stage": stage_id})
    for hook in PIPELINE_HOOKS:
        hook(portal, crm, pipeline_id)
    return stage_id


def adopt_new_pipelines(portal: Portal, crm: CrmClient) -> int:
    """Give every pipeline the app does not know yet its Conditional refusal stage (the reconciliation's
    look for pipelines created since install); how many were added."""
    added = 0
    for pipeline in crm.list_pipelines():
        if known_stage(portal, pipeline.id) is None:
            ensure_refusal_stage(portal, crm, pipeline.id)
            added += 1
        else:
            for hook in PIPELINE_HOOKS:
                hook(portal, crm, pipeline.id)
    return added


def _store(portal: Portal, pipeline_id: str, stage_id: str) -> None:
    """Add one pipeline's stage to the settings, on the row locked and read afresh (no lost update)."""
    locked = db.session.scalars(
        sa.select(Portal).where(Portal.id == portal.id).with_for_update().execution_options(populate_existing=True)
    ).one()
    settings = dict(locked.settings or {})
    settings[SETTING] = {**(settings.get(SETTING) or {}), pipeline_id: stage_id}
    locked.settings = settings
    flag_modified(locked, "settings")
