"""Portal settings of the guard: validated, with defaults, editable on the page and from the CLI (app.cli.settings)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates
from sqlalchemy.orm.attributes import flag_modified

from app.core.models import Portal

SECTION = "guard"


def _no_nul(value: str) -> None:
    """Ids are stored in a JSON column; PostgreSQL's JSONB refuses the NUL character."""
    if "\x00" in value:
        raise ValidationError("must not contain a NUL character")


def _id() -> fields.String:
    """A user, department or pipeline id."""
    return fields.String(validate=_no_nul)


class GuardSettingsSchema(Schema):
    """The guard's settings; unknown keys are refused so a typo never passes silently."""

    class Meta:
        unknown = RAISE

    guarded_pipelines = fields.Raw(load_default="all")
    qa_users = fields.List(_id(), load_default=list)
    qa_departments = fields.List(_id(), load_default=list)
    heads = fields.List(_id(), load_default=list)
    head_departments = fields.List(_id(), load_default=list)
    exempt_users = fields.List(_id(), load_default=list)
    exempt_automation = fields.Boolean(load_default=False)
    review_sla_hours = fields.Integer(load_default=24, validate=validate.Range(min=1, max=720))
    fine_deletions = fields.Boolean(load_default=False)
    repeat_clients = fields.Boolean(load_default=True)
    abc_a_idle_hours = fields.Integer(load_default=24, validate=validate.Range(min=0, max=720))
    abc_a_idle_heads = fields.Boolean(load_default=False)

    @validates("guarded_pipelines")
    def check_pipelines(self, value: Any, data_key: str) -> None:
        if value == "all":
            return
        if not isinstance(value, list) or not all(
            isinstance(item, str) and item and "\x00" not in item for item in value
        ):
            raise ValidationError('either "all" or a list of pipeline ids')


@dataclass(frozen=True)
class GuardSettings:
    """The guard's settings for one portal."""

    guarded_pipelines: str | tuple[str, ...]
    qa_users: tuple[str, ...]
    qa_departments: tuple[str, ...]
    heads: tuple[str, ...]
    head_departments: tuple[str, ...]
    exempt_users: tuple[str, ...]
    exempt_automation: bool
    review_sla_hours: int
    fine_deletions: bool = False  # a manager who deletes a deal is fined its CPL, like a leak
    repeat_clients: bool = True  # a new deal of a known client goes to the client's manager, not the exchange
    abc_a_idle_hours: int = 24  # a class A deal idle this long notifies its manager (app.domain.abc); 0 = off
    abc_a_idle_heads: bool = False  # ... and the heads of sales

    def guards(self, pipeline_id: str) -> bool:
        """Whether moves in this pipeline are guarded."""
        return self.guarded_pipelines == "all" or pipeline_id in self.guarded_pipelines


def _to_model(loaded: dict[str, Any]) -> GuardSettings:
    pipelines = loaded["guarded_pipelines"]
    return GuardSettings(
        guarded_pipelines="all" if pipelines == "all" else tuple(pipelines),
        qa_users=tuple(loaded["qa_users"]),
        qa_departments=tuple(loaded["qa_departments"]),
        heads=tuple(loaded["heads"]),
        head_departments=tuple(loaded["head_departments"]),
        exempt_users=tuple(loaded["exempt_users"]),
        exempt_automation=loaded["exempt_automation"],
        review_sla_hours=loaded["review_sla_hours"],
        fine_deletions=loaded["fine_deletions"],
        repeat_clients=loaded["repeat_clients"],
        abc_a_idle_hours=loaded["abc_a_idle_hours"],
        abc_a_idle_heads=loaded["abc_a_idle_heads"],
    )


# Stored by earlier versions and read by nothing: the reasons are the company's own list now (app.domain.reasons).
RETIRED_KEYS = ("reasons",)


def _stored(portal: Portal) -> dict[str, Any]:
    stored = dict((portal.settings or {}).get(SECTION, {}))
    for key in RETIRED_KEYS:
        stored.pop(key, None)
    return stored


_LOADED: dict[str, GuardSettings] = {}  # stored JSON -> its validated settings (every decision reads them)


def guard_settings(portal: Portal) -> GuardSettings:
    """The stored settings with defaults filled in (validated once per distinct stored value in a process)."""
    stored = _stored(portal)
    key = json.dumps(stored, sort_keys=True, default=str)
    loaded = _LOADED.get(key)
    if loaded is None:
        loaded = _to_model(GuardSettingsSchema().load(stored))
        if len(_LOADED) >= 512:
            _LOADED.clear()
        _LOADED[key] = loaded
    return loaded


def as_dict(settings: GuardSettings) -> dict[str, Any]:
    """Plain JSON-able form."""
    return {
        "guarded_pipelines": settings.guarded_pipelines
        if settings.guarded_pipelines == "all"
        else list(settings.guarded_pipelines),
        "qa_users": list(settings.qa_users),
        "qa_departments": list(settings.qa_departments),
        "heads": list(settings.heads),
        "head_departments": list(settings.head_departments),
        "exempt_users": list(settings.exempt_users),
        "exempt_automation": settings.exempt_automation,
        "review_sla_hours": settings.review_sla_hours,
        "fine_deletions": settings.fine_deletions,
        "repeat_clients": settings.repeat_clients,
        "abc_a_idle_hours": settings.abc_a_idle_hours,
        "abc_a_idle_heads": settings.abc_a_idle_heads,
    }


def update_guard_settings(portal: Portal, changes: dict[str, Any]) -> GuardSettings:
    """Validate and store changes; raises ValidationError with a message per field."""
    merged = {**as_dict(guard_settings(portal)), **changes}
    settings = _to_model(GuardSettingsSchema().load(merged))
    stored = dict(portal.settings or {})
    stored[SECTION] = as_dict(settings)
    portal.settings = stored
    flag_modified(portal, "settings")
    return settings
