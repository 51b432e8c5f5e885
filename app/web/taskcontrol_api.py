"""JSON endpoints of task control: the overdue report for heads, a manual scan, the settings."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from app.core import i18n
from app.core.timezones import zone_name
from app.domain import taskcontrol
from app.web.api import save_settings
from app.web.permissions import ADMIN, Access, require_role

bp = Blueprint("taskcontrol_api", __name__, url_prefix="/api/taskcontrol")


def _require_head() -> Access:
    """Heads of sales (settings heads / head departments) and portal admins; others get 403."""
    return require_role("head", ADMIN, forbidden="the task report is for heads of sales and the administrator")


@bp.get("/report")
def get_report() -> ResponseReturnValue:
    """The last scan's report: per manager open deals, deals without tasks, overdue tasks, oldest overdue."""
    access = _require_head()
    portal = access.portal
    report = taskcontrol.overdue_report(portal)
    if report is None:
        return jsonify(scanned_at=None, scanned_at_text=i18n.translate("tc_never", access.language), managers=[])
    language, zone = access.language, zone_name(portal)
    managers = []
    for row in report["managers"]:
        oldest = row["oldest_overdue"]
        managers.append(
            {
                **row,
                "oldest_overdue_text": i18n.when(
                    None if oldest is None else datetime.fromisoformat(oldest), language, zone
                ),
            }
        )
    return jsonify(
        scanned_at=report["scanned_at"].isoformat(),
        scanned_at_text=i18n.when(report["scanned_at"], language, zone),
        day=report["day"],
        totals=report["totals"],
        managers=managers,
    )


@bp.post("/scan")
def post_scan() -> ResponseReturnValue:
    """Queue a scan now (heads and admins); 202."""
    access = _require_head()
    portal = access.portal
    if portal.status != "installed":
        return jsonify(error="conflict", message="the app is not installed on this portal"), 409
    queued = taskcontrol.queue_scan(portal.id)
    return jsonify(queued=queued, message=i18n.translate("tc_rescan_queued", access.language)), 202


@bp.get("/settings")
def get_settings() -> ResponseReturnValue:
    """Task-control settings (admins only)."""
    portal = require_role(ADMIN, forbidden="only a portal administrator can see the settings").portal
    return jsonify(settings=taskcontrol.taskcontrol_settings(portal).as_dict())


@bp.put("/settings")
def put_settings() -> ResponseReturnValue:
    """Validate and store task-control settings (admins only); 400 names each wrong field."""
    return save_settings(
        taskcontrol.update_taskcontrol_settings,
        lambda _portal, settings: settings.as_dict(),
        forbidden="only a portal administrator can change the settings",
        invalid="invalid settings",
        audit_action="change task control settings",
    )
