"""`flask settings show|set PORTAL`: a portal's guard settings from the command line (app.domain.settings
validates and stores them), and its stage requirements (`stage_requirements=JSON`, app.domain.requirements)."""

from __future__ import annotations

import copy
import json
from typing import Any

import click
import sqlalchemy as sa
from flask.cli import AppGroup
from marshmallow import ValidationError

from app.core.db import db
from app.core.models import Portal
from app.crm.errors import CrmError
from app.crm.port import client_for
from app.domain import audit, postpone, requirements, timezones
from app.domain.settings import SECTION as guard_section
from app.domain.settings import as_dict, guard_settings, update_guard_settings
from app.web.api import settings_diff

settings_cli = AppGroup("settings", help="Show or change a portal's guard settings.")
CLI_ACTOR = "cli"  # the audit rows' actor for a change made from the command line


def _find_portal(ref: str) -> Portal:
    query = sa.select(Portal).where(Portal.external_id == ref)
    if ref.isdigit():
        query = sa.select(Portal).where(sa.or_(Portal.id == int(ref), Portal.external_id == ref))
    portal = db.session.scalars(query).first()
    if portal is None:
        raise click.ClickException(f"no portal {ref!r} (give its id or member_id / account id)")
    return portal


@settings_cli.command("show")
@click.argument("portal")
def show_command(portal: str) -> None:
    """Print the settings of PORTAL as JSON (the guard's keys and stage_requirements)."""
    row = _find_portal(portal)
    shown = {
        **as_dict(guard_settings(row)),
        requirements.SECTION: requirements.stage_requirements(row),
        timezones.FIELD: timezones.state(row)["time_zone"],
        postpone.RETURN_STAGE: postpone.return_stages(row),
    }
    click.echo(json.dumps(shown, ensure_ascii=False, indent=2))


def _set_requirements(row: Portal, value: Any) -> dict[str, Any]:
    """Store stage_requirements, checked against the CRM's stages and deal fields when the CRM answers (the
    shape is always checked; an unreachable CRM only skips the names, with a warning)."""
    try:
        requirements.validate(value)
        try:
            crm = client_for(row)
            requirements.check_against_crm(requirements.validate(value), row, crm)
        except CrmError as error:
            click.echo(f"warning: the CRM did not answer ({error.code}); stage and field names not checked", err=True)
        return requirements.update_stage_requirements(row, value)
    except ValidationError as error:
        raise click.ClickException(json.dumps(error.messages, ensure_ascii=False)) from error


def _effective(row: Portal) -> dict[str, Any]:
    """The portal's settings with the guard's defaults filled in, so an audit names only what a save changed."""
    return {
        **copy.deepcopy(dict(row.settings or {})),
        guard_section: as_dict(guard_settings(row)),
        requirements.SECTION: requirements.stage_requirements(row),
    }


def _audit(row: Portal, before: dict[str, Any], keys: list[str]) -> None:
    """One audit row per changed setting, as the settings page records a save: the actor is "cli", the
    details name the setting with its old and new value (`changed`, the page's shape)."""
    changed = settings_diff(before, _effective(row))
    if not changed:
        audit.record(row.id, CLI_ACTOR, "change settings", "saved, nothing changed", details_keys=keys, changed={})
    for name, change in changed.items():
        attempted = "change stage requirements" if name.startswith(f"{requirements.SECTION}.") else "change settings"
        audit.record(row.id, CLI_ACTOR, attempted, "saved", setting=name, details_keys=keys, changed={name: change})


def _set_return_stages(row: Portal, value: Any) -> dict[str, str]:
    """Store postpone_return_stage, checked against the CRM's pipelines when the CRM answers."""
    try:
        postpone.validate_return_stages(value)
        try:
            return postpone.update_return_stages(row, value, client_for(row))
        except CrmError as error:
            click.echo(f"warning: the CRM did not answer ({error.code}); pipelines and stages not checked", err=True)
        return postpone.update_return_stages(row, value)
    except ValidationError as error:
        raise click.ClickException(json.dumps(error.messages, ensure_ascii=False)) from error


@settings_cli.command("set")
@click.argument("portal")
@click.argument("assignments", nargs=-1, required=True)
def set_command(portal: str, assignments: tuple[str, ...]) -> None:
    """Set keys of PORTAL: key=JSON ... (e.g. qa_users='["5","7"]' review_sla_hours=48, time_zone=Asia/Novosibirsk
    (empty: as the CRM reports it),
    stage_requirements='{"PREPAYMENT_INVOICE": {"required": ["OPPORTUNITY", "UF_CRM_INVOICE_NO"]}}', or
    postpone_return_stage='{"0": "PREPARATION"}': where a postponed deal of each pipeline comes back on its day)."""
    row = _find_portal(portal)
    before = _effective(row)
    changes: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise click.ClickException(f"{assignment!r}: expected key=JSON")
        try:
            changes[key] = json.loads(raw)
        except json.JSONDecodeError as error:
            if key != timezones.FIELD:
                raise click.ClickException(f"{key}: not valid JSON ({error.msg})") from error
            changes[key] = raw  # time_zone=Asia/Novosibirsk, no quotes needed
    keys = sorted(changes)
    stored: dict[str, Any] = {}
    if timezones.FIELD in changes:
        try:
            stored[timezones.FIELD] = timezones.set_override(row, changes.pop(timezones.FIELD))["time_zone"]
        except ValidationError as error:
            raise click.ClickException(json.dumps(error.messages, ensure_ascii=False)) from error
    if requirements.SECTION in changes:
        stored[requirements.SECTION] = _set_requirements(row, changes.pop(requirements.SECTION))
    if postpone.RETURN_STAGE in changes:
        stored[postpone.RETURN_STAGE] = _set_return_stages(row, changes.pop(postpone.RETURN_STAGE))
    if changes or not stored:
        try:
            stored = {**as_dict(update_guard_settings(row, changes)), **stored}
        except ValidationError as error:
            raise click.ClickException(json.dumps(error.messages, ensure_ascii=False)) from error
    _audit(row, before, keys)
    db.session.commit()
    click.echo(json.dumps(stored, ensure_ascii=False, indent=2))
