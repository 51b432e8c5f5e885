"""amoCRM inbound payloads: webhook bodies (PHP brackets, v2 shape) decoded into one change per lead, and
the Digital Pipeline widget's webhook (one robot action on one lead or customer)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from handlers.b24_payloads import MAX_BODY_BYTES, decode_brackets

__all__ = ["MAX_BODY_BYTES", "AmoHook", "DpAction", "LeadChange", "parse_dp", "parse_hook"]

# Sections of `leads[...]` that describe a change the guard must look at; `status` first, it is the richest.
LEAD_SECTIONS = ("status", "update", "add", "responsible", "restore")
# What a lead's entry in a webhook says about its state: two real changes within one second differ in at least
# one of these (amoCRM stamps `last_modified` in whole seconds), while a retry of a delivery repeats them all.
DIGEST_KEYS = (
    "status_id",
    "old_status_id",
    "pipeline_id",
    "old_pipeline_id",
    "responsible_user_id",
    "old_responsible_user_id",
    "modified_user_id",
    "last_modified",
    "updated_at",
    "price",
    "name",
    "custom_fields",
    "tags",
)


def _items(value: Any) -> list[dict[str, Any]]:
    """`leads[status][0][..]` decodes to a list, sparse or big indexes to a dict: both become a list."""
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    if isinstance(value, dict):
        return [item for item in value.values() if isinstance(item, dict)]
    return []


def _digits(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    return text if text.isdigit() else ""


def content_digest(item: dict[str, Any]) -> str:
    """A short hash of what a lead's webhook entry says about the lead (DIGEST_KEYS, values as sent): the same
    for a redelivery of that entry, different for another change of the lead within the same second."""
    state = {key: item.get(key) for key in DIGEST_KEYS if key in item}
    canonical = json.dumps(state, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class LeadChange:
    """What one webhook body says about one lead (only used to key and route; the job re-reads the lead)."""

    lead_id: str
    action: str
    status_id: str = ""
    old_status_id: str = ""
    pipeline_id: str = ""
    last_modified: str = ""
    modified_user_id: str = ""
    responsible_user_id: str = ""
    digest: str = ""

    def dedupe_key(self, account_id: str) -> str:
        """(account, lead, action, status, old status, responsible, author, last_modified, digest): a redelivery
        of the same body (amoCRM retries after 5 and 15 minutes, and after an hour) is one row. `last_modified`
        has whole seconds, so the action, the responsible, the author and the digest of the lead's state as the
        entry reports it (status, pipeline, responsible, price, custom field values, ...) tell apart real changes
        of one lead within a second: a manager answering two qualification questions one after the other, a new
        lead we give to the pool and a manager taking it back at once."""
        return (
            f"amo:{account_id}:{self.lead_id}:{self.action}:{self.status_id}:{self.old_status_id}:"
            f"{self.responsible_user_id}:{self.modified_user_id}:{self.last_modified}:{self.digest}"
        )

    def to_json(self, account_id: str) -> str:
        """The stored inbox body."""
        return json.dumps({"account_id": account_id, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, body: str) -> tuple[str, LeadChange]:
        """(account id, change) from a stored inbox body."""
        data = json.loads(body)
        account_id = str(data.pop("account_id"))
        return account_id, cls(**data)


@dataclass(frozen=True)
class AmoHook:
    """A verified-to-be-well-formed webhook body."""

    account_id: str
    subdomain: str
    leads: tuple[LeadChange, ...]


def _mapping(value: Any) -> dict[str, Any]:
    """A decoded bracket section as a dict ({} when the sender sent a scalar or a list instead)."""
    return value if isinstance(value, dict) else {}


def parse_hook(body: str) -> AmoHook:
    """Decode a webhook body; one LeadChange per lead (a lead in several sections is merged, status first)."""
    data = decode_brackets(body)
    account = _mapping(data.get("account"))
    account_id = _digits(account.get("id"))
    if not account_id:
        raise ValidationError({"account[id]": ["missing or not a number"]})
    leads = _mapping(data.get("leads"))
    merged: dict[str, LeadChange] = {}
    for section in (*LEAD_SECTIONS, "delete"):
        for item in _items(leads.get(section)):
            lead_id = _digits(item.get("id"))
            if not lead_id:
                raise ValidationError({f"leads[{section}][][id]": ["missing or not a number"]})
            if lead_id in merged and section != "delete":
                continue
            merged[lead_id] = LeadChange(
                lead_id=lead_id,
                action=section,
                status_id=_digits(item.get("status_id")),
                old_status_id=_digits(item.get("old_status_id")),
                pipeline_id=_digits(item.get("pipeline_id")),
                last_modified=_digits(item.get("last_modified") or item.get("updated_at")),
                modified_user_id=_digits(item.get("modified_user_id")),
                responsible_user_id=_digits(item.get("responsible_user_id")),
                digest=content_digest(item),
            )
    return AmoHook(account_id=account_id, subdomain=str(account.get("subdomain") or ""), leads=tuple(merged.values()))


# ---------------------------------------------------------------- Digital Pipeline widget webhook

ELEMENT_LEAD = "2"  # event[data][element_type]: 2 lead, 12 customer
DP_SECRET_KEY = "secret"  # noqa: S105 - the name of the dp setting that carries the per-account secret
DP_ROBOT_KEY = "robot"
_DIGITS = validate.Regexp(r"^[0-9]{1,19}$", error="not a number")


class _Strict(Schema):
    class Meta:
        unknown = EXCLUDE


class _DpDataSchema(_Strict):
    id = fields.String(required=True, validate=_DIGITS)
    element_type = fields.String(required=True, validate=_DIGITS)
    status_id = fields.String(load_default="", validate=validate.Regexp(r"^[0-9]{0,19}$", error="not a number"))
    pipeline_id = fields.String(load_default="", validate=validate.Regexp(r"^[0-9]{0,19}$", error="not a number"))


class _DpEventSchema(_Strict):
    type = fields.String(load_default="", validate=validate.Length(max=16))
    type_code = fields.String(load_default="", validate=validate.Length(max=64))
    data = fields.Nested(_DpDataSchema, required=True)
    time = fields.String(required=True, validate=_DIGITS)


class _DpWidgetSchema(_Strict):
    # What the admin filled in the action's form (manifest `dp.settings`); every value is a string.
    settings = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=fields.String(validate=validate.Length(max=2000)),
        required=True,
    )


class _DpActionSettingsSchema(_Strict):
    widget = fields.Nested(_DpWidgetSchema, required=True)


class _DpActionSchema(_Strict):
    settings = fields.Nested(_DpActionSettingsSchema, required=True)


class _DpSchema(_Strict):
    account_id = fields.String(required=True, validate=_DIGITS)
    subdomain = fields.String(load_default="", validate=validate.Length(max=128))
    event = fields.Nested(_DpEventSchema, required=True)
    action = fields.Nested(_DpActionSchema, required=True)


DP_SCHEMA = _DpSchema()


@dataclass(frozen=True)
class DpAction:
    """One Digital Pipeline widget action fired on one element (the secret is kept apart, never stored)."""

    account_id: str
    element_type: str
    element_id: str
    status_id: str
    pipeline_id: str
    time: str
    type_code: str
    robot: str
    settings: dict[str, str]
    secret: str = ""

    @property
    def is_lead(self) -> bool:
        """Only leads run robots; customers (element_type 12) are acknowledged and ignored."""
        return self.element_type == ELEMENT_LEAD

    def dedupe_key(self) -> str:
        """(account, lead, status, event time, robot): a resent delivery is one row."""
        return f"amo-dp:{self.account_id}:{self.element_id}:{self.status_id}:{self.time}:{self.robot}"

    def to_json(self) -> str:
        """The stored inbox body, without the secret."""
        data = asdict(self)
        data.pop("secret")
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, body: str) -> DpAction:
        """The action from a stored inbox body."""
        return cls(**json.loads(body))


def parse_dp(body: str) -> DpAction:
    """Decode and validate a Digital Pipeline webhook body (form-encoded PHP brackets)."""
    loaded = DP_SCHEMA.load(decode_brackets(body))
    event = loaded["event"]
    settings = dict(loaded["action"]["settings"]["widget"]["settings"])
    secret = settings.pop(DP_SECRET_KEY, "")
    robot = settings.pop(DP_ROBOT_KEY, "").strip()
    return DpAction(
        account_id=loaded["account_id"],
        element_type=event["data"]["element_type"],
        element_id=event["data"]["id"],
        status_id=event["data"]["status_id"],
        pipeline_id=event["data"]["pipeline_id"],
        time=event["time"],
        type_code=event["type_code"],
        robot=robot,
        settings=settings,
        secret=secret,
    )
