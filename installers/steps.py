"""What both installers share: settings on the portal row, and running the install steps with progress."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.orm.attributes import flag_modified

from app.core.db import db
from app.core.models import Portal
from app.core.queue import get_redis
from app.crm.errors import CrmError, PortalNeedsReinstall
from app.domain import audit, directory

Rest = TypeVar("Rest")


def set_setting(portal: Portal, key: str, value: Any) -> None:
    """Replace one key of the portal's settings (the JSON column is marked changed)."""
    settings = dict(portal.settings or {})
    settings[key] = value
    portal.settings = settings
    flag_modified(portal, "settings")


def progress(portal: Portal, order: Sequence[str], step: str, state: str, detail: str = "") -> None:
    """Record and commit the state of one step; the install page shows the steps in `order`."""
    install = dict((portal.settings or {}).get("install", {}))
    steps = [s for s in install.get("steps", []) if s.get("step") != step]
    steps.append({"step": step, "state": state, "detail": detail})
    steps.sort(key=lambda s: order.index(s["step"]))
    install["steps"] = steps
    set_setting(portal, "install", install)
    db.session.commit()


def run_steps(
    portal: Portal, rest: Rest, order: Sequence[str], functions: Mapping[str, Callable[[Rest, Portal], str]]
) -> None:
    """Run the steps in `order` with their progress recorded. A CRM error marks the step and the portal
    failed, is audited and raised; PortalNeedsReinstall is raised after a rollback."""
    portal_id = portal.id
    step = order[0]
    try:
        for step in order:
            progress(portal, order, step, "running")
            detail = functions[step](rest, portal)
            progress(portal, order, step, "done", detail)
    except PortalNeedsReinstall:
        db.session.rollback()
        raise
    except CrmError as error:
        db.session.rollback()
        failed = db.session.get(Portal, portal_id)
        assert failed is not None
        progress(failed, order, step, "failed", f"{error.code}: {error.description}")
        failed.status = "install_failed"
        failed.status_detail = f"{step}: {error.code} {error.description}".strip()
        audit.record(failed.id, "app", "install", "failed", failed.status_detail)
        db.session.commit()
        raise


def install(
    portal_id: int,
    crm: str,
    rest_for: Callable[[int], Rest],
    order: Sequence[str],
    functions: Mapping[str, Callable[[Rest, Portal], str]],
    prepare: Callable[[Rest, Portal], None] | None = None,
) -> str:
    """Install or repair everything on one portal of `crm`, one run at a time per portal.

    `installed_at` is set by the first install after an uninstall and kept by repairs: the guard leaves
    alone moves made before it, and a repair must not hide a move that was waiting in the queue.
    """
    with get_redis().lock(f"rc:lock:install:{crm}:{portal_id}", timeout=600, blocking_timeout=600):
        portal = db.session.get(Portal, portal_id)
        if portal is None or portal.crm != crm:
            return "no such portal"
        set_setting(portal, "install", {"steps": []})
        portal.status = "installing"
        db.session.commit()
        rest = rest_for(portal_id)
        if prepare is not None:
            prepare(rest, portal)
        run_steps(portal, rest, order, functions)
        portal.status = "installed"
        portal.status_detail = ""
        if portal.installed_at is None:
            portal.installed_at = datetime.now(UTC)
        audit.record(portal.id, "app", "install", "installed", "all steps done")
        db.session.commit()
        directory.forget(portal.id)
        return "installed"
