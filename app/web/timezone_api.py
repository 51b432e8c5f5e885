"""The portal's time zone on the settings tab (portal administrators only): the zone in force, the one the CRM
reports, and the admin's own choice (app.domain.timezones); a wrong name is a 400 naming `time_zone`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from app.core.models import Portal
from app.core.timezones import zone_choices
from app.domain import timezones
from app.web.api import save_settings
from app.web.errors import page_language
from app.web.permissions import ADMIN, require_role

bp = Blueprint("timezone_api", __name__, url_prefix="/api/time-zone")


@bp.app_template_global("rc_time_zone")
def page_state(portal: Portal, language: str) -> dict[str, Any]:
    """The settings tab's first view of the zone (the template's `rc_time_zone`), with the zones to pick from:
    Russia's by city first, then the others."""
    russian, others = zone_choices(language)
    return {**timezones.state(portal, language), "russian": russian, "others": others}


@bp.get("")
def get_time_zone() -> ResponseReturnValue:
    """The zone in force (name and readable label), the CRM's and the override."""
    access = require_role(ADMIN, forbidden="only a portal administrator can see the settings")
    return jsonify(settings=timezones.state(access.portal, access.language))


@bp.put("")
def put_time_zone() -> ResponseReturnValue:
    """`{"time_zone": "Asia/Novosibirsk"}` sets the admin's zone, `""` or null follows the CRM again."""

    def store(portal: Portal, changes: dict[str, Any]) -> dict[str, Any]:
        unknown = set(changes) - {timezones.FIELD}
        if unknown:
            raise ValidationError({key: ["Unknown field."] for key in sorted(unknown)})
        return timezones.set_override(portal, changes.get(timezones.FIELD))

    return save_settings(
        store,
        lambda portal, _state: timezones.state(portal, page_language()),
        forbidden="only a portal administrator can change the settings",
        invalid="invalid settings",
        audit_action="change time zone",
    )
