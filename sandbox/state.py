"""The data of one emulated Bitrix24 portal: users, funnels, deals, tasks, calls, app bindings."""

from __future__ import annotations

import bisect
import secrets
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sandbox.clock import iso

DEAL_ENTITY_TYPE_ID = 2
DEFAULT_SCOPE = "crm,user,user_brief,department,placement,bizproc,im,task,tasks,telephony,call,app"

# Wire field -> (attribute, kind). Kinds: int, float(money), date, str, yn.
DEAL_FIELDS: dict[str, tuple[str, str]] = {
    "ID": ("id", "int"),
    "TITLE": ("title", "str"),
    "TYPE_ID": ("type_id", "str"),
    "STAGE_ID": ("stage_id", "str"),
    "PROBABILITY": ("probability", "int"),
    "CURRENCY_ID": ("currency_id", "str"),
    "OPPORTUNITY": ("opportunity", "float"),
    "IS_MANUAL_OPPORTUNITY": ("is_manual_opportunity", "yn"),
    "TAX_VALUE": ("tax_value", "float"),
    "LEAD_ID": ("lead_id", "int"),
    "COMPANY_ID": ("company_id", "int"),
    "CONTACT_ID": ("contact_id", "int"),
    "QUOTE_ID": ("quote_id", "int"),
    "BEGINDATE": ("begindate", "date"),
    "CLOSEDATE": ("closedate", "date"),
    "ASSIGNED_BY_ID": ("assigned_by_id", "int"),
    "CREATED_BY_ID": ("created_by_id", "int"),
    "MODIFY_BY_ID": ("modify_by_id", "int"),
    "DATE_CREATE": ("date_create", "date"),
    "DATE_MODIFY": ("date_modify", "date"),
    "OPENED": ("opened", "yn"),
    "CLOSED": (":closed", "yn"),
    "COMMENTS": ("comments", "str"),
    "ADDITIONAL_INFO": ("additional_info", "str"),
    "LOCATION_ID": ("location_id", "str"),
    "CATEGORY_ID": ("category_id", "int"),
    "STAGE_SEMANTIC_ID": (":semantic", "str"),
    "IS_NEW": (":is_new", "yn"),
    "IS_RECURRING": (":no", "yn"),
    "IS_RETURN_CUSTOMER": (":no", "yn"),
    "IS_REPEATED_APPROACH": (":no", "yn"),
    "SOURCE_ID": ("source_id", "str"),
    "SOURCE_DESCRIPTION": ("source_description", "str"),
    "ORIGINATOR_ID": ("originator_id", "str"),
    "ORIGIN_ID": ("origin_id", "str"),
    "MOVED_BY_ID": ("moved_by_id", "int"),
    "MOVED_TIME": ("moved_time", "date"),
    "LAST_ACTIVITY_TIME": ("last_activity_time", "date"),
    "LAST_ACTIVITY_BY": ("last_activity_by", "int"),
    "UTM_SOURCE": ("utm_source", "str"),
    "UTM_MEDIUM": ("utm_medium", "str"),
    "UTM_CAMPAIGN": ("utm_campaign", "str"),
    "UTM_CONTENT": ("utm_content", "str"),
    "UTM_TERM": ("utm_term", "str"),
}
DEAL_KINDS: dict[str, str] = {name: kind for name, (_attr, kind) in DEAL_FIELDS.items()}
# Fields a write may set (crm.deal.add / update); the rest are computed or read-only.
DEAL_WRITABLE: frozenset[str] = frozenset(
    {
        "TITLE", "TYPE_ID", "STAGE_ID", "PROBABILITY", "CURRENCY_ID", "OPPORTUNITY", "IS_MANUAL_OPPORTUNITY",
        "TAX_VALUE", "LEAD_ID", "COMPANY_ID", "CONTACT_ID", "QUOTE_ID", "BEGINDATE", "CLOSEDATE",
        "ASSIGNED_BY_ID", "OPENED", "COMMENTS", "ADDITIONAL_INFO", "LOCATION_ID", "SOURCE_ID",
        "SOURCE_DESCRIPTION", "ORIGINATOR_ID", "ORIGIN_ID", "UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN",
        "UTM_CONTENT", "UTM_TERM",
    }
)  # fmt: skip


def money(value: Any) -> str:
    """A money amount the way Bitrix24 prints it: two decimals."""
    try:
        amount = Decimal(str(value or "0").replace(",", "."))
    except InvalidOperation:
        amount = Decimal("0")
    return str(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


RECORDING_PATH = "/bitrix/tools/crm_show_file.php"


def recording_link(domain: str, file_id: int, activity_id: int | str = 0) -> str:
    """A call recording's link as crm.activity.list prints it in FILES[].url (ownerTypeId 6: an activity)."""
    return f"https://{domain}{RECORDING_PATH}?fileId={file_id}&ownerTypeId=6&ownerId={activity_id}"


def new_token() -> str:
    """A random token that looks like a Bitrix24 one (hex)."""
    return secrets.token_hex(32)


class DealRow:
    """One deal. Slotted so that 100 000 of them stay small."""

    __slots__ = (
        "additional_info", "assigned_by_id", "begindate", "category_id", "closedate", "comments", "company_id",
        "contact_id", "created_by_id", "currency_id", "date_create", "date_modify", "id", "is_manual_opportunity",
        "last_activity_by", "last_activity_time", "lead_id", "location_id", "modify_by_id", "moved_by_id",
        "moved_time", "opened", "opportunity", "origin_id", "originator_id", "probability", "quote_id",
        "source_description", "source_id", "stage_id", "tax_value", "title", "type_id", "uf", "utm_campaign",
        "utm_content", "utm_medium", "utm_source", "utm_term",
    )  # fmt: skip

    def __init__(self, deal_id: int, now: float, user_id: int) -> None:
        self.id = deal_id
        self.title = ""
        self.type_id: str | None = "SALE"
        self.stage_id = "NEW"
        self.category_id = 0
        self.probability: int | None = None
        self.currency_id = "RUB"
        self.opportunity = "0.00"
        self.is_manual_opportunity = "N"
        self.tax_value = "0.00"
        self.lead_id: int | None = None
        self.company_id = 0
        self.contact_id: int | None = None
        self.quote_id: int | None = None
        self.begindate: float | None = now
        self.closedate: float | None = None
        self.assigned_by_id = user_id
        self.created_by_id = user_id
        self.modify_by_id = user_id
        self.moved_by_id = user_id
        self.date_create = now
        self.date_modify = now
        self.moved_time = now
        self.opened = "Y"
        self.comments: str | None = None
        self.additional_info: str | None = None
        self.location_id: str | None = None
        self.source_id: str | None = None
        self.source_description: str | None = None
        self.originator_id: str | None = None
        self.origin_id: str | None = None
        self.last_activity_time = now
        self.last_activity_by = user_id
        self.utm_source: str | None = None
        self.utm_medium: str | None = None
        self.utm_campaign: str | None = None
        self.utm_content: str | None = None
        self.utm_term: str | None = None
        self.uf: dict[str, Any] | None = None


@dataclass
class UserField:
    """A deal user field (crm.deal.userfield.*)."""

    id: int
    field_name: str
    user_type_id: str
    xml_id: str = ""
    sort: int = 100
    multiple: str = "N"
    mandatory: str = "N"
    show_filter: str = "N"
    show_in_list: str = "Y"
    edit_in_list: str = "Y"
    is_searchable: str = "N"
    settings: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)  # EDIT_FORM_LABEL etc. as {lang: text}
    items: list[dict[str, Any]] = field(default_factory=list)  # enumeration LIST items


@dataclass
class EventBinding:
    """One event.bind registration."""

    id: int
    event: str
    handler: str
    auth_type: int
    offline: bool
    auth_connector: str = ""
    min_timeout: int = 0


@dataclass
class OfflineEvent:
    """A record in the offline event queue."""

    id: int
    timestamp: float
    event_name: str
    data: dict[str, Any]
    additional: dict[str, Any]
    message_id: str
    object_key: str
    process_id: str | None = None
    error: bool = False


@dataclass
class Placement:
    """One placement.bind registration."""

    id: int
    placement: str
    handler: str
    title: str
    description: str
    group_name: str
    options: dict[str, Any]
    lang_all: dict[str, Any]
    user_id: int = 0


@dataclass
class Robot:
    """One bizproc.robot.add registration."""

    code: str
    handler: str
    name: Any
    auth_user_id: int
    use_subscription: str
    description: Any = ""
    properties: dict[str, Any] = field(default_factory=dict)
    return_properties: dict[str, Any] = field(default_factory=dict)
    document_type: list[Any] = field(default_factory=list)
    filter: dict[str, Any] = field(default_factory=dict)
    use_placement: str = "N"
    placement_handler: str = ""


@dataclass
class RobotRun:
    """A robot invocation waiting for (or having got) bizproc.event.send."""

    event_token: str
    code: str
    deal_id: int
    properties: dict[str, Any]
    return_values: dict[str, Any] | None = None
    log_messages: list[str] = field(default_factory=list)


@dataclass
class Notification:
    """An im.notify.* call, as the user would see it."""

    id: int
    kind: str  # "system" or "personal"
    user_id: int
    message: str
    tag: str
    sub_tag: str
    from_user_id: int | None
    created: float


class LeakyBucket:
    """Bitrix24's request limiter: each call adds 1, the level drains `rate` per second, over `burst` blocks."""

    def __init__(self, rate: float = 2.0, burst: int = 50, enabled: bool = True) -> None:
        self.rate = rate
        self.burst = burst
        self.enabled = enabled
        self.level = 0.0
        self.updated: float | None = None

    def take(self, now: float) -> bool:
        """Count one request; False when the bucket is full (the request is refused, not counted)."""
        if self.updated is not None:
            self.level = max(0.0, self.level - (now - self.updated) * self.rate)
        self.updated = now
        if not self.enabled:
            return True
        if self.level + 1 > self.burst:
            return False
        self.level += 1
        return True


@dataclass
class ForcedError:
    """An error a method answers with the next `times` calls (-1: until cleared)."""

    status: int
    code: str
    description: str
    times: int


@dataclass
class Portal:
    """One Bitrix24 portal with the app installed in it."""

    domain: str
    member_id: str
    application_token: str
    client_id: str
    client_secret: str
    name: str = "Sandbox"
    status: str = "L"
    scope: str = DEFAULT_SCOPE
    app_code: str = "local.refusal_control"
    app_version: int = 1
    installed: bool = True
    revoked: bool = False
    offline_extended: bool = True
    license: str = "ru_project"
    auth_connector_enabled: bool = True
    reject_local_handlers: bool = False
    app_url: str | None = None  # where robot HANDLERs must live (None = anywhere)
    language: str = "ru"
    time_zone: str = "Europe/Moscow"  # the portal's zone (its settings): dates are written with its offset
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    departments: dict[int, dict[str, Any]] = field(default_factory=dict)
    categories: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: dict[int, dict[str, Any]] = field(default_factory=dict)
    deals: dict[int, DealRow] = field(default_factory=dict)
    deal_ids: list[int] = field(default_factory=list)  # sorted, for fast `>ID` scans
    userfields: dict[int, UserField] = field(default_factory=dict)
    stage_history: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    activities: dict[int, dict[str, Any]] = field(default_factory=dict)
    call_stats: dict[int, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    companies: dict[int, dict[str, Any]] = field(default_factory=dict)
    deal_contacts: dict[int, list[int]] = field(default_factory=dict)  # more contacts bound to a deal
    bindings: dict[int, EventBinding] = field(default_factory=dict)
    offline_events: dict[int, OfflineEvent] = field(default_factory=dict)
    placements: dict[int, Placement] = field(default_factory=dict)
    robots: dict[str, Robot] = field(default_factory=dict)
    robot_runs: dict[str, RobotRun] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)
    bucket: LeakyBucket = field(default_factory=LeakyBucket)
    operation_limited: dict[str, int] = field(default_factory=dict)  # method -> remaining forced 429s (-1 = always)
    operation_reset_in: dict[str, float] = field(default_factory=dict)  # method -> seconds to operating_reset_at
    forced_errors: dict[str, list[ForcedError]] = field(default_factory=dict)  # method -> errors still to answer
    rest_calls: dict[str, int] = field(default_factory=dict)
    oauth_calls: dict[str, int] = field(default_factory=dict)
    last_offline_ping: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)

    # ---- ids and lookups -------------------------------------------------------------------------

    def next_id(self, kind: str, start: int = 1) -> int:
        """The next id of a kind of object (deals, tasks, statuses...)."""
        value = self.counters.get(kind, start - 1) + 1
        self.counters[kind] = value
        return value

    @property
    def client_endpoint(self) -> str:
        """The portal's REST base."""
        return f"https://{self.domain}/rest/"

    def stage_entity(self, category_id: int) -> str:
        """crm.status ENTITY_ID of a funnel's stages."""
        return "DEAL_STAGE" if category_id == 0 else f"DEAL_STAGE_{category_id}"

    def stages(self, category_id: int) -> list[dict[str, Any]]:
        """A funnel's stages in order."""
        entity = self.stage_entity(category_id)
        rows = [row for row in self.statuses.values() if row["ENTITY_ID"] == entity]
        rows.sort(key=lambda row: (row["SORT"], row["ID"]))
        return rows

    def stage(self, stage_id: str) -> dict[str, Any] | None:
        """The crm.status row of a deal stage id (any funnel)."""
        for row in self.statuses.values():
            if row["STATUS_ID"] == stage_id and row["ENTITY_ID"].startswith("DEAL_STAGE"):
                return row
        return None

    def stage_category(self, stage_id: str) -> int | None:
        """Which funnel a stage id belongs to."""
        row = self.stage(stage_id)
        return None if row is None else int(row["CATEGORY_ID"] or 0)

    def semantic(self, stage_id: str) -> str:
        """P (in progress), S (won) or F (lost)."""
        row = self.stage(stage_id)
        return (row or {}).get("SEMANTICS") or "P"

    def add_deal_row(self, row: DealRow) -> None:
        """Store a new deal (ids only grow)."""
        self.deals[row.id] = row
        if self.deal_ids and row.id < self.deal_ids[-1]:
            bisect.insort(self.deal_ids, row.id)
        else:
            self.deal_ids.append(row.id)

    def remove_deal_row(self, deal_id: int) -> None:
        """Forget a deal."""
        self.deals.pop(deal_id, None)
        index = bisect.bisect_left(self.deal_ids, deal_id)
        if index < len(self.deal_ids) and self.deal_ids[index] == deal_id:
            del self.deal_ids[index]

    def user_is_admin(self, user_id: int | None) -> bool:
        """Whether a user is a portal admin."""
        return user_id is not None and bool(self.users.get(user_id, {}).get("IS_ADMIN"))

    def userfield_by_name(self, name: str) -> UserField | None:
        """A deal user field by FIELD_NAME."""
        for userfield in self.userfields.values():
            if userfield.field_name == name:
                return userfield
        return None

    # ---- deal values -----------------------------------------------------------------------------

    def deal_value(self, row: DealRow, name: str) -> Any:
        """A deal field as a typed value (for filters and sorting)."""
        spec = DEAL_FIELDS.get(name)
        if spec is None:
            if name.startswith("UF_"):
                return (row.uf or {}).get(name)
            return None
        attr = spec[0]
        if attr == ":semantic":
            return self.semantic(row.stage_id)
        if attr == ":closed":
            return "N" if self.semantic(row.stage_id) == "P" else "Y"
        if attr == ":is_new":
            stages = self.stages(row.category_id)
            return "Y" if stages and stages[0]["STATUS_ID"] == row.stage_id else "N"
        if attr == ":no":
            return "N"
        return getattr(row, attr)

    def deal_wire_value(self, row: DealRow, name: str) -> Any:
        """A deal field as the REST API prints it (strings, ISO dates)."""
        value = self.deal_value(row, name)
        if name.startswith("UF_"):
            userfield = self.userfield_by_name(name)
            if value is None:
                return [] if userfield is not None and userfield.multiple == "Y" else None
            return value
        kind = DEAL_KINDS.get(name, "str")
        if value is None:
            return None
        if kind == "date":
            return iso(value)
        if kind == "int":
            return str(value)
        return value

    def deal_wire(self, row: DealRow, select: list[str] | None = None, with_uf: bool = True) -> dict[str, Any]:
        """A deal as crm.deal.get / crm.deal.list return it."""
        names: list[str]
        if not select:
            names = list(DEAL_FIELDS) + (self.uf_names() if with_uf else [])
        else:
            names = ["ID"]
            for item in select:
                if item == "*":
                    names.extend(DEAL_FIELDS)
                elif item == "UF_*":
                    names.extend(self.uf_names())
                elif item in DEAL_FIELDS or self.userfield_by_name(item) is not None:
                    names.append(item)
            names = list(dict.fromkeys(names))
        return {name: self.deal_wire_value(row, name) for name in names}

    def uf_names(self) -> list[str]:
        """Every deal user field name, in sort order."""
        return [uf.field_name for uf in sorted(self.userfields.values(), key=lambda u: (u.sort, u.id))]
